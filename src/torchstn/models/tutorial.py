"""The STN of the official PyTorch tutorial, written plainly: a **speed peer** for benchmarks, not a torchstn model.

Source: "Spatial Transformer Networks Tutorial" (Ghassen Hamrouni, pytorch/tutorials, BSD-3-Clause). It uses
``F.affine_grid`` / ``F.grid_sample`` directly and none of this library. Differences from the tutorial: ``forward``
returns logits (the tutorial returns ``log_softmax``; ``cross_entropy`` on either gives the same loss), the flattened
sizes are computed from ``in_shape`` (the tutorial hard-codes 28x28 single-channel inputs), and ``align_corners=False``
is passed explicitly (the tutorial relies on that default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.errors import ShapeError
from torchstn.models.registry import register_model

__all__ = ["TutorialSTN"]


class TutorialSTN(nn.Module):
    """The PyTorch tutorial's STN (localisation conv 8@7 -> pool -> ReLU -> conv 10@5 -> pool -> ReLU -> FC 32 ->
    FC 6; classifier conv 10@5, conv 20@5, dropout2d, FC 50, FC ``num_classes``).

    Raises:
        ShapeError: an input too small for the layers.

    Example:
        >>> net = TutorialSTN((1, 28, 28))
        >>> net(torch.rand(2, 1, 28, 28)).shape, net.transformers
        (torch.Size([2, 10]), [])
    """

    def __init__(self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        C = in_shape[0]
        self.conv1 = nn.Conv2d(C, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.localization = nn.Sequential(
            nn.Conv2d(C, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )
        with torch.no_grad():
            probe = torch.zeros(1, *in_shape)
            try:
                loc_flat = self.localization(probe).flatten(1).shape[1]  # 10 * 3 * 3 on 28x28
                cls_flat = self._features(probe).flatten(1).shape[1]  # 20 * 4 * 4 = 320 on 28x28
            except RuntimeError as exc:
                raise ShapeError(f"TutorialSTN: in_shape {tuple(in_shape)} is too small ({exc})") from None
        self.fc1 = nn.Linear(cls_flat, 50)
        self.fc2 = nn.Linear(50, num_classes)
        theta_layer = nn.Linear(32, 3 * 2)
        self.fc_loc = nn.Sequential(nn.Linear(loc_flat, 32), nn.ReLU(True), theta_layer)
        theta_layer.weight.data.zero_()  # identity initialisation, as in the tutorial
        theta_layer.bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    @property
    def transformers(self) -> list:
        """Empty: the tutorial's transformer is inline code, not a :class:`~torchstn.nn.SpatialTransformer`."""
        return []

    def stn(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.localization(x).flatten(1)
        theta = self.fc_loc(xs).view(-1, 2, 3)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.size()), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(self.stn(x)).flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)  # logits (B, num_classes)


@register_model("tutorial_stn")
def tutorial_stn(in_shape: tuple[int, int, int], num_classes: int = 10) -> TutorialSTN:
    """The PyTorch tutorial's STN (a benchmark peer; see :class:`TutorialSTN`).

    Example:
        >>> tutorial_stn((1, 28, 28)).fc1.in_features
        320
    """
    return TutorialSTN(in_shape, num_classes)
