"""Run logging: a CSV of metrics (TensorBoard too when it is installed) and a progress bar (tqdm when installed).

``metrics.csv`` has one row per log point: ``step, phase`` (``train`` or ``test``), ``loss``, ``error`` (%), ``lr``,
``img_per_s``, ``elapsed_s`` and, for each spatial transformer, ``theta_mean``, ``theta_std``, ``theta_min`` and
``theta_max`` of the last batch (prefixed with the module name when a model has several).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["MetricsLogger", "Progress", "BASE_COLUMNS"]

BASE_COLUMNS = ("step", "phase", "loss", "error", "lr", "img_per_s", "elapsed_s")


class MetricsLogger:
    """Append rows to ``<out>/metrics.csv`` and, when ``tensorboard`` is installed, to ``<out>/tb``.

    Args:
        out_dir: run directory.
        columns: extra columns after :data:`BASE_COLUMNS` (theta statistics).
        resume_step: when resuming, the checkpoint's step: rows logged after it (by the interrupted run) are dropped
            so the file reads as one uninterrupted run. ``None`` starts a fresh file.
        drop_final_test: when resuming a run that had finished (a time limit, or a resume to re-evaluate), also drop
            its final evaluation, the last ``test`` row at ``resume_step``: the resumed run logs its own.
        tensorboard: ``None`` = use it when installed; ``False`` = never.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        columns: Sequence[str] = (),
        *,
        resume_step: int | None = None,
        drop_final_test: bool = False,
        tensorboard: bool | None = None,
    ):
        self.path = Path(out_dir) / "metrics.csv"
        self.columns = list(BASE_COLUMNS) + [c for c in columns if c not in BASE_COLUMNS]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row.get("step") or 0) <= resume_step]
            if drop_final_test and kept and kept[-1].get("phase") == "test" and int(kept[-1]["step"]) == resume_step:
                kept.pop()
        self._file: TextIO = open(self.path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()
        self._tb = _summary_writer(Path(out_dir) / "tb", resume_step) if tensorboard is not False else None

    def log(self, row: dict[str, Any]) -> None:
        """Write one row (missing columns stay empty; floats are written with 6 significant digits)."""
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()
        if self._tb is not None:
            step, phase = int(row["step"]), row.get("phase", "train")
            for k, v in row.items():
                if k not in ("step", "phase") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{phase}/{k}", v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _summary_writer(path: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    # purge_step hides events at steps >= it: keep those of the checkpoint's own step, which the resume does not redo
    return SummaryWriter(str(path), purge_step=None if resume_step is None else resume_step + 1)


class Progress:
    """A progress bar: tqdm when installed and ``stream`` is a terminal-like stream, else a plain line every ``every``
    updates that carry a metrics row.

    The bar shows the loss, error and learning rate from the first iteration on: :meth:`update` takes each
    iteration's values (``live``) and shows their running mean over about the last ten iterations, beside the
    throughput and theta spread of the latest metrics row.

    Args:
        total: last iteration; with ``seconds``, the time budget in seconds.
        initial: first iteration (when resuming); with ``seconds``, the seconds already used.
        every: how often the plain fallback prints.
        enabled: ``False`` prints nothing.
        stream: where to write (default ``sys.stderr`` for tqdm, ``sys.stdout`` for plain lines).
        desc: the bar's label.
        seconds: the bar counts seconds of a time budget, not iterations (``optim.clock = "time"``: the number of
            iterations is not known in advance); the iteration count shows beside it.
        unit: what the bar counts (``it``, ``img``), when not ``seconds``.
        leave: keep the bar on screen when it is closed.
    """

    def __init__(
        self,
        total: int | float,
        initial: int | float = 0,
        *,
        every: int = 50,
        enabled: bool = True,
        stream: TextIO | None = None,
        desc: str = "train",
        seconds: bool = False,
        unit: str = "it",
        leave: bool = True,
    ):
        self.total, self.step, self.every, self.enabled = total, initial, max(1, every), enabled
        self.stream, self.desc, self.seconds = stream, desc, seconds
        self._bar = None
        self._row: dict[str, float] = {}
        self._mean: dict[str, float] = {}  # exponential moving averages of the live values (bias-corrected)
        self._raw: dict[str, float] = {}
        self._updates = 0
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None and not isinstance(stream, io.StringIO):
                fmt = (
                    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
                    if seconds
                    else None
                )
                self._bar = tqdm(
                    total=total,
                    initial=min(initial, total),
                    desc=desc,
                    file=stream or sys.stderr,
                    dynamic_ncols=True,
                    leave=leave,
                    mininterval=1.0,
                    unit=unit,
                    bar_format=fmt,
                )

    def update(
        self,
        step: int,
        stats: dict[str, float] | None = None,
        *,
        live: dict[str, float] | None = None,
        elapsed: float | None = None,
    ) -> None:
        """Advance to ``step``.

        Args:
            step: the iteration (or count) reached.
            stats: a metrics row (loss, error, img_per_s, ...): beside the bar, or the plain line.
            live: this iteration's ``loss``, ``error`` and ``lr``, averaged for the bar.
            elapsed: seconds used so far (the bar's position with ``seconds``).
        """
        if not self.enabled:
            self.step = step
            return
        if stats:
            self._row = stats
        if live:
            self._average(live)
        if self._bar is not None:
            position = min(self.total, elapsed or 0.0) if self.seconds else step
            self._bar.update(position - self._bar.n)
            shown = {**self._row, **self._mean}
            if shown or self.seconds:
                text = format_stats(shown)
                self._bar.set_postfix_str(f"iteration {step}  {text}" if self.seconds else text, refresh=False)
        elif stats is not None and (step % self.every == 0 or (not self.seconds and step == self.total)):
            where = f"{step}/{self.total}" if not self.seconds else f"{step} ({elapsed or 0:.0f}/{self.total:.0f} s)"
            print(f"{self.desc} {where}  {format_stats(stats)}", file=self.stream or sys.stdout, flush=True)
        self.step = step

    def _average(self, live: dict[str, float], beta: float = 0.9) -> None:
        self._updates += 1
        correction = 1.0 - beta**self._updates
        for k, v in live.items():
            if k == "lr":  # the current value, not an average
                self._mean[k] = v
                continue
            self._raw[k] = self._raw.get(k, 0.0) * beta + (1 - beta) * v
            self._mean[k] = self._raw[k] / correction

    def write(self, line: str) -> None:
        """Print a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream or sys.stderr)
        else:
            print(line, file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            if self.seconds:  # the budget is used up (or the run stopped): show where it ended
                self._bar.refresh()
            self._bar.close()


def format_stats(stats: dict[str, float]) -> str:
    """``loss 0.1234  err 3.21%  lr 0.001  1234 img/s`` from a dict of whichever of these it holds."""
    parts = []
    if "loss" in stats:
        parts.append(f"loss {stats['loss']:.4f}")
    if "error" in stats:
        parts.append(f"err {stats['error']:.2f}%")
    if "lr" in stats:
        parts.append(f"lr {stats['lr']:.3g}")
    if "img_per_s" in stats:
        parts.append(f"{stats['img_per_s']:.0f} img/s")
    if "theta_std" in stats:
        parts.append(f"theta std {stats['theta_std']:.3f}")
    return "  ".join(parts)
