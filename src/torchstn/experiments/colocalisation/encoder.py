"""The frozen encoder ``e()`` of the co-localisation experiment: a trained MNIST CNN read at one depth.

It is trained by the engine from the packaged config ``colocalisation_encoder`` (``torchstn train
colocalisation_encoder``) and loaded from that run with :func:`load_encoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torchstn._checks import look_up_option
from torchstn.errors import OptionError

__all__ = ["FEATURES", "Encoder", "load_encoder"]

#: What :class:`Encoder` reads: every conv block and the logits joined, the last conv block, the logits, softmax.
FEATURES = ("concat", "penultimate", "logits", "probs")


class Encoder(nn.Module):
    """The frozen encoder ``e()``: a trained MNIST CNN (:func:`torchstn.models.mnist.cnn`) read at one depth.

    ``features``: ``"concat"`` (default: each conv block's pooled activations and the logits, joined; the paper's
    "activations concatenated"), ``"penultimate"`` (the last conv block), ``"logits"`` or ``"probs"`` (softmax).
    ``normalise`` divides each vector by its L2 norm, so squared distances lie in ``[0, 4]`` and the margin
    ``alpha = 1`` is on their scale. The parameters do not learn and the module stays in eval mode.

    Raises:
        OptionError: a model that is not the paper's CNN, or an unknown ``features``.

    Example:
        >>> from torchstn.models.mnist import cnn
        >>> e = Encoder(cnn((1, 28, 28), channels=(4, 4)))
        >>> f = e(torch.rand(3, 1, 28, 28))
        >>> f.shape, bool(torch.allclose(f.norm(dim=1), torch.ones(3))), e.training
        (torch.Size([3, 990]), True, False)
    """

    def __init__(self, model: nn.Module, features: str = "concat", normalise: bool = True):
        super().__init__()
        self.features = look_up_option("features", features, FEATURES)
        self.normalise = bool(normalise)
        self.source: str | None = None  # where it was loaded from
        net = getattr(model, "classifier", model)
        if not (
            isinstance(net, nn.Sequential)
            and len(net) >= 2
            and isinstance(net[-1], nn.Linear)
            and isinstance(net[-2], nn.Flatten)
        ):
            raise OptionError(
                "the encoder must be the paper's CNN (a Sequential ending in Flatten, Linear), got "
                f"{type(net).__name__}"
            )
        if not isinstance(getattr(model, "st", nn.Identity()), nn.Identity):
            raise OptionError("the encoder must be a CNN without a spatial transformer")
        self.net = net
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:  # frozen: always in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(x.flatten(1))  # (B, C * h * w)
        logits = x  # (B, num_classes)
        out = {
            "concat": lambda: torch.cat(blocks + [logits], dim=1),
            "penultimate": lambda: blocks[-1],
            "logits": lambda: logits,
            "probs": lambda: logits.softmax(dim=1),
        }[self.features]()
        return nn.functional.normalize(out, dim=1) if self.normalise else out  # (B, F)

    def extra_repr(self) -> str:
        return f"features={self.features!r}, normalise={self.normalise}"


def load_encoder(path: str | Path, features: str = "concat", normalise: bool = True) -> Encoder:
    """An :class:`Encoder` from a run directory or checkpoint of ``torchstn train colocalisation_encoder``; its
    ``source`` is the checkpoint's path.

    Raises:
        DataError: a missing or damaged checkpoint.
        OptionError: a run whose model is not the paper's CNN, or an unknown ``features``.
    """
    from torchstn.experiments.engine.runs import checkpoint_path, load_run

    _, model, _ = load_run(path)
    encoder = Encoder(model, features, normalise)
    encoder.source = str(checkpoint_path(path))
    return encoder
