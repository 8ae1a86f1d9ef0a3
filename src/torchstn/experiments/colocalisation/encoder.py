"""The frozen encoder ``e()`` of the co-localisation experiment: a trained MNIST CNN read at one depth.

It is trained by the engine from the packaged config ``colocalisation_encoder`` (``torchstn train
colocalisation_encoder``) and loaded from that run with :func:`load_encoder`; any CNN run of Table 1 works too
(``torchstn train table1:RTS/cnn``: the paper's ``e()`` is "the CNN trained for digit classification from Sect. 4.1").
Such a CNN was trained on larger images (RTS 42x42, TC 60x60) than the 28x28 crops it reads here: :data:`FITS`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torchstn._checks import look_up_option
from torchstn.errors import OptionError

__all__ = ["FEATURES", "FITS", "Encoder", "load_encoder"]

#: What :class:`Encoder` reads: every conv block and the logits joined, the last conv block, the logits, softmax.
FEATURES = ("concat", "penultimate", "logits", "probs")

#: How a crop meets an encoder trained on larger images: ``"pad"`` (centred on a black canvas of the encoder's size,
#: so a digit keeps the 28 px it has in the distorted sets, whose digits are 28x28 MNIST digits moved on a larger
#: canvas) or ``"resize"`` (bilinear, the crop stretched to the encoder's size).
FITS = ("pad", "resize")


class Encoder(nn.Module):
    """The frozen encoder ``e()``: a trained MNIST CNN (:func:`torchstn.models.mnist.cnn`) read at one depth.

    ``features``: ``"concat"`` (default: each conv block's pooled activations and the logits, joined; the paper's
    "activations concatenated"), ``"penultimate"`` (the last conv block), ``"logits"`` or ``"probs"`` (softmax).
    ``normalise`` divides each vector by its L2 norm, so squared distances lie in ``[0, 4]`` and the margin
    ``alpha = 1`` is on their scale. The parameters do not learn and the module stays in eval mode.

    ``in_size`` is the ``(H, W)`` the CNN was trained on (``None``: whatever it is given). An input of another size
    is first brought to it by ``fit`` (:data:`FITS`): ``"pad"`` with black borders around the centre (a smaller
    input) or ``"resize"`` (bilinear).

    Raises:
        OptionError: a model that is not the paper's CNN, an unknown ``features`` or ``fit``, or ``fit="pad"`` of an
            input larger than ``in_size``.

    Example:
        >>> from torchstn.models.mnist import cnn
        >>> e = Encoder(cnn((1, 28, 28), channels=(4, 4)))
        >>> f = e(torch.rand(3, 1, 28, 28))
        >>> f.shape, bool(torch.allclose(f.norm(dim=1), torch.ones(3))), e.training
        (torch.Size([3, 990]), True, False)
        >>> e42 = Encoder(cnn((1, 42, 42), channels=(4, 4)), in_size=(42, 42))  # an RTS-sized CNN
        >>> e42.fitted(torch.ones(1, 1, 28, 28)).shape, e42(torch.rand(3, 1, 28, 28)).shape
        (torch.Size([1, 1, 42, 42]), torch.Size([3, 2174]))
    """

    def __init__(
        self,
        model: nn.Module,
        features: str = "concat",
        normalise: bool = True,
        in_size: tuple[int, int] | None = None,
        fit: str = "pad",
    ):
        super().__init__()
        self.features = look_up_option("features", features, FEATURES)
        self.normalise = bool(normalise)
        self.in_size = None if in_size is None else (int(in_size[0]), int(in_size[1]))
        self.fit = look_up_option("fit", fit, FITS)
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

    def fitted(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, h, w)`` brought to the encoder's ``in_size`` by ``fit`` (unchanged when it has that size).

        Raises:
            OptionError: ``fit="pad"`` of an input larger than ``in_size``.
        """
        if self.in_size is None or tuple(x.shape[-2:]) == self.in_size:
            return x
        (H, W), (h, w) = self.in_size, x.shape[-2:]
        if self.fit == "resize":
            return nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        if h > H or w > W:
            raise OptionError(f"cannot pad {h}x{w} crops to the encoder's smaller {H}x{W} input: use fit='resize'")
        top, left = (H - h) // 2, (W - w) // 2
        return nn.functional.pad(x, (left, W - w - left, top, H - h - top))  # black borders, the digit centred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fitted(x)
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
        size = "" if self.in_size is None else f", in_size={self.in_size}, fit={self.fit!r}"
        return f"features={self.features!r}, normalise={self.normalise}{size}"


def load_encoder(path: str | Path, features: str = "concat", normalise: bool = True, fit: str = "pad") -> Encoder:
    """An :class:`Encoder` from a run directory or checkpoint of ``torchstn train colocalisation_encoder`` or of any
    CNN run (``torchstn train table1:RTS/cnn``, ``tc:TC/cnn``), reading crops at the size the run trained on
    (``fit``: :data:`FITS`); its ``source`` is the checkpoint's path.

    Raises:
        DataError: a missing or damaged checkpoint.
        OptionError: a run whose model is not the paper's CNN, or an unknown ``features`` or ``fit``.
    """
    from torchstn.experiments.engine.runs import checkpoint_path, load_run

    _, model, payload = load_run(path)
    in_shape = tuple(payload["in_shape"])
    encoder = Encoder(model, features, normalise, in_size=(int(in_shape[-2]), int(in_shape[-1])), fit=fit)
    encoder.source = str(checkpoint_path(path))
    return encoder
