"""Co-localisation on the training engine: the task ``colocalisation`` (:class:`CoLocalisationTask`), its options
(:class:`Options`, the ``[task]`` section) and the SGD schedule ``colocalisation`` (:data:`SCHEDULE`); the config of
one ``(digit, clutter)`` case is :func:`~torchstn.experiments.colocalisation.case.case_config`.

A case trains with :func:`~torchstn.experiments.engine.trainer.fit` like every other experiment, so it has DDP under
``torchrun``, ``run.amp``, clean stops and RNG-exact resume, ``metrics.csv`` and ``result.json``. Each step:

* :meth:`~CoLocalisationTask.batch`: the images of the step (``optim.batch_size`` of the ``n``, from the engine's
  :func:`~torchstn.experiments.engine.data.batch_indices`; with the default batch all ``n`` each step) and the
  negatives ``e(I_n^rand)``, one random crop of each image drawn from the engine's checkpointed generator and
  encoded without gradient;
  With ``task.pairs = N`` it draws ``N`` random pairs ``(n, m)`` instead (the paper's SGD) and keeps only their
  images, each pair with its own random patch of ``I_n``; with ``task.rand_size = "window"`` the patch is a window
  of ``I_n``'s current window size at a random place, read by the ST's sampler in :meth:`~CoLocalisationTask.
  forward` (the place drawn here, the size known only after the localiser has run);
* :meth:`~CoLocalisationTask.on_step`: the coarse-to-fine window bounds of the step (:meth:`Window.scale_at`);
* :meth:`~CoLocalisationTask.loss`: :func:`colocalisation_loss` (mean over the batch's ordered pairs) of the encoded
  ST crops against the negatives; :meth:`~CoLocalisationTask.mistakes` counts the anchors whose triplets are mostly
  in the wrong order (:func:`misordered_triplets` > 0.5: the crop of image ``n`` is nearer its own random crop than
  the crops of most other images): the training ``error`` column of ``metrics.csv``;
* :meth:`~CoLocalisationTask.evaluate` (on the same ``n`` images: the task has no other test set): ``error`` = % of
  the images *not* localised (IoU <= 0.5), with ``rate`` (0..1), ``mean_iou``, ``window_px`` and
  ``centre_error_px`` (``test_<key>`` in ``result.json``) and ``loss`` with random crops drawn from ``run.seed``.

Under ``torchrun`` the global batch is split between the processes (:func:`~torchstn.experiments.engine.distributed.
shard`) and each process's loss is over the ordered pairs *within its share*; DDP averages the gradients. With 2
processes and all ``n`` images per step, a step uses the ``2 (n/2)(n/2 - 1)`` pairs inside the two halves of that
step's permutation instead of all ``n (n - 1)``: every pair is equally likely to fall in one half, so the expected
loss is the one-process loss, but the runs are not the same.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from torchstn._checks import look_up_option
from torchstn.data import CoLocalisation, synthetic_digits
from torchstn.errors import ConfigError, OptionError
from torchstn.experiments.colocalisation.boxes import attention_boxes, box_stats
from torchstn.experiments.colocalisation.ddt import ddt_boxes, ddt_centres, ddt_maps
from torchstn.experiments.colocalisation.encoder import FEATURES, FITS, Encoder, load_encoder
from torchstn.experiments.colocalisation.loss import (
    colocalisation_loss,
    misordered_triplets,
    random_crops,
    random_pairs,
    random_windows,
    triplet_loss,
)
from torchstn.experiments.colocalisation.window import Window, localiser
from torchstn.experiments.engine.evaluation import amp_autocast
from torchstn.experiments.engine.schedules import SCHEDULES, sgd_step_preset
from torchstn.experiments.engine.tasks import TASKS, Task
from torchstn.nn import SpatialTransformer

__all__ = [
    "SCHEDULE",
    "RAND_SIZES",
    "GUIDES",
    "GUIDE_REACH",
    "guide_loss",
    "Options",
    "CoLocalisationTask",
    "window_of",
    "window_options",
]

#: ``task.rand_size``: ``I_n^rand`` a 28x28 pixel crop, or a random window of ``I_n``'s current window size.
RAND_SIZES = ("crop", "window")

#: ``task.guide``: none, or the DDT map's window centres (:mod:`~torchstn.experiments.colocalisation.ddt`) pulling
#: the windows during the coarse phase.
GUIDES = ("none", "ddt")

#: The guide's target is kept within this share of the window centre's reach, ``|tanh| < 1``
#: (:class:`~torchstn.experiments.colocalisation.window.WindowHead`): a target at the limit would saturate it.
GUIDE_REACH = 0.95


def guide_loss(theta: torch.Tensor, centres: torch.Tensor, scale: float) -> torch.Tensor:
    """The guide's term: the mean over the batch of ``|(tx, ty) / (1 - s) - c / (1 - scale)|^2`` for windows
    ``theta (B, 3) = (s, tx, ty)`` and target centres ``c (B, 2)``.

    The window head places a centre at ``(1 - s) tanh(b)`` (:class:`~torchstn.experiments.colocalisation.window.
    WindowHead`), so the term compares ``tanh(b)``, the window's place *relative to its reach*, with the place that
    puts a window of half-size ``scale`` (the fine phase's) on ``c``, clipped to :data:`GUIDE_REACH`. During the
    coarse phase the window then sits proportionally nearer the centre (a 50 px window still holding the digit) and
    lands on ``c`` as it zooms in; comparing ``(tx, ty)`` with ``c`` directly would clip every far target at the
    coarse window's reach and leave the zoomed window short of it.
    """
    relative = theta[:, 1:] / (1.0 - theta[:, :1])  # tanh(b)
    target = (centres / (1.0 - scale)).clamp(-GUIDE_REACH, GUIDE_REACH)
    return (relative - target).square().sum(1).mean()


#: SGD + momentum on all ``n = 100`` images per step; lr x0.1 at half-way, where the zoom of :class:`Window` starts
#: (at the full lr the shrinking windows slide off the digits). Registered as the engine schedule ``colocalisation``.
SCHEDULE: dict[str, Any] = sgd_step_preset(
    lr=0.3, momentum=0.9, weight_decay=0.0, batch_size=100, iterations=200, lr_steps=(100,)
)
SCHEDULES.register("colocalisation", SCHEDULE)


@dataclasses.dataclass(frozen=True)
class Options:
    """The ``[task]`` options of ``colocalisation`` (``--set task.<option>=...``); the set's seed is ``run.seed``.

    Attributes:
        digit: the class of the ``n`` images (0..9).
        clutter: 16 clutter crops of 6x6 on each canvas.
        n: images in the set (the paper: 100); ``optim.batch_size`` of them per step.
        alpha: the triplet margin.
        encoder: run directory (or checkpoint) of the frozen encoder, ``torchstn train colocalisation_encoder``
            or any CNN run (``torchstn train table1:RTS/cnn``: the paper's "CNN ... from Sect. 4.1").
        features, normalise: what the encoder reads, L2-normalised (:class:`Encoder`).
        encoder_fit: how a 28x28 crop meets an encoder trained on larger images (RTS 42x42, TC 60x60):
            ``"pad"`` (black borders: the digit keeps its 28 px) or ``"resize"`` (:data:`FITS`).
        start_scale, coarse_min, coarse_max, fine_min, fine_max, zoom_start, zoom_end, antialias: the window
            (:class:`Window`: ``coarse = (coarse_min, coarse_max)``, ...).
        pairs: ``0`` (default): every ordered pair of the step's images; ``N``: ``N`` random pairs ``(n, m)`` per
            step (the paper's SGD), each with its own random patch of ``I_n``, drawn from the engine's generator.
        rand_size: ``I_n^rand`` is a random 28x28 pixel crop (``"crop"``, default) or a window of the size of
            ``I_n``'s current window at a random place, read to 28x28 like ``T(I_n)`` (``"window"``).
        loc_stride: the stride of the localiser's 9x9 conv: 4 (the paper's "4 pixel stride", 5,947 parameters) or
            1 (93,179: the paper's "100k parameter CNN").
        guide: ``"none"`` (default) or ``"ddt"``: add ``w(step) * guide_loss(theta, c, fine)`` to the loss
            (:func:`guide_loss`), where ``c`` holds each image's DDT centre: the centre of the best fine-sized window
            on its DDT map (:func:`~torchstn.experiments.colocalisation.ddt.ddt_centres`: the encoder's conv
            descriptors over the whole set; no box, no label). ``w`` falls linearly from ``guide_weight`` at step 0
            towards 0 at ``guide_end`` x ``optim.iterations``: with ``guide_end`` < 1 the triplet loss alone moves
            the windows after that; with ``guide_end`` > 1 the guide lasts to the end (its last weight
            ``guide_weight (1 - 1 / guide_end)``).
        guide_weight, guide_end: the guide's starting weight and where it would reach 0 (both > 0).

    Raises:
        ConfigError: a value out of its range (named ``task.<option>``).
    """

    digit: int = 0
    clutter: bool = False
    n: int = 100
    alpha: float = 1.0
    encoder: str | None = None
    features: str = "concat"
    normalise: bool = True
    start_scale: float = 0.6
    coarse_min: float = 0.5
    coarse_max: float = 0.67
    fine_min: float = 0.3
    fine_max: float = 0.4
    zoom_start: float = 0.5
    zoom_end: float = 0.8
    antialias: bool = True
    pairs: int = 0
    rand_size: str = "crop"
    loc_stride: int = 4
    encoder_fit: str = "pad"
    guide: str = "none"
    guide_weight: float = 1.0
    guide_end: float = 2.0

    def __post_init__(self):
        if not 0 <= self.digit <= 9:
            raise ConfigError(f"task.digit must be in 0..9, got {self.digit}")
        if self.n < 2:
            raise ConfigError(f"task.n must be >= 2 (the loss compares pairs of images), got {self.n}")
        if not self.alpha > 0:
            raise ConfigError(f"task.alpha must be > 0, got {self.alpha}")
        look_up_option("task.features", self.features, FEATURES, error=ConfigError)
        look_up_option("task.rand_size", self.rand_size, RAND_SIZES, error=ConfigError)
        look_up_option("task.encoder_fit", self.encoder_fit, FITS, error=ConfigError)
        if self.pairs < 0:
            raise ConfigError(f"task.pairs must be 0 (every pair) or a number of random pairs, got {self.pairs}")
        if self.loc_stride < 1:
            raise ConfigError(f"task.loc_stride must be >= 1, got {self.loc_stride}")
        look_up_option("task.guide", self.guide, GUIDES, error=ConfigError)
        if not self.guide_weight > 0:
            raise ConfigError(f"task.guide_weight must be > 0, got {self.guide_weight}")
        if not self.guide_end > 0:
            raise ConfigError(f"task.guide_end must be > 0 (a multiple of optim.iterations), got {self.guide_end}")
        try:
            window_of(self)
        except OptionError as e:
            raise ConfigError(f"[task] window: {e}") from None


def window_of(options: Options) -> Window:
    """The :class:`Window` of the task options."""
    o = options
    return Window(
        o.start_scale, (o.coarse_min, o.coarse_max), (o.fine_min, o.fine_max), (o.zoom_start, o.zoom_end), o.antialias
    )


def window_options(window: Window) -> dict[str, Any]:
    """The :class:`Options` fields of ``window`` (the inverse of :func:`window_of`)."""
    w = window
    return {
        "start_scale": w.start_scale,
        "coarse_min": w.coarse[0],
        "coarse_max": w.coarse[1],
        "fine_min": w.fine[0],
        "fine_max": w.fine[1],
        "zoom_start": w.zoom[0],
        "zoom_end": w.zoom[1],
        "antialias": w.antialias,
    }


@TASKS.register("colocalisation")
class CoLocalisationTask(Task):
    """Co-localisation (Appendix A.2) as an engine task: see the module docstring."""

    Options = Options
    variants = ("colocalisation",)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.window = window_of(self.options)
        self._encoders: dict[str, Encoder] = {}
        # (crops, their features, the negatives' features or None) of the last loss, for mistakes
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._guide: tuple[Any, torch.Tensor] | None = None  # (the dataset, its DDT window centres (n, 2))
        self._step = 0  # the step of on_step: the guide's weight

    def guide_centres(self, dataset: Any) -> torch.Tensor:
        """``(n, 2)`` the DDT window centres (normalised ``(x, y)``) of every image of ``dataset``, computed once
        (:mod:`~torchstn.experiments.colocalisation.ddt`): the best window of the fine phase's mean size on each
        image's DDT map, the map's direction taken over the whole set."""
        if self._guide is None or self._guide[0] is not dataset:  # held, so no other set can take its place
            images, _ = dataset.batch(torch.arange(len(dataset)))
            size = tuple(images.shape[-2:])
            self._guide = dataset, ddt_centres(ddt_maps(self.encoder(), images), size, self.guide_box(size))
        return self._guide[1]

    @property
    def guide_scale(self) -> float:
        """The half-size the guide places windows for: the fine phase's mean."""
        return sum(self.window.fine) / 2

    def guide_box(self, size: tuple[int, ...]) -> int:
        """The side in pixels of the windows :meth:`guide_centres` places: the fine phase's mean window."""
        return max(1, round(self.guide_scale * min(size)))

    def guide_weight(self, step: int) -> float:
        """The guide's weight at ``step``: ``guide_weight`` falling linearly towards 0 at ``guide_end`` x
        ``optim.iterations``, never below 0 (0 without a guide)."""
        o = self.options
        if o.guide == "none":
            return 0.0
        end = o.guide_end * self.cfg.optim.iterations
        return o.guide_weight * max(0.0, 1.0 - step / end)

    def encoder(self, device: torch.device | str = "cpu") -> Encoder:
        """The frozen encoder on ``device`` (loaded once from ``task.encoder``).

        Raises:
            ConfigError: ``task.encoder`` is not set.
            DataError: its checkpoint is missing or damaged.
        """
        if "cpu" not in self._encoders:
            o = self.options
            if not o.encoder:
                raise ConfigError(
                    "task.encoder is not set: train the encoder with `torchstn train "
                    "colocalisation_encoder --out runs/colocalisation/encoder`, then --set "
                    "task.encoder=runs/colocalisation/encoder"
                )
            self._encoders["cpu"] = load_encoder(o.encoder, o.features, o.normalise, fit=o.encoder_fit)
        key = str(torch.device(device))
        if key not in self._encoders:  # a copy per device; the CPU one encodes the negatives drawn on the CPU
            self._encoders[key] = _moved(self._encoders["cpu"], device)
        return self._encoders[key]

    def datasets(self, *, train: bool = True, test: bool = True) -> tuple[Any, Any]:
        o, d = self.options, self.cfg.data
        if train:
            if self.cfg.optim.batch_size is not None and self.cfg.optim.batch_size > o.n:
                raise ConfigError(
                    f"optim.batch_size ({self.cfg.optim.batch_size}) must be at most task.n ({o.n}): a "
                    "step's triplets are over distinct images"
                )
            self.encoder()  # a missing encoder fails now, not at the first step
        source = synthetic_digits(d.synthetic, seed=2) if d.synthetic else None
        data = CoLocalisation(o.digit, n=o.n, clutter=o.clutter, seed=self.cfg.run.seed, root=d.root, source=source)
        return (data if train else None), (data if test else None)

    def build_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return localiser(in_shape[-2:], self.window, stride=self.options.loc_stride)

    @property
    def every_pair(self) -> bool:
        """Today's step (the default options): every ordered pair, 28x28 crops encoded in :meth:`batch`."""
        o = self.options
        return o.pairs == 0 and o.rand_size == "crop" and o.guide == "none"

    def batch(self, train_set: Any, indices: torch.Tensor, generator: torch.Generator) -> tuple[Any, Any]:
        """``(images, e(I^rand) (B, F))`` with the default options; else ``((images, owners, rand), (anchors,
        positives, guide))``: the images the step needs, for each negative the position of its image ``I_n`` and
        its draw (a 28x28 pixel crop, or a place in ``[-1, 1]^2`` for a window-sized patch, read in
        :meth:`forward`), the positions of the sampled pairs (empty: every ordered pair) and the images' DDT
        centres (``task.guide``; else empty)."""
        o = self.options
        if self.every_pair:
            images, _ = train_set.batch(indices)  # a fixed set
            with torch.no_grad():
                negatives = self.encoder(images.device)(random_crops(images, generator))  # (B, F): e(I^rand)
            return images, negatives
        if o.pairs:
            anchors, positives = random_pairs(len(indices), o.pairs, generator)
            used, where = torch.unique(torch.cat((anchors, positives)), return_inverse=True)
            anchors, positives = where[: o.pairs], where[o.pairs :]  # positions in the images used
            indices = indices[used]
            images, _ = train_set.batch(indices)
            owners = anchors  # a negative per pair, of its anchor's image
        else:
            images, _ = train_set.batch(indices)
            owners = torch.arange(len(indices))
            anchors = positives = torch.zeros(0, dtype=torch.long)
        guide = self.guide_centres(train_set)[indices] if o.guide != "none" else torch.zeros(0, 2)
        if o.rand_size == "window":
            rand = torch.rand(len(owners), 2, generator=generator) * 2.0 - 1.0  # places, read in forward
        else:
            rand = random_crops(images[owners], generator)
        return (images, owners, rand), (anchors, positives, guide)

    def forward(self, net: nn.Module, inputs: Any) -> Any:
        """The ST crops; with other than the default options ``(crops, theta, I^rand patches)``."""
        if self.every_pair:
            return net(inputs)
        images, owners, rand = inputs
        crops, theta = net(images, return_theta=True)
        if self.options.rand_size == "window":
            st = cast(SpatialTransformer, getattr(net, "module", net))  # under DDP the wrapped model
            with torch.no_grad():
                rand = st.warp(images[owners], random_windows(theta.detach()[owners], rand))
        return crops, theta, rand

    def on_step(self, model: nn.Module, step: int) -> None:
        self._step = step
        lo, hi = self.window.scale_at(step, self.cfg.optim.iterations)
        with torch.no_grad():
            model.get_submodule("head").get_buffer("scale").copy_(torch.tensor([lo, hi]))

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The mean triplet term over the step's pairs (every ordered pair, or the sampled ones), plus the guide's
        term (``task.guide``) while its weight is above 0."""
        if self.every_pair:
            features = self.encoder(outputs.device)(outputs.float())
            self._last = (outputs, features.detach(), None)
            return colocalisation_loss(features, targets.float(), self.options.alpha, reduction="mean")
        crops, theta, rand = outputs
        encoder = self.encoder(crops.device)
        features = encoder(crops.float())
        with torch.no_grad():
            negatives = encoder(rand.float())  # (B or P, F): e(I^rand), no gradient
        self._last = (crops, features.detach(), negatives)
        anchors, positives, guide = targets
        if anchors.numel() == 0:
            loss = colocalisation_loss(features, negatives, self.options.alpha, reduction="mean")
        else:
            loss = triplet_loss(features[anchors], features[positives], negatives, self.options.alpha, "mean")
        weight = self.guide_weight(self._step)
        if guide.numel() and weight > 0:
            loss = loss + weight * guide_loss(theta.float(), guide, self.guide_scale)
        return loss

    def mistakes(self, outputs: Any, targets: Any) -> tuple[int, int]:
        """``(wrong, items)``: the anchors with most of their triplets misordered (every pair), or the sampled
        triplets misordered (``task.pairs``)."""
        crops = outputs if self.every_pair else outputs[0]
        last, self._last = self._last, None
        with torch.no_grad():
            encoder = self.encoder(crops.device)
            features = last[1] if last is not None and last[0] is crops else encoder(crops.float())
            if self.every_pair:
                negatives = targets.float()
            elif last is not None and last[0] is crops and last[2] is not None:
                negatives = last[2]
            else:
                negatives = encoder(outputs[2].float())
        if self.every_pair or targets[0].numel() == 0:
            share = misordered_triplets(features, negatives)
            return int((share > 0.5).sum()), int(share.numel())
        anchors, positives, _ = targets
        beyond = triplet_loss(features[anchors], features[positives], negatives, 0.0, "none")
        return int((beyond > 0).sum()), int(anchors.numel())

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        dataset: Any,
        *,
        batch_size: int,
        device: torch.device,
        limit: int = 0,
        amp: str = "off",
        progress: Any = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, float] | None:
        n = len(dataset) if limit <= 0 else min(limit, len(dataset))
        images, _ = dataset.batch(torch.arange(n))
        windows = _windows(model, images, batch_size, device, amp, progress, should_stop)
        if windows is None:
            return None
        crops, theta = windows
        stats = box_stats(attention_boxes(theta, images.shape[-2:]), dataset.boxes[:n])
        loss = float("nan")
        if n >= 2:  # over every ordered pair, whatever task.pairs
            encoder, g = self.encoder(device), torch.Generator().manual_seed(self.cfg.run.seed)
            if self.options.rand_size == "window":
                places = torch.rand(n, 2, generator=g) * 2.0 - 1.0
                rand = cast(SpatialTransformer, model).warp(images.to(device), random_windows(theta, places).to(device))
            else:
                rand = random_crops(images, g).to(device)
            loss = float(colocalisation_loss(encoder(crops), encoder(rand.float()), self.options.alpha))
        out = {"loss": loss, "error": 100.0 * (1.0 - stats["rate"]), "n": n, **stats}
        if self.options.guide != "none":  # the guide's own windows, for comparison: DDT alone
            size = tuple(images.shape[-2:])
            box = self.guide_box(size)
            guide = box_stats(ddt_boxes(self.guide_centres(dataset)[:n], size, box), dataset.boxes[:n])
            out["guide_rate"] = guide["rate"]
        return out

    def describe(self, in_shape: tuple[int, ...]) -> str:
        o = self.options
        return (
            f"co-localisation of digit {o.digit} ({'cluttered' if o.clutter else 'plain'}, {o.n} images "
            f"{tuple(in_shape)}), encoder {o.encoder} ({o.features}), "
            + (f"{o.pairs} random pairs" if o.pairs else "every pair")
            + f" per step, {o.rand_size}-sized I^rand, localiser stride {o.loc_stride}"
        )


def _moved(encoder: Encoder, device: torch.device | str) -> Encoder:
    """A copy of ``encoder`` on ``device``."""
    moved = copy.deepcopy(encoder).to(device)
    moved.source = encoder.source
    return moved


def _windows(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: str,
    progress: Any,
    should_stop: Callable[[], bool] | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ST's crops ``(N, 1, 28, 28)`` (float32, on ``device``) and thetas ``(N, 3)`` (float32, CPU) of
    ``images``, in batches; ``None`` when ``should_stop`` abandoned it."""
    was_training = model.training
    model.eval()
    crops, thetas = [], []
    try:
        for start in range(0, images.shape[0], batch_size):
            if should_stop is not None and should_stop():
                return None
            with amp_autocast(device, amp):
                crop, theta = model(images[start : start + batch_size].to(device), return_theta=True)
            crops.append(crop.float())
            thetas.append(theta.float().cpu())
            if progress is not None:
                progress.update(min(images.shape[0], start + batch_size))
    finally:
        model.train(was_training)
        if progress is not None:
            progress.close()
    return torch.cat(crops), torch.cat(thetas)
