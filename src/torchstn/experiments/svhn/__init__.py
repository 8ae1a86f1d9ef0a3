"""SVHN (paper §4.2, Table 2): ``torchstn svhn prepare | train | eval``.

::

    torchstn svhn prepare --src ~/data/svhn --out ~/data/svhn-cache --size 64
    torchstn svhn train --data ~/data/svhn-cache --model svhn_st_cnn_multi --out runs/svhn64-multi
    torchstn svhn eval --data ~/data/svhn-cache --checkpoint runs/svhn64-multi/last.pt --split test

The experiment in five files:

* :mod:`~torchstn.experiments.svhn.prepare`: read the format-1 release, cache the crops;
* :mod:`~torchstn.experiments.svhn.data`: read the cache as the engine's dataset;
* :mod:`~torchstn.experiments.svhn.models`: the paper's CNN, ST-CNN Single and Multi;
* :mod:`~torchstn.experiments.svhn.task`: the ``svhn`` task and schedules through which the training engine trains
  them, so a run has ``--resume``, ``run.amp``, ``torchrun``, ``metrics.csv``, ``last.pt`` and ``result.json`` as
  every engine run has;
* :mod:`~torchstn.experiments.svhn.command`: the command, and its functions :func:`train` and :func:`evaluate`.

A config file trains it too: ``torchstn train CONFIG`` with ``[task] name = "svhn"``, ``[data] variant = "svhn"`` and
``root`` = the cache folder.
"""

from torchstn.experiments.svhn.command import (
    evaluate,
    get_args_parser,
    main,
    model_from_checkpoint,
    run,
    svhn_config,
    train,
)
from torchstn.experiments.svhn.task import SCHEDULES, SVHNOptions, SVHNTask

__all__ = [
    "SCHEDULES",
    "SVHNTask",
    "SVHNOptions",
    "svhn_config",
    "train",
    "evaluate",
    "model_from_checkpoint",
    "get_args_parser",
    "main",
    "run",
]
