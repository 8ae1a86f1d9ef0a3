"""Several processes (``torchrun``): the process group, who is rank 0, and the few collectives the trainer needs.

``torchrun --nproc_per_node=N -m torchstn train CONFIG`` starts N copies of the program with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in their environment; :func:`setup` sees them and joins the group (gloo on the CPU, NCCL
on CUDA with device ``cuda:LOCAL_RANK``), which the process leaves when it exits, also on an error
(:func:`teardown`). A program that initialised ``torch.distributed`` itself keeps its group: :func:`setup` uses it.

How the trainer shares the work (see ``docs/training.md``, "Several processes"):

* ``optim.batch_size`` is the **global** batch: every rank computes the same batch indices for the step (a pure
  function of ``(seed, step)``) and takes its contiguous share (:func:`shard`), so N ranks see the same images per
  step as one process, and DDP's gradient average equals the single-process gradient (up to float rounding).
* The distortions of rank ``r`` come from its own generator, :func:`rank_generator` ``(seed, r)``: ranks draw
  different distortions, reproducibly. Rank 0's is the single-process generator.
* Checkpoints hold every rank's generator state (:func:`all_gather_states`, gathered in the one atomic ``last.pt``
  rank 0 writes), so a resume under DDP is exact.

Outside ``torchrun`` every helper is the single-process no-op (rank 0 of 1).

Example:
    >>> rank(), world_size(), is_main()
    (0, 1, True)
    >>> shard(torch.arange(8), rank=1, world=2).tolist()
    [4, 5, 6, 7]
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from torchstn.errors import ConfigError
from torchstn.experiments.engine.config import parse_device

__all__ = [
    "launched",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "on_main",
    "setup",
    "teardown",
    "main_first",
    "rank_generator",
    "split_batch",
    "shard",
    "all_gather_states",
    "all_gather_object",
    "broadcast_object",
    "broadcast_float",
    "all_reduce_sum",
    "all_reduce_max",
    "barrier",
]

T = TypeVar("T")
_OWN_GROUP = False  # setup() initialised the process group (and teardown() destroys it)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """Whether a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the group; without an active group the launcher's ``RANK`` (before or after
    training), else 0."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    """The number of processes in the group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes logs, metrics and checkpoints (rank 0)."""
    return rank() == 0


def on_main(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorate ``fn`` to run on rank 0 only (it returns ``None`` elsewhere). No collective may happen inside."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


def setup(device: str, timeout_min: float = 30.0) -> torch.device:
    """Join the launcher's process group (once per process) and return this process's device.

    Without a launcher (or with one process) it only returns ``torch.device(device)``. Under ``torchrun`` with
    ``device`` ``cpu`` it joins with gloo; with ``cuda`` it joins with NCCL on ``cuda:LOCAL_RANK``. The group then
    lives as long as the process: later calls (``reproduce`` trains several runs in one process) reuse it, and
    :func:`teardown` destroys it when the process exits, normally or by an exception. (Joining a second time after
    destroying the group is unreliable in torch: the rendezvous keys of the first group are still in the launcher's
    store.) A group the program initialised itself is used as it is and never destroyed here.

    Args:
        device: ``run.device`` (``cpu``, ``cuda``; ``cuda:N`` is refused under a launcher).
        timeout_min: how long a collective waits for a peer (``run.dist_timeout``) before it fails.

    Raises:
        ConfigError: ``cuda:N`` under a launcher, CUDA requested but not available, or a timeout that is not > 0.
    """
    global _OWN_GROUP
    if not launched() or dist.is_initialized():
        return _device(device, local_rank() if is_distributed() else None)
    if not timeout_min > 0:
        raise ConfigError(f"run.dist_timeout must be > 0 minutes, got {timeout_min!r}")
    if device.startswith("cuda:"):
        raise ConfigError(
            f"run.device={device!r} under torchrun: each process uses cuda:LOCAL_RANK, so set "
            "run.device=cuda (--device cuda)"
        )
    dev = _device(device, local_rank())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        "nccl" if dev.type == "cuda" else "gloo",
        timeout=datetime.timedelta(minutes=timeout_min),
        device_id=dev if dev.type == "cuda" else None,
    )
    _OWN_GROUP = True
    atexit.register(teardown)
    return dev


def teardown() -> None:
    """Destroy the process group :func:`setup` made (a no-op otherwise); runs by itself when the process exits."""
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first and on the other ranks after it (e.g. rank 0 downloads, the others read the
    cache). A collective: every rank must enter it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def _device(name: str, local: int | None) -> torch.device:
    device = parse_device(name, key="run.device")  # the same check and message as eval --device
    if name == "cuda" and local is not None:
        return torch.device("cuda", local)
    return device


def rank_generator(seed: int, rank: int) -> torch.Generator:
    """The generator rank ``rank`` draws its training distortions from. Rank 0's is the single-process one
    (:func:`torchstn.experiments.engine.data.data_generator`), so a one-process run is rank 0 of itself.

    Example:
        >>> from torchstn.experiments.engine.data import data_generator
        >>> torch.equal(rank_generator(3, 0).get_state(), data_generator(3).get_state())
        True
    """
    from torchstn.data.contract import mix_seed
    from torchstn.experiments.engine.data import data_generator

    if rank == 0:
        return data_generator(seed)
    return torch.Generator().manual_seed(mix_seed(seed, 0xDA7A, rank))


def split_batch(batch_size: int, world: int) -> int:
    """Images per rank when ``world`` processes share a global batch of ``batch_size``.

    Raises:
        ConfigError: ``batch_size`` is not divisible by ``world`` (``optim.batch_size`` is the global batch).
    """
    if batch_size % world:
        raise ConfigError(
            f"optim.batch_size = {batch_size} is the global batch, shared by {world} processes: it "
            f"must be divisible by {world}, e.g. {batch_size - batch_size % world or world}"
        )
    return batch_size // world


def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of the global batch ``indices (B,)`` -> ``(B // world,)``.

    Raises:
        ConfigError: ``B`` is not divisible by ``world``.
    """
    return indices.view(world, split_batch(indices.shape[0], world))[rank]  # (world, B/world) -> (B/world,)


def all_gather_states(generator: torch.Generator) -> list[torch.Tensor]:
    """Every rank's ``generator.get_state()``, in rank order (a collective: all ranks must call it)."""
    return [s.cpu() for s in all_gather_object(generator.get_state())]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (a collective; pickled, so keep it small)."""
    if not is_distributed():
        return [obj]
    objects: list[Any] = [None] * world_size()
    dist.all_gather_object(objects, obj)
    return objects


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` holds it, on every rank (a collective; pickled, so keep it small or rare)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_float(value: float, device: torch.device, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank (a collective; a float64 tensor, cheap enough for every step)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=src)
    return float(t)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (a collective), as float64."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(value: int, device: torch.device) -> int:
    """The largest ``value`` over the ranks (a collective; one int64, cheap enough for every step). The trainer
    uses it to agree on a stop: a signal that reached any rank stops all of them at the same iteration."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()
