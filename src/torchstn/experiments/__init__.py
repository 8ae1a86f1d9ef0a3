"""The reproduction wing: everything only a reproduction of the paper's experiments needs, apart from the library.

The library (``torchstn`` without this package) never imports anything here; ``tests/test_layering.py`` checks it.
Inside the wing:

* :mod:`torchstn.experiments.engine`: the one training engine (config, schedules, ``fit``, checkpoints, DDP, AMP,
  exact resume) on which every experiment runs;
* one module or folder per paper experiment (``svhn/``, ``cub/``, ``colocalisation/``); the experiments with a
  results table of MNIST cells are specs (:mod:`~torchstn.experiments.specs`): :mod:`~torchstn.experiments.table1`
  (``table1`` and ``tc``), :mod:`~torchstn.experiments.addition`, :mod:`~torchstn.experiments.volume3d` (``3d``) and
  :mod:`~torchstn.experiments.icstn` (``icstn``, beyond the paper),
  imported here so that their cells are named configs (``torchstn train table1:RTS/st_cnn_affine``) wherever the
  engine is;
* :mod:`~torchstn.experiments.reproduce`, :mod:`~torchstn.experiments.demo`, :mod:`~torchstn.experiments.viz`,
  :mod:`~torchstn.experiments.data_figure` and the command line, :mod:`torchstn.experiments.cli`.

An experiment imports the library and the engine, never another experiment. ``docs/architecture.md`` draws the map.
"""

# The specs register their cells in the paper's order of experiments (Table 1 with TC, addition, 3D): keep it.
from torchstn.experiments import table1  # noqa: F401

# isort: split
from torchstn.experiments import addition  # noqa: F401

# isort: split
from torchstn.experiments import volume3d  # noqa: F401

# isort: split
from torchstn.experiments import icstn  # noqa: F401  (beyond the paper: IC-STN; registers its task)

# isort: split
from torchstn.experiments import colocalisation as colocalisation  # noqa: E402,F401  (registers its task and schedule)
from torchstn.experiments import cub as cub  # noqa: E402,F401  (registers its task and schedules)
from torchstn.experiments import svhn as svhn  # noqa: E402,F401  (registers its task and schedules)
