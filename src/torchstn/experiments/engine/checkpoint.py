"""Checkpoints: written atomically, read with ``weights_only=True``, holding everything an exact resume needs.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so ``torch.load(weights_only=True)`` can
read it without unpickling code):

``config`` (the resolved config as nested dicts), ``model``, ``optimizer`` and ``scheduler`` state dicts, ``step``,
``rng`` (the torch CPU / CUDA generators, the data generator and Python's ``random``, each as tensors or lists; under
DDP also ``data_ranks``, every rank's data generator), ``world_size`` (processes), ``version``
(``torchstn.__version__`` and the git revision when known), ``in_shape``, ``num_classes``, ``elapsed_s``, ``final``
and, with ``run.amp = "fp16"``, ``scaler`` (the gradient scaler's state).

Under DDP rank 0 writes the one file for all ranks: their generator states are gathered to it first (see
:mod:`torchstn.experiments.engine.distributed`), so one atomic ``os.replace`` keeps the whole run's state consistent, and a
resume needs only this file.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> save_checkpoint(os.path.join(d, "last.pt"), {"step": 3, "w": torch.zeros(2)})
    >>> load_checkpoint(os.path.join(d, "last.pt"))["step"]
    3
"""

from __future__ import annotations

import functools
import os
import pickle
import random
import subprocess
from pathlib import Path
from typing import Any

import torch

from torchstn._io import atomic_path
from torchstn.errors import DataError

__all__ = ["save_checkpoint", "load_checkpoint", "code_version", "get_rng_state", "set_rng_state"]


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory, flushed and fsync-ed, then
    ``os.replace``-d over ``path``. A crash at any moment leaves either the old file or the new one, never a torn one.

    Args:
        path: destination; its directory is created if needed.
        payload: what :func:`torch.save` should write.
    """
    with atomic_path(path, durable=True) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        DataError: the file is missing, truncated or not a torchstn checkpoint; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError, ... on damaged files
        raise DataError(_unreadable(path, e)) from None
    if not isinstance(payload, dict):
        raise DataError(f"{path}: not a torchstn checkpoint (holds a {type(payload).__name__})")
    return payload


def _unreadable(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in our words: torch's own advice for a weights-only failure ("re-running
    with weights_only=False will likely succeed") is wrong for a file that is not a checkpoint, and unsafe."""
    with open(path, "rb") as f:
        zip_file = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    if not zip_file:
        what = "a TOML config" if path.suffix == ".toml" else "not a file torch.save writes"
        return f"{path} is not a torchstn checkpoint ({what}); pass a run directory or its last.pt"
    if isinstance(error, pickle.UnpicklingError):
        return (
            f"{path} is not a torchstn checkpoint: it holds Python objects that a checkpoint never holds (only "
            f"tensors and plain data), so it is not loaded (unpickling them could run code)"
        )
    return f"{path}: cannot read checkpoint ({type(error).__name__}: {error})"


@functools.lru_cache(maxsize=1)
def _git_revision() -> str:
    """``git describe --always --dirty`` of the source tree torchstn is imported from, or ``""``."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def code_version() -> dict[str, str]:
    """``{"torchstn": version, "git": revision or "", "torch": torch version}``."""
    import torchstn

    return {"torchstn": torchstn.__version__, "git": _git_revision(), "torch": str(torch.__version__)}


def get_rng_state(
    data_generator: torch.Generator | None = None, *, rank_states: list[torch.Tensor] | None = None
) -> dict[str, Any]:
    """Every random state a training run draws from, as tensors and plain lists (safe for ``weights_only``).

    Args:
        data_generator: the training distortions' generator (rank 0's under DDP), saved as ``"data"``.
        rank_states: under DDP, every rank's data-generator state in rank order, saved as ``"data_ranks"`` (left
            out for one process).
    """
    version, state, gauss = random.getstate()
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(state), gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        rng["data"] = data_generator.get_state()
    if rank_states is not None and len(rank_states) > 1:
        rng["data_ranks"] = [s.cpu() for s in rank_states]
    return rng


def set_rng_state(rng: dict[str, Any], data_generator: torch.Generator | None = None, *, rank: int = 0) -> None:
    """Restore what :func:`get_rng_state` saved; ``data_generator`` gets rank ``rank``'s state (left as it is when
    the checkpoint has none for that rank: a resume with more processes than the run had)."""
    torch.set_rng_state(rng["torch"])
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    ranks = rng.get("data_ranks") or ([rng["data"]] if "data" in rng else [])
    if data_generator is not None and rank < len(ranks):
        data_generator.set_state(ranks[rank])
