"""Co-localisation (paper Appendix A.2): ``torchstn reproduce colocalisation``.

An attention spatial transformer (``theta = (s, tx, ty)``) looks at each of ``n = 100`` images of one digit class
(84x84 canvas, optionally cluttered; :class:`~torchstn.data.datasets.CoLocalisation`) and learns with no box and no
label, only the paper's triplet hinge loss over the set (:func:`colocalisation_loss`)::

    sum_n sum_{m != n} max(0, |e(T(I_n)) - e(T(I_m))|^2 - |e(T(I_n)) - e(I_n^rand)|^2 + alpha),   alpha = 1

``T(I)`` is the ST's 28x28 crop, ``I_n^rand`` a random 28x28 crop of the same image (redrawn every step) and ``e()``
a frozen MNIST CNN (packaged config ``colocalisation_encoder``, trained by :func:`torchstn.experiments.engine.trainer.fit`).
Success is IoU > 0.5 between the ST's window and the true 28x28 box; the paper: 100% plain, 75-93% cluttered.

What the paper leaves open [?] and we chose, each from a measurement (``docs/colocalisation.md``):

* ``e()`` = every conv block's pooled activations and the logits, concatenated and **L2-normalised** (:class:`Encoder`).
  Raw activations put squared distances in the thousands (``alpha`` then means nothing) and make a window on blank
  canvas, where every crop is alike, the loss minimum; normalised, the true boxes are the minimum.
* The window stays inside the canvas with a bounded scale (:class:`WindowHead`). Unbounded, the loss is lowest for
  a window that shrinks to a point or grows past the canvas: every crop alike.
* Coarse to fine (:class:`Window`): the window starts at 50 px (half-size 0.6), its scale held in ``[0.5, 0.67]``
  (the digit mostly in view: a wide basin), then the bounds move to ``[0.3, 0.4]`` (25-34 px) between 50% and 80%
  of training, at a tenth of the lr. Started at 28 px, the windows slide off the digits onto blank canvas.
* SGD + momentum on all ``n`` images each step (:data:`SCHEDULE`, through :func:`torchstn.experiments.train_loop`),
  the loss averaged over the ``n (n - 1)`` triplets (the paper's sum over a constant: same minimiser).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from torchstn.errors import ConfigError, OptionError
from torchstn.experiments.sgd_loop import SGDSchedule, load_run, override, train_loop
from torchstn.nn import SpatialTransformer, param_groups
from torchstn.experiments.colocalisation.parts import (
    FEATURES,
    Encoder,
    Window,
    WindowHead,
    attention_boxes,
    box_iou,
    colocalisation_loss,
    load_encoder,
    localiser,
    random_crops,
    triplet_loss,
)
from torchstn.experiments.engine.runs import display_path

__all__ = ["PAPER_RATE", "SCHEDULE", "FEATURES", "Window", "triplet_loss", "colocalisation_loss", "box_iou",
           "attention_boxes", "Encoder", "load_encoder", "WindowHead", "localiser", "random_crops",
           "predict_boxes", "train_colocalisation", "localisation_rate", "reproduce_colocalisation",
           "get_args_parser", "main"]  # fmt: skip

#: The paper's share of images localised (IoU > 0.5), in %, without / with clutter (it gives no per-digit numbers).
PAPER_RATE = {False: "100", True: "75-93"}
#: SGD + momentum on all ``n`` images per step; lr x0.1 at half-way, where the zoom of :class:`Window` starts (at the
#: full lr the shrinking windows slide off the digits). 200 steps: 30-35 s per case on one (shared) CPU thread.
SCHEDULE = SGDSchedule("colocalisation", lr=0.3, momentum=0.9, weight_decay=0.0, batch_size=100, iterations=200,
                       lr_steps=(100,), gamma=0.1, loc_lr_mult=1.0)  # fmt: skip
ENCODER_CONFIG = "colocalisation_encoder"


def _dataset(digit: int, clutter: bool, seed: int, n: int, root, source):
    from torchstn.data.datasets import CoLocalisation

    return CoLocalisation(digit, n=n, clutter=clutter, seed=seed, root=root, source=source)


@torch.no_grad()
def predict_boxes(st: SpatialTransformer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The ST's windows on ``images (N, 1, H, W)`` as pixel-edge boxes ``(N, 4)`` (:func:`attention_boxes`)."""
    thetas = [st.predict_theta(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return attention_boxes(torch.cat(thetas), images.shape[-2:])


def localisation_rate(st: SpatialTransformer, dataset, threshold: float = 0.5) -> dict[str, float]:
    """How well ``st`` localises the digits of a :class:`~torchstn.data.datasets.CoLocalisation` set.

    Returns:
        ``{"rate": share of the images with IoU > threshold (0..1), "mean_iou", "window_px": mean window side in
        pixels, "centre_error_px": median distance between the window's and the box's centres}``.
    """
    images, _ = dataset.batch(torch.arange(len(dataset)))
    boxes = predict_boxes(st, images).double()
    truth = dataset.boxes.double()
    iou = box_iou(boxes, truth)
    offset = ((boxes[:, :2] + boxes[:, 2:]) / 2 - (truth[:, :2] + truth[:, 2:]) / 2).norm(dim=1)
    return {"rate": float((iou > threshold).double().mean()), "mean_iou": float(iou.mean()),
            "window_px": float((boxes[:, 2] - boxes[:, 0]).mean()),
            "centre_error_px": float(offset.median())}  # fmt: skip


def train_colocalisation(digit: int, *, clutter: bool, encoder: Encoder, steps: int = SCHEDULE.iterations,
                         seed: int = 0, n: int = 100, alpha: float = 1.0, window: Window = Window(),
                         schedule: SGDSchedule = SCHEDULE, overrides: Sequence[str] = (), out_dir=None,
                         resume: bool = False, root=None, source=None, log: Callable[[str], None] | None = print,
                         log_every: int = 20, eval_every: int = 0) -> SpatialTransformer:  # fmt: skip
    """Train a :func:`localiser` on ``n`` images of ``digit`` with :func:`colocalisation_loss` alone, through
    :func:`torchstn.experiments.train_loop`: ``out_dir`` (a temporary folder if ``None``) gets ``last.pt``,
    ``metrics.jsonl`` and ``result.json`` with the final :func:`localisation_rate`.

    Each step: the batch's images (all ``n`` by default), one fresh random crop of each, seeded by ``(seed, step)``
    (a resumed run draws the same crops), encoded without gradient as the negatives; the window's upper scale bound
    follow ``window.scale_at(step)``.

    Args:
        digit, clutter, seed, n, root, source: the :class:`~torchstn.data.datasets.CoLocalisation` set.
        encoder: the frozen ``e()``.
        steps: SGD steps (the schedule's ``lr_steps`` move with them).
        schedule, overrides: :data:`SCHEDULE` and ``key=value`` changes to it (:func:`torchstn.experiments.override`).
        resume: continue (or just re-evaluate) the run in ``out_dir``.

    Returns:
        The trained spatial transformer, in eval mode.

    Raises:
        ConfigError: resuming a run made with other settings (data, encoder, window or schedule).
    """
    schedule = override(schedule, [f"iterations={int(steps)}", *overrides])
    data = _dataset(digit, clutter, seed, n, root, source)
    images, _ = data.batch(torch.arange(len(data)))  # (n, 1, H, W): a fixed set
    torch.manual_seed(seed)
    st = localiser(images.shape[-2:], window)
    batch_size = min(schedule.batch_size, len(data))

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        st.head.scale.copy_(torch.tensor(window.scale_at(step, schedule.iterations)))
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randperm(len(data), generator=g)[:batch_size]
        x = images[index]
        with torch.no_grad():
            negatives = encoder(random_crops(x, g))  # (B, F): e(I^rand)
        return x, negatives

    def loss_fn(crops: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return colocalisation_loss(encoder(crops), negatives, alpha, reduction="mean")

    def evaluate(model: nn.Module) -> dict:
        model.head.scale.copy_(torch.tensor(window.scale_at(schedule.iterations, schedule.iterations)))
        return localisation_rate(model, data)

    meta = {"task": "colocalisation", "digit": digit, "clutter": bool(clutter), "n": n, "seed": seed, "alpha": alpha,
            "encoder": encoder.source, "features": encoder.features, "normalise": encoder.normalise,
            "window": json.loads(json.dumps(dataclasses.asdict(window)))}  # fmt: skip
    with tempfile.TemporaryDirectory() if out_dir is None else contextlib.nullcontext(out_dir) as folder:
        last = Path(folder) / "last.pt"
        if resume and last.exists() and load_run(last)["meta"] != meta:
            raise ConfigError(f"{last} was trained with {load_run(last)['meta']}, not {meta}; use another out_dir")
        train_loop(st, batch=batch, loss_fn=loss_fn, schedule=schedule, groups=param_groups(st, schedule.lr,
                   schedule.loc_lr_mult), out_dir=folder, meta=meta, resume=resume, evaluate=evaluate,
                   eval_every=eval_every, log_every=log_every, checkpoint_every=0, log=log)  # fmt: skip
    return st.eval()


def _encoder(out: Path, checkpoint, features: str, overrides: Sequence[str], synthetic: int, root,
             say: Callable[[str], None]) -> tuple[Encoder, dict]:  # fmt: skip
    """The encoder of ``checkpoint``, else the one in ``out/encoder`` (trained there first if it is not finished)."""
    from torchstn.experiments.engine.config_io import load_config
    from torchstn.experiments.engine.trainer import fit

    if checkpoint is None:
        checkpoint = out / "encoder"
        if not (checkpoint / "result.json").is_file():
            extra = [f"data.synthetic={synthetic}"] if synthetic else []
            extra += [f"data.root={root}"] if root else []
            cfg = load_config(ENCODER_CONFIG, [*extra, *overrides])
            command = f"torchstn train {ENCODER_CONFIG} --out {display_path(checkpoint)}" + "".join(
                f" --set {o}" for o in [*extra, *overrides])
            say(f"training the encoder: {command}")
            fit(cfg, checkpoint, resume="auto", progress=False, command=command)
    encoder = load_encoder(checkpoint, features)
    result_file = Path(encoder.source).parent / "result.json"
    info = json.loads(result_file.read_text()) if result_file.is_file() else {}
    return encoder, {"path": encoder.source, "test_error": info.get("test_error"), "command": info.get("command")}


def _case_name(digit: int, clutter: bool) -> str:
    return f"digit{digit}_{'cluttered' if clutter else 'plain'}"


def _write_tables(rows: list[dict], out: Path, header: list[str]) -> None:
    cols = ["digit", "clutter", "rate", "paper", "mean_iou", "centre_error_px", "window_px", "steps", "train_s"]
    with open(out / "colocalisation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in cols})
    lines = [*header, "", ("| Digit | Clutter | IoU > 0.5 (ours) | Paper | Mean IoU | Centre error (px, median) | "
                           "Window (px) | Steps | Train time |"), "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['digit']} | {'yes' if r['clutter'] else 'no'} | {r['rate']:.0f}% | {r['paper']}% | "
                     f"{r['mean_iou']:.2f} | {r['centre_error_px']:.1f} | {r['window_px']:.1f} | {r['steps']} | "
                     f"{r['train_s']:.0f} s |")  # fmt: skip
    for clutter in sorted({r["clutter"] for r in rows}):
        rates = [r["rate"] for r in rows if r["clutter"] == clutter]
        lines.append(f"\n{'Cluttered' if clutter else 'Plain'}: mean {sum(rates) / len(rates):.1f}% over "
                     f"{len(rates)} digit(s), range {min(rates):.0f}-{max(rates):.0f}% (paper {PAPER_RATE[clutter]}%).")
    (out / "colocalisation.md").write_text("\n".join(lines) + "\n")


def _picture(shown: dict[int, tuple], clutter: bool, path: Path, cols: int = 6) -> Path | None:
    """Images of a few digits with the true box (green) and the ST's window (red), IoU in the titles."""
    if not shown:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        return None
    rows = len(shown)
    cols = min(cols, min(v[0].shape[0] for v in shown.values()))
    fig = Figure(figsize=(1.4 * cols, 1.55 * rows), dpi=80)
    FigureCanvasAgg(fig)
    for r, (digit, (images, truth, boxes)) in enumerate(sorted(shown.items())):
        iou = box_iou(boxes.double(), truth.double())
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.set_axis_off()
            ax.imshow(images[c, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            for box, colour in ((truth[c], "lime"), (boxes[c], "red")):
                x1, y1, x2, y2 = box.tolist()  # pixel edges; imshow puts pixel centres at integers
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=1))
            ax.set_title(f"{digit}: IoU {float(iou[c]):.2f}", fontsize=7)
    fig.suptitle(f"co-localisation, {'cluttered' if clutter else 'plain'}: true box green, ST window red", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def reproduce_colocalisation(out_dir: str | Path, *, digits: Iterable[int] = range(10),
                             clutter: Iterable[bool] = (False, True), steps: int = SCHEDULE.iterations,
                             encoder_checkpoint: str | Path | None = None, seed: int = 0, n: int = 100,
                             features: str = "concat", encoder_overrides: Sequence[str] = (), synthetic: int = 0,
                             root: str | None = None, picture_digits: int = 4, resume: bool = True,
                             say: Callable[[str], None] | None = print) -> list[dict]:  # fmt: skip
    """Run the co-localisation experiment for every ``(digit, clutter)`` case and write ``out_dir/colocalisation.md``
    and ``.csv`` (ours against the paper) and ``colocalisation_plain.png`` / ``colocalisation_cluttered.png``
    (windows on the images of the first ``picture_digits`` digits; needs matplotlib, else skipped).

    Args:
        out_dir: results; runs go to ``out_dir/runs/<case>`` and, with no ``encoder_checkpoint``, the encoder is
            trained into ``out_dir/encoder`` first (packaged config ``colocalisation_encoder``; reused when done).
        steps: SGD steps per case.
        features: what the encoder reads (:class:`Encoder`).
        encoder_overrides: ``key=value`` changes to the encoder's config.
        synthetic: use synthetic seven-segment digits (this many) instead of MNIST, for the encoder and the sets:
            an offline smoke run, not a result.
        resume: reuse or continue finished / interrupted cases in ``out_dir``.

    Returns:
        One row per case: ``digit``, ``clutter``, ``rate`` (% IoU > 0.5), ``paper``, ``mean_iou``,
        ``centre_error_px``, ``window_px``, ``steps``, ``train_s``.

    Raises:
        ConfigError: an existing case in ``out_dir`` made with other settings.
        DataError: MNIST (or the encoder checkpoint) cannot be loaded.
    """
    say = say or (lambda _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits, clutters = [int(d) for d in digits], [bool(c) for c in clutter]
    source = None
    if synthetic:
        from torchstn.data.synthetic import synthetic_digits

        source = synthetic_digits(synthetic, seed=2)
    encoder, encoder_info = _encoder(out, encoder_checkpoint, features, encoder_overrides, synthetic, root, say)
    say(f"encoder {encoder_info['path']} (test error {encoder_info['test_error']}%), features {features}")
    rows, shown = [], {c: {} for c in clutters}
    for clut in clutters:
        for digit in digits:
            t0 = time.perf_counter()
            st = train_colocalisation(digit, clutter=clut, encoder=encoder, steps=steps, seed=seed, n=n,
                                      out_dir=out / "runs" / _case_name(digit, clut), resume=resume, root=root,
                                      source=source, log=None)  # fmt: skip
            train_s = time.perf_counter() - t0
            result = json.loads((out / "runs" / _case_name(digit, clut) / "result.json").read_text())
            rows.append({"digit": digit, "clutter": clut, "rate": 100.0 * result["rate"], "paper": PAPER_RATE[clut],
                         "mean_iou": result["mean_iou"], "centre_error_px": result["centre_error_px"],
                         "window_px": result["window_px"], "steps": result["step"], "train_s": train_s})  # fmt: skip
            say(f"digit {digit} {'cluttered' if clut else 'plain'}: {rows[-1]['rate']:.0f}% IoU > 0.5 "
                f"(mean IoU {result['mean_iou']:.2f}) in {train_s:.0f} s")
            if len(shown[clut]) < picture_digits:
                data = _dataset(digit, clut, seed, n, root, source)
                images, _ = data.batch(torch.arange(min(len(data), 6)))
                shown[clut][digit] = (images, data.boxes[: len(images)], predict_boxes(st, images))
    v = _version()
    command = (f"torchstn reproduce colocalisation --out {display_path(out)} --steps {steps} --seed {seed} --n {n} "
               f"--features {features} --digits {','.join(map(str, digits))} "
               f"--clutter {'both' if len(clutters) == 2 else ('cluttered' if clutters[0] else 'plain')}"
               + (f" --encoder {display_path(encoder_checkpoint)}" if encoder_checkpoint else "")
               + (f" --synthetic {synthetic}" if synthetic else ""))  # fmt: skip
    header = ["# Co-localisation (paper Appendix A.2)", "",
              (f"Share of the {n} images of each set whose ST window has IoU > 0.5 with the true 28x28 box. "
               f"torchstn {v['torchstn']} (git {v['git'] or 'unknown'}), torch {v['torch']}, "
               f"{torch.get_num_threads()} thread(s), {datetime.date.today().isoformat()}."), "",
              f"Command: `{command}`", "",
              (f"Encoder: `{display_path(encoder_info['path'])}`, test error {encoder_info['test_error']}% "
               f"(`{encoder_info['command'] or 'given'}`); features `{features}`, L2-normalised."),
              *(["", "**Synthetic digits: a smoke run, not a result.**"] if synthetic else [])]  # fmt: skip
    _write_tables(rows, out, header)
    for clut in clutters:
        pic = _picture(shown[clut], clut, out / f"colocalisation_{'cluttered' if clut else 'plain'}.png")
        if pic is not None:
            with open(out / "colocalisation.md", "a") as f:
                f.write(f"\n![{pic.stem}]({pic.name})\n")
    say(f"wrote {out / 'colocalisation.md'} and {out / 'colocalisation.csv'}")
    return rows


def _version() -> dict:
    from torchstn.experiments.engine.checkpoint import code_version

    return code_version()


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The arguments of ``torchstn reproduce colocalisation``."""
    parser = parser or argparse.ArgumentParser(prog="torchstn reproduce colocalisation",
                                               description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--out", default="runs/colocalisation", help="results folder (runs go inside)")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="comma-separated classes (default all)")
    parser.add_argument("--clutter", default="both", choices=("both", "plain", "cluttered"),
                        help="which sets: plain, cluttered or both (default)")
    parser.add_argument("--steps", type=int, default=SCHEDULE.iterations, help="SGD steps per case")
    parser.add_argument("--encoder", default=None, help="encoder run folder or checkpoint (default: train one)")
    parser.add_argument("--features", default="concat", choices=FEATURES,
                        help="what the encoder reads (default concat)")
    parser.add_argument("--encoder-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the encoder config, e.g. optim.iterations=3000")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sets and crops (default 0)")
    parser.add_argument("--n", type=int, default=100, help="images per set (paper: 100)")
    parser.add_argument("--synthetic", type=int, default=0, help="smoke run on this many synthetic digits")
    parser.add_argument("--root", default=None, help="folder of the MNIST IDX files")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--fresh", action="store_true", help="retrain cases already in --out")
    return parser


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run :func:`reproduce_colocalisation` from parsed (or raw) arguments; returns 0."""
    if not isinstance(args, argparse.Namespace):
        args = get_args_parser().parse_args(args)
    try:
        digits = [int(d) for d in str(args.digits).split(",") if d.strip()]
    except ValueError:
        raise OptionError(f"--digits must be comma-separated ints, got {args.digits!r}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    clutter = {"both": (False, True), "plain": (False,), "cluttered": (True,)}[args.clutter]
    reproduce_colocalisation(args.out, digits=digits, clutter=clutter, steps=args.steps,
                             encoder_checkpoint=args.encoder, seed=args.seed, n=args.n, features=args.features,
                             encoder_overrides=args.encoder_set, synthetic=args.synthetic, root=args.root,
                             resume=not args.fresh)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
