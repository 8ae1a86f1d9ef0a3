"""``torchstn reproduce colocalisation``: the encoder, then every ``(digit, clutter)`` case through
:func:`~torchstn.experiments.engine.trainer.fit`, then the table and pictures; and :func:`train_colocalisation`, one
case from Python.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from torchstn.errors import ConfigError, DataError, OptionError
from torchstn.experiments.colocalisation.boxes import predict_boxes
from torchstn.experiments.colocalisation.encoder import FEATURES, Encoder, load_encoder
from torchstn.experiments.colocalisation.table import PAPER_RATE, add_pictures, write_tables
from torchstn.experiments.colocalisation.task import SCHEDULE, CoLocalisationTask, case_config, window_options
from torchstn.experiments.colocalisation.window import Window
from torchstn.experiments.engine.checkpoint import code_version
from torchstn.experiments.engine.config import TrainConfig, from_dict
from torchstn.experiments.engine.runs import checkpoint_path, display_path, load_run
from torchstn.experiments.engine.trainer import config_differences, fit
from torchstn.nn import SpatialTransformer

__all__ = [
    "ENCODER_CONFIG",
    "case_name",
    "run_case",
    "reproduce_colocalisation",
    "train_colocalisation",
    "get_args_parser",
    "main",
]

ENCODER_CONFIG = "colocalisation_encoder"
STEPS = SCHEDULE["iterations"]


def case_name(digit: int, clutter: bool) -> str:
    """The run directory name of a case: ``digit3_plain``, ``digit3_cluttered``."""
    return f"digit{digit}_{'cluttered' if clutter else 'plain'}"


def _encoder(
    out: Path, checkpoint, features: str, overrides: Sequence[str], synthetic: int, root, say: Callable[[str], None]
) -> dict[str, Any]:
    """``{"path", "test_error", "command"}`` of the encoder of ``checkpoint``, else of the one in ``out/encoder``
    (trained there first by :func:`fit` from the packaged config if it is not finished). Loaded once to check it."""
    from torchstn.experiments.engine.config_io import load_config

    if checkpoint is None:
        checkpoint = out / "encoder"
        if not (checkpoint / "result.json").is_file():
            extra = [f"data.synthetic={synthetic}"] if synthetic else []
            extra += [f"data.root={root}"] if root else []
            cfg = load_config(ENCODER_CONFIG, [*extra, *overrides])
            command = f"torchstn train {ENCODER_CONFIG} --out {display_path(checkpoint)}" + "".join(
                f" --set {o}" for o in [*extra, *overrides]
            )
            say(f"training the encoder: {command}")
            fit(cfg, checkpoint, resume="auto", progress=False, command=command)
    encoder = load_encoder(checkpoint, features)
    result_file = checkpoint_path(checkpoint).parent / "result.json"
    info = json.loads(result_file.read_text()) if result_file.is_file() else {}
    return {"path": encoder.source, "test_error": info.get("test_error"), "command": info.get("command")}


def run_case(cfg: TrainConfig, run_dir: Path, *, fresh: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train one case into ``run_dir`` and return its ``result.json``. A finished case is reused when its saved
    config computes what ``cfg`` computes (:func:`~torchstn.experiments.engine.trainer.config_differences`); an
    interrupted one resumes; ``fresh`` trains it again.

    Raises:
        ConfigError: ``run_dir`` holds a case trained with another config (the differing keys named).
    """
    done = run_dir / "result.json"
    if done.is_file() and not fresh:
        result = json.loads(done.read_text())
        diff = config_differences(from_dict(result["config"]), cfg) if "config" in result else ["(none recorded)"]
        if diff:
            raise ConfigError(
                f"{run_dir} was trained with another config than this case's (it differs in "
                f"{', '.join(diff)}); use another --out, or --fresh to train it again"
            )
        if result.get("completed"):
            return result
    return fit(cfg, run_dir, resume=False if fresh else "auto", overwrite=fresh, progress=False, command=command)


def _command(
    out: Path,
    *,
    steps: int,
    seed: int,
    n: int,
    features: str,
    digits: Sequence[int],
    clutters: Sequence[bool],
    encoder,
    synthetic: int,
    overrides: Sequence[str],
) -> str:
    """The ``torchstn reproduce colocalisation`` command of these settings (paths as :func:`display_path`)."""
    which = "both" if len(clutters) == 2 else ("cluttered" if clutters[0] else "plain")
    return (
        f"torchstn reproduce colocalisation --out {display_path(out)} --steps {steps} --seed {seed} --n {n} "
        f"--features {features} --digits {','.join(map(str, digits))} --clutter {which}"
        + (f" --encoder {display_path(encoder)}" if encoder else "")
        + (f" --synthetic {synthetic}" if synthetic else "")
        + "".join(f" --set {o}" for o in overrides)
    )


def _localiser(run_dir) -> SpatialTransformer:
    """The trained localiser of a case's run directory.

    Raises:
        DataError: a run whose model is not a spatial transformer (not a co-localisation case).
    """
    _, st, _ = load_run(run_dir)
    if not isinstance(st, SpatialTransformer):
        raise DataError(f"{run_dir} holds a {type(st).__name__}, not a co-localisation case's spatial transformer")
    return st


def _shown(cfg: TrainConfig, run_dir: Path, k: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``k`` images of a finished case, their true boxes and the trained ST's windows."""
    st = _localiser(run_dir)
    data = CoLocalisationTask(cfg).datasets(train=False)[1]
    images, _ = data.batch(torch.arange(min(k, len(data))))
    return images, data.boxes[: len(images)], predict_boxes(st, images)


def _row(digit: int, clutter: bool, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "digit": digit,
        "clutter": clutter,
        "rate": 100.0 * result["test_rate"],
        "paper": PAPER_RATE[clutter],
        "mean_iou": result["test_mean_iou"],
        "centre_error_px": result["test_centre_error_px"],
        "window_px": result["test_window_px"],
        "steps": result["steps"],
        "train_s": result["train_s"],
    }


def _header(n: int, command: str, encoder: dict[str, Any], features: str, synthetic: int) -> list[str]:
    v = code_version()
    return [
        "# Co-localisation (paper Appendix A.2)",
        "",
        (
            f"Share of the {n} images of each set whose ST window has IoU > 0.5 with the true 28x28 box. "
            f"torchstn {v['torchstn']} (git {v['git'] or 'unknown'}), torch {v['torch']}, "
            f"{torch.get_num_threads()} thread(s), {datetime.date.today().isoformat()}."
        ),
        "",
        f"Command: `{command}`",
        "",
        (
            f"Encoder: `{display_path(encoder['path'])}`, test error {encoder['test_error']}% "
            f"(`{encoder['command'] or 'given'}`); features `{features}`, L2-normalised."
        ),
        *(["", "**Synthetic digits: a smoke run, not a result.**"] if synthetic else []),
    ]


def reproduce_colocalisation(
    out_dir: str | Path,
    *,
    digits: Iterable[int] = range(10),
    clutter: Iterable[bool] = (False, True),
    steps: int = STEPS,
    encoder_checkpoint: str | Path | None = None,
    seed: int = 0,
    n: int = 100,
    features: str = "concat",
    encoder_overrides: Sequence[str] = (),
    synthetic: int = 0,
    root: str | None = None,
    picture_digits: int = 4,
    resume: bool = True,
    overrides: Sequence[str] = (),
    threads: int | None = None,
    say: Callable[[str], None] | None = print,
) -> list[dict]:
    """Run the co-localisation experiment for every ``(digit, clutter)`` case and write ``out_dir/colocalisation.md``
    and ``.csv`` (ours against the paper) and ``colocalisation_plain.png`` / ``colocalisation_cluttered.png``
    (windows on the images of the first ``picture_digits`` digits; needs matplotlib, else skipped).

    Args:
        out_dir: results; each case is a run directory ``out_dir/<case>`` (:func:`case_name`) and, with no
            ``encoder_checkpoint``, the encoder is trained into ``out_dir/encoder`` first (packaged config
            ``colocalisation_encoder``; reused when done).
        steps: SGD steps per case.
        features: what the encoder reads (:class:`Encoder`).
        encoder_overrides: ``key=value`` changes to the encoder's config.
        synthetic: use synthetic seven-segment digits (this many) instead of MNIST, for the encoder and the sets:
            an offline smoke run, not a result.
        resume: reuse finished cases (if their config is the case's) and continue interrupted ones; ``False``
            trains every case again.
        overrides: ``--set`` changes to every case's config (:func:`case_config`).
        threads: ``run.threads`` of the cases.

    Returns:
        One row per case: ``digit``, ``clutter``, ``rate`` (% IoU > 0.5), ``paper``, ``mean_iou``,
        ``centre_error_px``, ``window_px``, ``steps``, ``train_s``.

    Raises:
        ConfigError: a case in ``out_dir`` made with another config, or a bad override.
        DataError: MNIST (or the encoder checkpoint) cannot be loaded.
    """
    say = say or (lambda _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits, clutters = [int(d) for d in digits], [bool(c) for c in clutter]
    encoder = _encoder(out, encoder_checkpoint, features, encoder_overrides, synthetic, root, say)
    say(f"encoder {encoder['path']} (test error {encoder['test_error']}%), features {features}")
    command = _command(
        out,
        steps=steps,
        seed=seed,
        n=n,
        features=features,
        digits=digits,
        clutters=clutters,
        encoder=encoder_checkpoint,
        synthetic=synthetic,
        overrides=overrides,
    )
    rows: list[dict] = []
    shown: dict[bool, dict[int, tuple]] = {c: {} for c in clutters}
    for clut in clutters:
        for digit in digits:
            cfg = case_config(
                digit,
                clut,
                encoder=encoder["path"],
                steps=steps,
                seed=seed,
                n=n,
                features=features,
                synthetic=synthetic,
                root=root,
                threads=threads,
                overrides=overrides,
            )
            run_dir = out / case_name(digit, clut)
            result = run_case(
                cfg,
                run_dir,
                fresh=not resume,
                command=_command(
                    out,
                    steps=steps,
                    seed=seed,
                    n=n,
                    features=features,
                    digits=[digit],
                    clutters=[clut],
                    encoder=encoder_checkpoint,
                    synthetic=synthetic,
                    overrides=overrides,
                ),
            )
            rows.append(_row(digit, clut, result))
            say(
                f"digit {digit} {'cluttered' if clut else 'plain'}: {rows[-1]['rate']:.0f}% IoU > 0.5 "
                f"(mean IoU {rows[-1]['mean_iou']:.2f}), trained in {rows[-1]['train_s']:.0f} s"
            )
            if len(shown[clut]) < picture_digits:
                shown[clut][digit] = _shown(cfg, run_dir)
    md = write_tables(rows, out, _header(n, command, encoder, features, synthetic))
    add_pictures(shown, md)
    say(f"wrote {md} and {out / 'colocalisation.csv'}")
    return rows


def _new_spellings(overrides: Sequence[str]) -> list[str]:
    """``--set`` overrides; the old schedule spelling ``lr=0.1`` becomes ``optim.lr=0.1``, with a warning."""
    out = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key and "." not in key:
            warnings.warn(
                f"the schedule override {item!r} is now spelled 'optim.{item.strip()}'",
                DeprecationWarning,
                stacklevel=3,
            )
            item = f"optim.{item.strip()}"
        out.append(item)
    return out


def train_colocalisation(
    digit: int,
    *,
    clutter: bool,
    encoder: Encoder | str | Path,
    steps: int = STEPS,
    seed: int = 0,
    n: int = 100,
    alpha: float = 1.0,
    window: Window | None = None,
    schedule: str = "colocalisation",
    overrides: Sequence[str] = (),
    out_dir=None,
    resume: bool = False,
    root=None,
    source=None,
    log: Callable[[str], None] | None = print,
    log_every: int = 20,
    eval_every: int = 0,
) -> SpatialTransformer:
    """Train one case (:func:`case_config`) with :func:`~torchstn.experiments.engine.trainer.fit` into ``out_dir``
    (a temporary folder if ``None``): ``config.toml``, ``last.pt``, ``metrics.csv``, ``result.json``.

    Args:
        encoder: the encoder's run directory or checkpoint, or an :class:`Encoder` loaded from one
            (:func:`load_encoder`; its ``features`` and ``normalise`` are used).
        window: the window's settings (default :class:`Window`'s).
        schedule, overrides: the engine schedule and ``--set`` changes (``optim.lr=0.1``; the old ``lr=0.1``
            still works, with a DeprecationWarning).
        resume: continue the run in ``out_dir`` (its config must be this one); without it ``out_dir`` must hold
            no run.
        source: ``(images, labels)`` digits to draw the set from instead of MNIST (``data.root``).
        log: ``None`` trains quietly, anything else shows the engine's progress.

    Returns:
        The trained spatial transformer, in eval mode.

    Raises:
        ConfigError: an encoder not loaded from a run, a resume with other settings, or ``out_dir`` holding a run.
    """
    path = encoder.source if isinstance(encoder, Encoder) else encoder
    if not path:
        raise ConfigError(
            "encoder must be a run of `torchstn train colocalisation_encoder` or an Encoder loaded "
            "from one with load_encoder"
        )
    features, normalise = (encoder.features, encoder.normalise) if isinstance(encoder, Encoder) else ("concat", True)
    cfg = case_config(
        digit,
        clutter,
        encoder=path,
        steps=steps,
        seed=seed,
        n=n,
        features=features,
        root=root,
        overrides=[
            f"optim.schedule={schedule}",
            f"run.log_every={log_every}",
            f"run.eval_every={eval_every}",
            *_new_spellings(overrides),
        ],
        alpha=alpha,
        normalise=normalise,
        **window_options(window or Window()),
    )
    datasets = None
    if source is not None:
        from torchstn.data import CoLocalisation

        data = CoLocalisation(digit, n=n, clutter=clutter, seed=seed, root=root, source=source)
        datasets = (data, data)
    with tempfile.TemporaryDirectory() if out_dir is None else contextlib.nullcontext(out_dir) as folder:
        fit(cfg, folder, resume="auto" if resume else False, progress=log is not None, datasets=datasets)
        st = _localiser(folder)
    return st


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The arguments of ``torchstn reproduce colocalisation``."""
    parser = parser or argparse.ArgumentParser(
        prog="torchstn reproduce colocalisation", description="co-localisation (paper Appendix A.2)"
    )
    parser.add_argument("--out", default="runs/colocalisation", help="results folder (the case runs go inside)")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="comma-separated classes (default all)")
    parser.add_argument(
        "--clutter",
        default="both",
        choices=("both", "plain", "cluttered"),
        help="which sets: plain, cluttered or both (default)",
    )
    parser.add_argument("--steps", type=int, default=STEPS, help=f"SGD steps per case (default {STEPS})")
    parser.add_argument("--encoder", default=None, help="encoder run folder or checkpoint (default: train one)")
    parser.add_argument(
        "--features", default="concat", choices=FEATURES, help="what the encoder reads (default concat)"
    )
    parser.add_argument(
        "--encoder-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the encoder config, e.g. optim.iterations=3000",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override every case's config, e.g. task.alpha=0.5 or optim.lr=0.1",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sets, the localiser and the crops (default 0)")
    parser.add_argument("--n", type=int, default=100, help="images per set (paper: 100)")
    parser.add_argument("--synthetic", type=int, default=0, help="smoke run on this many synthetic digits")
    parser.add_argument("--root", default=None, help="folder of the MNIST IDX files")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--fresh", action="store_true", help="retrain cases already in --out")
    return parser


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run :func:`reproduce_colocalisation` from parsed (or raw) arguments; returns 0.

    Raises:
        OptionError: ``--digits`` that are not comma-separated ints.
    """
    if not isinstance(args, argparse.Namespace):
        args = get_args_parser().parse_args(args)
    try:
        digits = [int(d) for d in str(args.digits).split(",") if d.strip()]
    except ValueError:
        raise OptionError(f"--digits must be comma-separated ints, got {args.digits!r}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    clutter = {"both": (False, True), "plain": (False,), "cluttered": (True,)}[args.clutter]
    reproduce_colocalisation(
        args.out,
        digits=digits,
        clutter=clutter,
        steps=args.steps,
        encoder_checkpoint=args.encoder,
        seed=args.seed,
        n=args.n,
        features=args.features,
        encoder_overrides=args.encoder_set,
        synthetic=args.synthetic,
        root=args.root,
        resume=not args.fresh,
        overrides=getattr(args, "overrides", []),
        threads=args.threads,
    )
    return 0
