"""A tiny learnable dataset following the torchstn dataset contract (for fast training tests)."""

import torch

from torchstn.experiments.engine.config import from_dict


class Bars:
    """Four classes on a 1x12x12 canvas: a horizontal or vertical bar near the top/left or bottom/right, shifted by
    up to one pixel. The training set re-draws its shifts from the generator it is given (like a re-distorting set);
    the test set is fixed."""

    image_shape = (1, 12, 12)
    num_classes = 4

    def __init__(self, n: int = 256, seed: int = 0, redistort: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.shifts = torch.randint(-1, 2, (n, 2), generator=g)
        self.redistort = redistort

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices, generator=None):
        y = self.labels[indices]
        if self.redistort and generator is not None:
            shifts = torch.randint(-1, 2, (len(indices), 2), generator=generator)
        else:
            shifts = self.shifts[indices]
        dx, dy = shifts[:, 0].view(-1, 1, 1), shifts[:, 1].view(-1, 1, 1)
        r, c = torch.arange(12).view(1, 12, 1), torch.arange(12).view(1, 1, 12)
        o = torch.where(y < 2, 2, 9).view(-1, 1, 1)
        horizontal = (r == o + dy) & (c >= 2 + dx) & (c < 10 + dx)
        vertical = (c == o + dx) & (r >= 2 + dy) & (r < 10 + dy)
        images = torch.where((y % 2 == 0).view(-1, 1, 1), horizontal, vertical).float().unsqueeze(1)
        return images, y


def toy_datasets():
    return Bars(512, seed=0), Bars(128, seed=1, redistort=False)


def toy_config(**sections):
    """A config for a tiny ST-FCN on :class:`Bars`; ``sections`` update the ``model``/``optim``/``run`` tables."""
    data = {
        "model": {"name": "st_fcn", "transform": "affine", "hidden": [16, 16]},
        "data": {"variant": "plain"},
        "optim": {
            "schedule": "cpu",
            "optimizer": "adam",
            "lr": 0.01,
            "batch_size": 32,
            "iterations": 40,
            "warmup": 0,
            "loc_lr_mult": 0.1,
        },
        "run": {"threads": 1, "log_every": 5, "checkpoint_every": 10},
    }
    for name, values in sections.items():
        data[name].update(values)
    return from_dict(data)
