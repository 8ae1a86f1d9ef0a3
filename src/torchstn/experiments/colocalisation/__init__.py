"""Co-localisation (paper Appendix A.2): ``torchstn reproduce colocalisation`` (engine task ``colocalisation``).

An attention spatial transformer (``theta = (s, tx, ty)``) looks at each of ``n = 100`` images of one digit class
(84x84 canvas, optionally cluttered; :class:`~torchstn.data.CoLocalisation`) and learns with no box and no label,
only the paper's triplet hinge loss over the set (:func:`colocalisation_loss`)::

    sum_n sum_{m != n} max(0, |e(T(I_n)) - e(T(I_m))|^2 - |e(T(I_n)) - e(I_n^rand)|^2 + alpha),   alpha = 1

``T(I)`` is the ST's 28x28 crop, ``I_n^rand`` a random 28x28 crop of the same image (redrawn every step) and ``e()``
a frozen MNIST CNN (packaged config ``colocalisation_encoder``, trained by
:func:`torchstn.experiments.engine.trainer.fit`). Success is IoU > 0.5 between the ST's window and the true 28x28
box; the paper: 100% plain, 75-93% cluttered.

Each ``(digit, clutter)`` case is one engine run (:func:`~torchstn.experiments.engine.trainer.fit`) of the task
``colocalisation`` (:class:`CoLocalisationTask`, with its ``[task]`` options :class:`Options`) on the schedule
``colocalisation`` (:data:`SCHEDULE`): DDP, ``run.amp``, clean stops, exact resume, ``metrics.csv`` and
``result.json`` come with it. The files, by concern: :mod:`.window` (the window, its head, the localiser),
:mod:`.loss` (triplet losses, random crops), :mod:`.boxes` (windows as boxes, IoU), :mod:`.encoder` (``e()``),
:mod:`.task` (the task, its options, the schedule), :mod:`.case` (one case: its config and run directory),
:mod:`.table` (table and pictures), :mod:`.reproduce` (the command).

What the paper leaves open [?] and we chose, each from a measurement (``docs/colocalisation.md``):

* ``e()`` = every conv block's pooled activations and the logits, concatenated and **L2-normalised** (:class:`Encoder`).
  Raw activations put squared distances in the thousands (``alpha`` then means nothing) and make a window on blank
  canvas, where every crop is alike, the loss minimum; normalised, the true boxes are the minimum.
* The window stays inside the canvas with a bounded scale (:class:`WindowHead`). Unbounded, the loss is lowest for
  a window that shrinks to a point or grows past the canvas: every crop alike.
* Coarse to fine (:class:`Window`, applied by the task's ``on_step``): the window starts at 50 px (half-size 0.6),
  its scale held in ``[0.5, 0.67]`` (the digit mostly in view: a wide basin), then the bounds move to ``[0.3, 0.4]``
  (25-34 px) between 50% and 80% of training, at a tenth of the lr. Started at 28 px, the windows slide off the
  digits onto blank canvas.
* SGD + momentum on all ``n`` images each step (:data:`SCHEDULE`), the loss averaged over the ``n (n - 1)``
  triplets (the paper's sum over a constant: same minimiser).

Where the paper's text says otherwise, its letter is a task option (:class:`Options`; ``docs/colocalisation.md``,
"Issue 18"): ``pairs`` (random pairs per step), ``rand_size`` (a window-sized ``I^rand``), ``loc_stride`` (the
stride-1, "100k parameter" localiser) and an encoder trained on a distorted set (``encoder``, ``encoder_fit``).
"""

from torchstn.experiments.colocalisation.boxes import (
    attention_boxes,
    box_iou,
    box_stats,
    localisation_rate,
    predict_boxes,
)
from torchstn.experiments.colocalisation.case import (
    STEPS,
    case_config,
    case_name,
    localiser_of,
    run_case,
    train_colocalisation,
)
from torchstn.experiments.colocalisation.encoder import FEATURES, FITS, Encoder, load_encoder
from torchstn.experiments.colocalisation.loss import (
    colocalisation_loss,
    misordered_triplets,
    random_crops,
    random_pairs,
    random_windows,
    triplet_loss,
)
from torchstn.experiments.colocalisation.reproduce import (
    ENCODER_CONFIG,
    Settings,
    get_args_parser,
    main,
    reproduce_colocalisation,
)
from torchstn.experiments.colocalisation.table import PAPER_RATE
from torchstn.experiments.colocalisation.task import RAND_SIZES, SCHEDULE, CoLocalisationTask, Options, window_of
from torchstn.experiments.colocalisation.window import CROP, Window, WindowHead, localiser

__all__ = [
    "PAPER_RATE",
    "SCHEDULE",
    "STEPS",
    "FEATURES",
    "FITS",
    "RAND_SIZES",
    "CROP",
    "ENCODER_CONFIG",
    "Window",
    "WindowHead",
    "localiser",
    "triplet_loss",
    "colocalisation_loss",
    "misordered_triplets",
    "random_crops",
    "random_pairs",
    "random_windows",
    "box_iou",
    "attention_boxes",
    "box_stats",
    "predict_boxes",
    "localisation_rate",
    "Encoder",
    "load_encoder",
    "Options",
    "CoLocalisationTask",
    "window_of",
    "case_config",
    "case_name",
    "run_case",
    "localiser_of",
    "train_colocalisation",
    "Settings",
    "reproduce_colocalisation",
    "get_args_parser",
    "main",
]
