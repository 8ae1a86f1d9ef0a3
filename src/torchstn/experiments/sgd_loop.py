"""Entry points of the paper's real-image experiments: SVHN (Table 2) and CUB-200-2011 (Table 3).

``torchstn svhn prepare|train|eval`` is :func:`torchstn.experiments.svhn.main`, ``torchstn cub train|eval|show`` is
:func:`torchstn.experiments.cub.main` (see ``docs/real_images.md``). Shared here, and only here: the SGD step
schedule (:class:`SGDSchedule`, overridable by ``key=value`` strings), step-indexed epoch batches (so a resumed run
sees the same batches) and :func:`train_loop`, which writes ``last.pt`` atomically (``weights_only``-loadable),
``metrics.jsonl`` and ``result.json`` into the run folder.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from torchstn.errors import ConfigError, NonFiniteError

__all__ = ["SGDSchedule", "override", "parse_options", "epoch_batches", "train_loop", "load_run"]


@dataclasses.dataclass(frozen=True)
class SGDSchedule:
    """SGD with momentum, weight decay and step decay: ``lr * gamma ** (number of lr_steps passed)``; every spatial
    transformer (localisation net and regression layer) learns at ``lr * loc_lr_mult``.

    Example:
        >>> s = SGDSchedule("x", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, iterations=400_000,
        ...                 lr_steps=(80_000, 160_000), gamma=0.1, loc_lr_mult=0.1)
        >>> s.lr_factor(79_999), s.lr_factor(80_000), round(s.lr_factor(200_000), 6)
        (1.0, 0.1, 0.01)
    """

    name: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    iterations: int
    lr_steps: tuple[int, ...]
    gamma: float
    loc_lr_mult: float

    def lr_factor(self, step: int) -> float:
        return self.gamma ** sum(step >= s for s in self.lr_steps)


def _value(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(items: Sequence[str], what: str = "option") -> dict[str, object]:
    """``["a=1", "b=[8, 8]", "c=name"]`` -> ``{"a": 1, "b": [8, 8], "c": "name"}`` (Python literals, else strings).

    Raises:
        ConfigError: an item without ``=``.
    """
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} must look like key=value, got {item!r}")
        out[key.strip()] = _value(text.strip())
    return out


def override(schedule: SGDSchedule, items: Sequence[str]) -> SGDSchedule:
    """A copy of ``schedule`` with ``key=value`` overrides. Changing ``iterations`` without ``lr_steps`` moves the
    steps proportionally.

    Raises:
        ConfigError: an unknown key (with a suggestion) or a value of the wrong type.

    Example:
        >>> s = SGDSchedule("p", 0.01, 0.9, 5e-4, 128, 1000, (200, 400), 0.1, 0.1)
        >>> override(s, ["iterations=100", "lr=0.1"]).lr_steps
        (20, 40)
        >>> override(s, ["lr_step=3"])
        Traceback (most recent call last):
        ...
        torchstn.errors.ConfigError: unknown schedule key 'lr_step'. Did you mean 'lr_steps'?
    """
    fields = {f.name: f for f in dataclasses.fields(schedule) if f.name != "name"}
    values = parse_options(items, "a schedule override")
    changes: dict[str, object] = {}
    for key, v in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), 1)
            raise ConfigError(f"unknown schedule key {key!r}." + (f" Did you mean {close[0]!r}?" if close else
                                                                   f" Keys: {list(fields)}"))  # fmt: skip
        want = fields[key].type
        try:
            if want == "int":
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise TypeError
            elif want == "float":
                v = float(v)
                if not math.isfinite(v) or v < 0:
                    raise TypeError
            else:  # lr_steps
                v = tuple(int(s) for s in (v if isinstance(v, (list, tuple)) else (v,)))
        except (TypeError, ValueError):
            raise ConfigError(f"schedule key {key!r} needs a non-negative {want}, got {values[key]!r}") from None
        changes[key] = v
    if "iterations" in changes and "lr_steps" not in changes:
        k = changes["iterations"] / schedule.iterations
        changes["lr_steps"] = tuple(max(1, round(s * k)) for s in schedule.lr_steps)
    return dataclasses.replace(schedule, **changes)


def epoch_batches(n: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    """``indices(step) -> (batch_size,)``: shuffled epochs over ``n`` items, each epoch's order seeded by
    ``(seed, epoch)``, so step ``s`` gets the same batch in a fresh or a resumed run.

    Example:
        >>> f = epoch_batches(5, 2, seed=0)
        >>> sorted(torch.cat([f(0), f(1), f(2)])[:5].tolist())  # the first 5 items: one whole epoch
        [0, 1, 2, 3, 4]
    """

    @functools.lru_cache(maxsize=2)
    def perm(epoch: int) -> torch.Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))

    def indices(step: int) -> torch.Tensor:
        out: list[torch.Tensor] = []
        pos, need = step * batch_size, batch_size
        while need:
            epoch, off = divmod(pos, n)
            take = perm(epoch)[off : off + need]
            out.append(take)
            pos, need = pos + len(take), need - len(take)
        return torch.cat(out)

    return indices


def _save(path: Path, payload: dict) -> None:
    from torchstn.experiments.engine.checkpoint import save_checkpoint  # atomic: temp file, fsync, os.replace

    save_checkpoint(path, payload)


def load_run(path: str | os.PathLike[str]) -> dict:
    """Read a checkpoint written by :func:`train_loop` (``torch.load(weights_only=True)``).

    Raises:
        DataError: missing or unreadable (named in the message).
    """
    from torchstn.experiments.engine.checkpoint import load_checkpoint

    return load_checkpoint(path)


def train_loop(model: nn.Module, *, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: SGDSchedule,
               groups: list[dict], out_dir: str | os.PathLike[str], meta: dict, resume: bool = False,
               evaluate: Callable[[nn.Module], dict] | None = None, eval_every: int = 0, log_every: int = 100,
               checkpoint_every: int = 1000, device: str | torch.device = "cpu",
               log: Callable[[str], None] | None = print) -> dict:  # fmt: skip
    """Train ``model`` for ``schedule.iterations`` SGD steps on ``batch(step) -> (x, y)``.

    Args:
        groups: optimiser parameter groups (e.g. :func:`torchstn.param_groups`); each group's ``lr`` is its base
            rate, multiplied by ``schedule.lr_factor(step)``.
        meta: what rebuilds the model and names the data (saved in every checkpoint; plain values only).
        resume: continue from ``out_dir/last.pt`` (same schedule required, except ``iterations``).
        evaluate: ``evaluate(model) -> metrics`` every ``eval_every`` steps (0: at the end only) and at the end.

    Returns:
        The result dict written to ``result.json``.

    Raises:
        ConfigError: resuming with a different schedule.
        NonFiniteError: the loss became NaN or infinite.
    """
    log = log or (lambda _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    opt = torch.optim.SGD(groups, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    step, sched = 0, dataclasses.asdict(schedule)
    if resume and (out / "last.pt").exists():
        ckpt = load_run(out / "last.pt")
        saved = dict(ckpt["schedule"], lr_steps=tuple(ckpt["schedule"]["lr_steps"]))
        if {**saved, "iterations": 0} != {**sched, "iterations": 0}:  # only the length may change (extend a run)
            raise ConfigError(f"{out / 'last.pt'} was trained with schedule {saved}, not {sched}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        base, step = list(ckpt["base_lr"]), int(ckpt["step"])
        log(f"resumed from {out / 'last.pt'} at step {step}")

    def checkpoint(final: bool) -> None:
        _save(out / "last.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                "schedule": sched, "base_lr": base, "meta": meta, "final": final})  # fmt: skip

    metrics = out / "metrics.jsonl"
    t0, running, since = time.perf_counter(), 0.0, 0
    model.train()
    while step < schedule.iterations:
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * schedule.lr_factor(step)
        x, y = batch(step)
        loss = loss_fn(model(x.to(device)), y.to(device))
        if not torch.isfinite(loss):
            raise NonFiniteError(f"loss is {loss.item()} at step {step}: lower the learning rate(s)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        running, since = running + loss.item(), since + 1
        row: dict[str, object] = {}
        if step % log_every == 0 or step == schedule.iterations:
            row = {"step": step, "loss": running / since, "lr": opt.param_groups[0]["lr"],
                   "s_per_step": (time.perf_counter() - t0) / since}
            running, since, t0 = 0.0, 0, time.perf_counter()
        if evaluate is not None and eval_every and step % eval_every == 0 and step < schedule.iterations:
            model.eval()
            row.update({"step": step, **evaluate(model)})
            model.train()
        if row:
            with open(metrics, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if checkpoint_every and step % checkpoint_every == 0 and step < schedule.iterations:
            checkpoint(final=False)
    result: dict[str, object] = {"step": step, "meta": meta, "schedule": sched}
    if evaluate is not None:
        model.eval()
        result.update(evaluate(model))
    checkpoint(final=True)
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, out / "result.json")
    log(f"wrote {out / 'last.pt'} and {out / 'result.json'}")
    return result
