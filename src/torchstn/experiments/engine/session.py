"""One session of a training run, from its start or resume to its end or a stop: the loop around
:func:`~torchstn.experiments.engine.steps.train_steps` with the evaluations, GIF frames, checkpoints, metrics and progress bar due at
its iteration boundaries, and the stops of :mod:`torchstn.experiments.engine.signals`. :func:`torchstn.experiments.engine.trainer.fit` sets it
up (config, run directory, resume) and writes the result.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import distributed as dist
from torchstn.experiments.engine.config import to_dict
from torchstn.experiments.engine.metrics import MetricsLogger, Progress
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.steps import RunState, theta_columns, train_steps, transformers

__all__ = ["Session", "GifFrames", "checkpoint_payload", "TIME_CLOCK_CAP"]

TIME_CLOCK_CAP = 100  # with optim.clock = "time", at most this many times optim.iterations


def checkpoint_payload(
    state: RunState, in_shape, num_classes, final: bool, rank_states: list[torch.Tensor], windows: list[list[float]]
) -> dict[str, Any]:
    """What ``last.pt`` holds; ``rank_states`` and ``windows``: every rank's data-generator state and training-loss
    window (summed loss, wrong predictions, images and seconds since the last log row), in rank order."""
    payload = {
        "config": to_dict(state.cfg),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
        "rng": ckpt.get_rng_state(state.generator, rank_states=rank_states),
        "world_size": len(rank_states),
        "version": ckpt.code_version(),
        "in_shape": list(in_shape),
        "num_classes": int(num_classes),
        "elapsed_s": state.elapsed(),
        "final": final,
        "windows": windows,
        "pending_eval": state.pending_eval,
    }
    if state.scaler is not None:
        payload["scaler"] = state.scaler.state_dict()
    if state.ema is not None:
        payload["ema"] = state.ema.state_dict()
    return payload


class Session:
    """One session of a run, from its start or resume to its end or a stop: the loop around :func:`train_steps`
    with the evaluations, GIF frames, checkpoints, metrics and progress bar due at its boundaries."""

    def __init__(
        self,
        state: RunState,
        out: Path,
        test_set,
        *,
        say: Callable[[str], None],
        progress: bool,
        stream: TextIO | None,
        gif: bool,
        resumed: bool,
        resumed_final: bool,
    ):
        cfg, self.state, self.out, self.test_set = state.cfg, state, out, test_set
        self.say, self.progress, self.stream, self.main = say, progress, stream, dist.is_main()
        self.in_shape = tuple(state.train_set.image_shape)
        self.num_classes = int(state.train_set.num_classes)
        sts = list(transformers(state.model))
        columns = theta_columns(sts) if sts else ()
        self.logger = (
            MetricsLogger(out, columns, resume_step=state.step if resumed else None, drop_final_test=resumed_final)
            if self.main
            else None
        )
        iterations = state.optim.iterations
        self.by_time, self.completed = state.optim.clock == "time", False
        self.time_limit_s = None if cfg.run.time_limit is None else cfg.run.time_limit * 60
        self.gif_every = (cfg.run.eval_every or max(1, iterations // 10)) if gif and sts else 0  # same on all ranks
        self.frames = GifFrames(out, state.model, test_set) if self.gif_every and self.main else None
        if self.frames is not None and state.step == 0:
            self.frames.add(0)
        if self.by_time:  # the number of iterations is not known in advance: the bar counts the seconds
            assert self.time_limit_s is not None  # optim.clock = "time" needs run.time_limit: checked by resolve
            self.bar = Progress(
                self.time_limit_s,
                state.elapsed_before,
                every=cfg.run.log_every,
                enabled=progress,
                stream=stream,
                seconds=True,
            )
        else:
            self.bar = Progress(iterations, state.step, every=cfg.run.log_every, enabled=progress, stream=stream)

    def train(self, stop_after: int | None) -> dict[str, Any] | None:
        """Train to the end (or ``stop_after``); ``None`` when done, the ``stopped`` dict after ``stop_after``.

        Raises:
            TrainingInterrupted: a signal stopped it; the checkpoint of the iteration boundary is written.
        """
        s, cfg, iterations = self.state, self.state.cfg, self.state.optim.iterations
        cap = iterations * TIME_CLOCK_CAP if self.by_time else iterations
        stop = cap if stop_after is None else min(cap, stop_after)
        every = [e for e in (cfg.run.eval_every, cfg.run.checkpoint_every, self.gif_every) if e > 0]
        s.session_start = time.monotonic()
        if s.pending_eval:  # a stop abandoned the evaluation due at the checkpoint's iteration
            self._boundary()
        in_time = True
        while s.step < stop and in_time and not s.stopped_by:
            nxt = min([stop] + [(s.step // e + 1) * e for e in every])
            in_time = train_steps(s, nxt, logger=self.logger, progress=self.bar, time_limit_s=self.time_limit_s)
            if not s.stopped_by:
                self._boundary()
                self._save()
        if not s.stopped_by:  # a signal during the last boundary's evaluation or checkpoint (one agreement)
            s.stopped_by = dist.all_reduce_max(s.stop.signum or 0, s.device) if s.stop is not None else None
        if s.stopped_by:
            self._save()
            raise TrainingInterrupted(
                f"interrupted by {signal.Signals(s.stopped_by).name}: checkpoint saved at "
                f"iteration {s.step} in {self.out / 'last.pt'}",
                signum=s.stopped_by,
                step=s.step,
                saved=True,
                out=str(self.out),
            )
        self.bar.close()
        self.completed = not in_time if self.by_time else s.step >= iterations
        if not in_time and not self.by_time:
            self.say(f"time limit of {cfg.run.time_limit:g} min reached at iteration {s.step}/{iterations}")
        if stop_after is not None and s.step < cap and in_time:
            return {"stopped": True, "step": s.step, "out": str(self.out)}
        return None

    def final_evaluation(self) -> dict[str, float] | None:
        """Evaluate on the whole test set (rank 0; ``None`` elsewhere), log it, write the final checkpoint and GIF.

        Raises:
            TrainingInterrupted: a signal abandoned the evaluation; the checkpoint of the last iteration stands.
        """
        s, res = self.state, None
        if self.main:
            self.say(f"final evaluation on {len(self.test_set):,} test images")
            res = self._evaluate(limit=0)
            if res is not None and s.ema is not None:  # the average is the run's model; the raw weights beside it
                raw = self._evaluate(limit=0, model=s.model)
                res = None if raw is None else {**res, "error_raw": raw["error"], "loss_raw": raw["loss"]}
        signum = dist.broadcast_object(s.stop.signum if self.main and res is None and s.stop is not None else 0)
        if signum:
            raise TrainingInterrupted(
                f"interrupted by {signal.Signals(signum).name} during the final evaluation: "
                f"training is complete and its checkpoint (iteration {s.step}) is saved in "
                f"{self.out / 'last.pt'}; a resume runs the evaluation",
                signum=signum,
                step=s.step,
                saved=True,
                out=str(self.out),
            )
        if self.main:
            assert self.logger is not None  # rank 0 holds the logger
            assert res is not None  # rank 0 evaluated: an abandoned evaluation raised TrainingInterrupted above
            self.logger.log(
                {"step": s.step, "phase": "test", "loss": res["loss"], "error": res["error"], "elapsed_s": s.elapsed()}
            )
        self._save(final=True)
        if self.frames is not None:
            self.frames.add(s.step)
            self.frames.write_gif(self.out / "st.gif")
        return res

    def close(self) -> None:
        self.bar.close()
        if self.logger is not None:
            self.logger.close()

    def _boundary(self) -> None:
        """What is due at ``state.step`` besides the checkpoint: a periodic evaluation and a GIF frame (rank 0)."""
        s, run = self.state, self.state.cfg.run
        if self.main and run.eval_every and s.step % run.eval_every == 0 and s.step < s.optim.iterations:
            res = self._evaluate(limit=run.eval_limit)
            s.pending_eval = res is None
            if res is None:  # abandoned by a stop: saved as pending, the resume runs it
                return
            assert self.logger is not None  # rank 0 holds the logger
            self.logger.log(
                {"step": s.step, "phase": "test", "loss": res["loss"], "error": res["error"], "elapsed_s": s.elapsed()}
            )
            self.bar.write(
                f"iteration {s.step}: test error {res['error']:.2f}% (loss {res['loss']:.4f}, {res['n']} images)"
            )
        if self.frames is not None and s.step % self.gif_every == 0:
            self.frames.add(s.step)

    def _evaluate(self, limit: int, model: nn.Module | None = None) -> dict[str, float] | None:
        """The task's evaluation of ``model`` (default: the run's model, the weight average when ``optim.ema`` keeps
        one); ``None`` when a stop abandoned it."""
        s, run = self.state, self.state.cfg.run
        if model is None:
            model = s.model if s.ema is None else s.ema.module
        n = len(self.test_set) if limit <= 0 else min(limit, len(self.test_set))
        bar = Progress(n, desc="test", unit="img", leave=False, enabled=self.progress, stream=self.stream)
        stop = s.stop
        s.task.on_step(model, s.step)
        return s.task.evaluate(
            model,
            self.test_set,
            batch_size=run.eval_batch_size,
            device=s.device,
            limit=limit,
            amp=run.amp,
            progress=bar,
            should_stop=None if stop is None else lambda: stop.requested,
        )

    def _save(self, final: bool = False) -> None:
        """Write ``last.pt``: a collective under DDP (every rank calls it at the same steps; it gathers every rank's
        data generator and loss window, and is also the barrier after rank 0's evaluation)."""
        s = self.state
        gathered = dist.all_gather_object((s.generator.get_state(), list(s.window)))
        if self.main:
            payload = checkpoint_payload(
                s, self.in_shape, self.num_classes, final, [g.cpu() for g, _ in gathered], [w for _, w in gathered]
            )
            ckpt.save_checkpoint(self.out / "last.pt", payload)
        if s.stop is not None:
            s.stop.last_saved = s.step


class GifFrames:
    """Saves the transformer's output on a fixed set of test images as PNG frames, then joins them into a GIF."""

    def __init__(self, out: Path, model: nn.Module, test_set, n: int = 16):
        self.dir, self.model = out / "gif", model
        self.images, _ = test_set.batch(torch.arange(min(n, len(test_set))))
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, step: int) -> None:
        from torchstn.experiments import viz

        viz.save_frame(self.model, self.images, self.dir / f"frame_{step:08d}.png", title=f"iteration {step}")

    def write_gif(self, path: Path) -> None:
        from torchstn.experiments import viz

        viz.write_gif(sorted(self.dir.glob("frame_*.png")), path)
