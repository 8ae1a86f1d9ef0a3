"""Evaluation and mixed precision, shared by every task: the one loop over a test set (:func:`evaluate_batches`),
the classification score the default task uses (:func:`evaluate`), and the ``run.amp`` context
(:func:`amp_autocast`, :func:`check_amp`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Fixed:  # any dataset with len() and batch(indices)
    ...     def __len__(self): return 4
    ...     def batch(self, idx): return torch.eye(4)[idx], torch.tensor([0, 1, 2, 0])[idx]
    >>> evaluate(nn.Identity(), Fixed(), batch_size=3)["error"]
    25.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.errors import ConfigError

__all__ = ["evaluate_batches", "evaluate", "classification_score", "amp_autocast", "check_amp"]

#: ``score(outputs, targets) -> (summed loss, wrong items, items)`` of one batch.
Score = Callable[[Any, Any], tuple[float, int, int]]


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    dataset: Any,
    score: Score,
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    limit: int = 0,
    amp: str = "off",
    progress: Any = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float] | None:
    """Mean loss and % error of ``model`` (in eval mode, restored after) on the first ``limit`` items of ``dataset``
    (0 = all), batch by batch in order, the forward pass under ``amp``.

    Args:
        score: the summed loss, wrong items and items of a batch's ``(outputs, targets)``.
        progress: advanced to the number of items evaluated after each batch, closed at the end.
        should_stop: asked before each batch; when it returns ``True`` the evaluation is abandoned (a stop request).

    Returns:
        ``{"loss": ..., "error": ..., "n": ...}``, or ``None`` if ``should_stop`` abandoned it.
    """
    was_training = model.training
    model.eval()
    n = len(dataset) if limit <= 0 else min(limit, len(dataset))
    loss_sum, wrong, count = 0.0, 0, 0
    try:
        for start in range(0, n, batch_size):
            if should_stop is not None and should_stop():
                return None
            inputs, targets = dataset.batch(torch.arange(start, min(n, start + batch_size)))
            inputs, targets = inputs.to(device), targets.to(device)
            with amp_autocast(device, amp):
                outputs = model(inputs)
            batch_loss, batch_wrong, batch_count = score(outputs, targets)
            loss_sum, wrong, count = loss_sum + batch_loss, wrong + batch_wrong, count + batch_count
            if progress is not None:
                progress.update(min(n, start + batch_size))
    finally:
        model.train(was_training)
        if progress is not None:
            progress.close()
    return {"loss": loss_sum / max(1, count), "error": 100.0 * wrong / max(1, count), "n": n}


def classification_score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
    """Summed cross-entropy (in float32) and wrong top-1 predictions of a batch of logits."""
    logits = logits.float()
    loss = float(F.cross_entropy(logits, labels, reduction="sum"))
    return loss, int((logits.argmax(1) != labels).sum()), labels.numel()


def evaluate(model: nn.Module, dataset: Any, **options: Any) -> dict[str, float] | None:
    """Mean cross-entropy and % top-1 error of a classifier: :func:`evaluate_batches` with
    :func:`classification_score` (``options``: its keyword arguments)."""
    return evaluate_batches(model, dataset, classification_score, **options)


def amp_autocast(device: str | torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``run.amp`` (``off``: none; ``bf16``; ``fp16``) on ``device``'s type."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def check_amp(amp: str, device: torch.device) -> None:
    """Device checks of ``run.amp`` (its value is checked with the config).

    Raises:
        ConfigError: ``fp16`` off CUDA, or ``bf16`` on a GPU without bfloat16.
    """
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"run.amp = 'fp16' needs CUDA (it scales the loss with a GradScaler); on {device.type} use run.amp = 'bf16'"
        )
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"run.amp = 'bf16' but {torch.cuda.get_device_name(device)} has no bfloat16; use 'fp16'")
