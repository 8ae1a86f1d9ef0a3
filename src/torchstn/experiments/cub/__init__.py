"""CUB-200-2011 (paper §4.3, Table 3): ``torchstn cub train | eval | show``.

::

    torchstn cub train --root ~/data/CUB_200_2011 --model cub_st_cnn --num-parts 4 \\
        --backbone torchvision:inception_v3 --weights ~/weights/inception_v3.pth --out runs/cub-4x
    torchstn cub eval --checkpoint runs/cub-4x/last.pt
    torchstn cub show --checkpoint runs/cub-4x/last.pt --out parts.png

``train`` trains through the one engine (:func:`~torchstn.experiments.engine.trainer.fit`) with the task ``cub``
(:mod:`torchstn.experiments.cub.task`): the run folder holds ``config.toml``, ``last.pt``, ``metrics.csv`` and
``result.json``; Ctrl-C stops at an iteration boundary and ``--resume`` continues exactly; ``torchrun`` trains on
several processes, ``--amp bf16`` in mixed precision. ``torchstn train my.toml`` trains the same from a config with
``[task] name = "cub"`` (``docs/real_images.md``).

Schedule ``paper`` (the engine preset ``cub_paper``) [S]: SGD, lr 0.1 x0.1 at 10k / 20k / 25k iterations,
localisation lr x1e-4, weight decay 1e-5 (dropout 0.7 is the models' default). Not given by the paper, our choices [?]:
30k iterations, batch 32, momentum 0.9. ``smoke`` (``cub_smoke``): 10 small steps. ``--set key=value`` overrides any
config field (``optim.lr=0.01``, ``task.scale=0.4``, ``run.log_every=10``; a key of one section only needs no
section). Training images: the shorter side resized to ``size * 8 / 7``, random ``size`` crops and flips drawn from
the run's checkpointed generator; evaluation: the central crop (see :mod:`torchstn.experiments.cub.data`).
Pretrained backbones need ``--weights`` (nothing is downloaded); ``--allow-random-init`` trains from scratch, loudly.
"""

from torchstn.experiments.cub.command import get_args_parser, main, run
from torchstn.experiments.cub.evaluation import draw_part_boxes, evaluate, model_from_checkpoint, show
from torchstn.experiments.cub.task import CUBTask
from torchstn.experiments.cub.training import SCHEDULES, train, train_config

__all__ = [
    "SCHEDULES",
    "CUBTask",
    "get_args_parser",
    "main",
    "run",
    "train",
    "train_config",
    "evaluate",
    "show",
    "draw_part_boxes",
    "model_from_checkpoint",
]
