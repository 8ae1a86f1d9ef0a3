"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (``timeout``, SLURM, Kubernetes, ``docker stop``).

While :func:`torchstn.experiments.engine.trainer.fit` trains, a :class:`StopRequest` holds both signals. The first one only
records itself: the loop finishes the iteration it is in (an evaluation stops between two batches), writes the
checkpoint at that iteration boundary and raises :class:`TrainingInterrupted`, so ``--resume`` continues exactly as
if nothing had happened. A second signal stops at once, without a checkpoint (the last one written stands: a
checkpoint is written atomically, so it is never torn). A repeat within :data:`SAME_SIGNAL_S` seconds counts as the
same signal: SLURM signals every process of a job step and ``torchrun`` forwards what it gets to its workers, so a
worker may receive one stop request twice within milliseconds. The previous handlers come back when training ends, and
a signal that was ignored when training started (a background job's SIGINT) stays ignored.

Exit statuses follow the shell's convention, 128 + the signal number: 130 for SIGINT, 143 for SIGTERM
(:attr:`TrainingInterrupted.exit_status`).

Example:
    >>> import os, signal
    >>> with StopRequest(notice=False) as stop:
    ...     os.kill(os.getpid(), signal.SIGTERM)  # delivered at once to this (the main) thread
    ...     stop.signum == signal.SIGTERM
    True
    >>> signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    True
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

__all__ = ["StopRequest", "TrainingInterrupted", "SAME_SIGNAL_S"]

#: A signal this soon after the first (seconds) is a copy of it (a launcher forwarding it), not a second request.
SAME_SIGNAL_S = 1.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped because of a signal (a :class:`KeyboardInterrupt`, so ``except Exception`` does not swallow
    it).

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: the iteration of the checkpoint that stands in ``out/last.pt``, ``None`` if there is none.
        saved: whether that checkpoint was written on this stop (``False``: a hard stop by a second signal).
        out: the run directory.
    """

    def __init__(self, message: str, *, signum: int, step: int | None, saved: bool, out: str | None = None):
        super().__init__(message)
        self.signum, self.step, self.saved, self.out = int(signum), step, saved, out

    @property
    def exit_status(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class StopRequest:
    """A context manager that turns SIGINT and SIGTERM into a request to stop at the next safe point.

    Handlers are installed only in the main thread (Python delivers signals there alone); elsewhere the object is
    inert and :attr:`signum` stays ``None``.

    Args:
        notice: write one line to stderr when the first signal arrives (rank 0 under DDP; the other ranks stay quiet).

    Attributes:
        signum: the first signal received, else ``None``.
        last_saved: the iteration of the latest checkpoint on disk (kept up to date by the trainer), for the message
            of a hard stop.
        out: the run directory, for the same message.
    """

    def __init__(self, *, notice: bool = True):
        self.notice, self._first_at = notice, 0.0
        self.signum: int | None = None
        self.last_saved: int | None = None
        self.out: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or previous is None:  # ignored, or set outside Python: leave it
                    continue
                self._previous[sig] = previous
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether a signal asked this process to stop."""
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None and time.monotonic() - self._first_at < SAME_SIGNAL_S:
            return  # the same request, delivered twice
        if self.signum is not None:  # the second signal: stop now, wherever the program is
            where = (
                "no checkpoint was written yet"
                if self.last_saved is None
                else f"the checkpoint of iteration {self.last_saved} stands"
            )
            raise TrainingInterrupted(
                f"stopped at once by a second {name}, without a checkpoint: {where}",
                signum=signum,
                step=self.last_saved,
                saved=False,
                out=self.out,
            )
        self.signum, self._first_at = signum, time.monotonic()
        if self.notice:
            again = "Ctrl-C again" if signum == signal.SIGINT else f"another {name}"
            _write_stderr(
                f"\n{name} received: stopping at the end of this iteration and saving a checkpoint "
                f"({again} stops at once, without one)\n"
            )


def _write_stderr(text: str) -> None:
    """One unbuffered write: safe inside a signal handler, where a buffered stream may be in the middle of a write."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass
