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
        tensorboard: ``None`` = use it when installed; ``False`` = never.
    """

    def __init__(self, out_dir: str | os.PathLike[str], columns: Sequence[str] = (), *,
                 resume_step: int | None = None, tensorboard: bool | None = None):  # fmt: skip
        self.path = Path(out_dir) / "metrics.csv"
        self.columns = list(BASE_COLUMNS) + [c for c in columns if c not in BASE_COLUMNS]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row.get("step") or 0) <= resume_step]
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
    return SummaryWriter(str(path), purge_step=resume_step)


class Progress:
    """A progress bar over iterations: tqdm when installed and ``stream`` is a terminal-like stream, else a plain
    line every ``every`` updates.

    Args:
        total: last iteration.
        initial: first iteration (when resuming).
        every: how often the plain fallback prints.
        enabled: ``False`` prints nothing.
        stream: where to write (default ``sys.stderr`` for tqdm, ``sys.stdout`` for plain lines).
    """

    def __init__(self, total: int, initial: int = 0, *, every: int = 50, enabled: bool = True,
                 stream: TextIO | None = None, desc: str = "train"):  # fmt: skip
        self.total, self.step, self.every, self.enabled = total, initial, max(1, every), enabled
        self.stream, self.desc = stream, desc
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None and not isinstance(stream, io.StringIO):
                self._bar = tqdm(total=total, initial=initial, desc=desc, file=stream or sys.stderr,
                                 dynamic_ncols=True, leave=True, mininterval=1.0)  # fmt: skip

    def update(self, step: int, stats: dict[str, float] | None = None) -> None:
        """Advance to ``step``; ``stats`` (loss, error, img_per_s, ...) shows beside the bar or in the line."""
        if not self.enabled:
            self.step = step
            return
        if self._bar is not None:
            self._bar.update(step - self.step)
            if stats:
                self._bar.set_postfix_str(format_stats(stats), refresh=False)
        elif stats is not None and (step % self.every == 0 or step == self.total):
            print(f"{self.desc} {step}/{self.total}  {format_stats(stats)}", file=self.stream or sys.stdout,
                  flush=True)  # fmt: skip
        self.step = step

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
