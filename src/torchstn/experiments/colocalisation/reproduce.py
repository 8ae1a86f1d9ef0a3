"""``torchstn reproduce colocalisation``: the encoder (trained by the engine from the packaged config
``colocalisation_encoder``), then every ``(digit, clutter)`` case as a run of the engine (:mod:`.case`), then the
table and the pictures (:mod:`.table`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from torchstn.errors import ConfigError, OptionError
from torchstn.experiments.colocalisation.boxes import predict_boxes
from torchstn.experiments.colocalisation.case import STEPS, case_config, case_name, localiser_of, run_case
from torchstn.experiments.colocalisation.encoder import FEATURES, load_encoder
from torchstn.experiments.colocalisation.table import PAPER_RATE, add_pictures, write_tables
from torchstn.experiments.colocalisation.task import CoLocalisationTask
from torchstn.experiments.engine.arguments import add_run_options, add_set_option
from torchstn.experiments.engine.checkpoint import code_version
from torchstn.experiments.engine.config import TrainConfig
from torchstn.experiments.engine.runs import checkpoint_path, display_path
from torchstn.experiments.engine.trainer import fit

__all__ = ["ENCODER_CONFIG", "Settings", "reproduce_colocalisation", "get_args_parser", "main"]

#: The packaged config of the frozen encoder ``e()``.
ENCODER_CONFIG = "colocalisation_encoder"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``torchstn reproduce colocalisation`` runs: its options, the keyword arguments of
    :func:`reproduce_colocalisation`.

    Attributes:
        digits, clutter: the cases, every digit with every clutter setting (``False``: plain).
        steps: SGD steps per case.
        encoder_checkpoint: the encoder's run directory or checkpoint; ``None`` trains one into ``OUT/encoder``
            (reused when done).
        seed: ``run.seed`` of every case: it draws the set, the localiser's initial weights and the crops.
        seeds: how many seeds: every case is run with ``seed, seed + 1, ..., seed + seeds - 1``. With one seed the
            cases are ``OUT/<case>``; with more, ``OUT/seed<k>/<case>`` (``k`` the seed) and the table gives the
            mean and spread over the seeds (:func:`~torchstn.experiments.colocalisation.table.write_tables`).
        n: images per set (the paper: 100).
        features: what the encoder reads (:class:`~torchstn.experiments.colocalisation.encoder.Encoder`).
        encoder_overrides: ``key=value`` changes to the encoder's config.
        synthetic: synthetic seven-segment digits (this many) instead of MNIST, for the encoder and the sets: an
            offline smoke run, not a result.
        root: the folder of the MNIST IDX files.
        picture_digits: how many digits each picture shows.
        resume: reuse finished cases (when their config is the case's) and continue interrupted ones; ``False``
            trains every case again.
        overrides: ``--set`` changes to every case's config.
        threads: ``run.threads`` of the cases.
    """

    digits: Sequence[int] = tuple(range(10))
    clutter: Sequence[bool] = (False, True)
    steps: int = STEPS
    encoder_checkpoint: str | Path | None = None
    seed: int = 0
    seeds: int = 1
    n: int = 100
    features: str = "concat"
    encoder_overrides: Sequence[str] = ()
    synthetic: int = 0
    root: str | None = None
    picture_digits: int = 4
    resume: bool = True
    overrides: Sequence[str] = ()
    threads: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "digits", tuple(int(d) for d in self.digits))
        object.__setattr__(self, "clutter", tuple(bool(c) for c in self.clutter))
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"seeds (--seeds) must be an int >= 1, got {self.seeds!r}")

    @property
    def seed_values(self) -> tuple[int, ...]:
        """The seeds of the cases: ``seed, seed + 1, ..., seed + seeds - 1``."""
        return tuple(range(self.seed, self.seed + self.seeds))

    def run_dir(self, out: Path, digit: int, clutter: bool, seed: int) -> Path:
        """The run directory of a case: ``out/<case>`` (:func:`case_name`) with one seed, ``out/seed<seed>/<case>``
        with several."""
        return out / case_name(digit, clutter) if self.seeds == 1 else out / f"seed{seed}" / case_name(digit, clutter)

    def config(self, digit: int, clutter: bool, encoder: str, seed: int | None = None) -> TrainConfig:
        """The config of the case ``(digit, clutter)`` (:func:`case_config`) with the encoder ``encoder`` and
        ``run.seed`` ``seed`` (default: :attr:`seed`)."""
        return case_config(
            digit,
            clutter,
            encoder=encoder,
            steps=self.steps,
            seed=self.seed if seed is None else seed,
            n=self.n,
            features=self.features,
            synthetic=self.synthetic,
            root=self.root,
            threads=self.threads,
            overrides=self.overrides,
        )

    def command(self, out: Path, digits: Sequence[int], clutter: Sequence[bool]) -> str:
        """The ``torchstn reproduce colocalisation`` command of these settings for ``digits`` x ``clutter`` (paths
        as :func:`~torchstn.experiments.engine.runs.display_path` shows them; ``--seeds K`` when there are several
        seeds, so the command remakes every seed's runs)."""
        which = "both" if len(clutter) == 2 else ("cluttered" if clutter[0] else "plain")
        return (
            f"torchstn reproduce colocalisation --out {display_path(out)} --steps {self.steps} --seed {self.seed}"
            + (f" --seeds {self.seeds}" if self.seeds > 1 else "")
            + f" --n {self.n} --features {self.features} --digits {','.join(map(str, digits))} --clutter {which}"
            + (f" --encoder {display_path(self.encoder_checkpoint)}" if self.encoder_checkpoint else "")
            + (f" --synthetic {self.synthetic}" if self.synthetic else "")
            + "".join(f" --set {o}" for o in self.overrides)
        )


def _encoder(out: Path, s: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """``{"path", "test_error", "command"}`` of the encoder of ``s.encoder_checkpoint``, else of the one in
    ``out/encoder`` (trained there first by :func:`fit` if it is not finished). Loaded once to check it.

    Raises:
        DataError: a missing or damaged encoder checkpoint.
    """
    from torchstn.experiments.engine.config_io import load_config

    checkpoint = s.encoder_checkpoint
    if checkpoint is None:
        checkpoint = out / "encoder"
        if not (checkpoint / "result.json").is_file():
            extra = [f"data.synthetic={s.synthetic}"] if s.synthetic else []
            extra += [f"data.root={s.root}"] if s.root else []
            sets = [*extra, *s.encoder_overrides]
            command = f"torchstn train {ENCODER_CONFIG} --out {display_path(checkpoint)}" + "".join(
                f" --set {o}" for o in sets
            )
            say(f"training the encoder: {command}")
            fit(load_config(ENCODER_CONFIG, sets), checkpoint, resume="auto", progress=False, command=command)
    encoder = load_encoder(checkpoint, s.features)
    result_file = checkpoint_path(checkpoint).parent / "result.json"
    info = json.loads(result_file.read_text()) if result_file.is_file() else {}
    return {"path": encoder.source, "test_error": info.get("test_error"), "command": info.get("command")}


def _shown(cfg: TrainConfig, run_dir: Path, k: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``k`` images of a finished case, their true boxes and the trained ST's windows."""
    st = localiser_of(run_dir)
    data = CoLocalisationTask(cfg).datasets(train=False)[1]
    images, _ = data.batch(torch.arange(min(k, len(data))))
    return images, data.boxes[: len(images)], predict_boxes(st, images)


def _row(digit: int, clutter: bool, seed: int, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "digit": digit,
        "clutter": clutter,
        "seed": seed,
        "rate": 100.0 * result["test_rate"],
        "paper": PAPER_RATE[clutter],
        "mean_iou": result["test_mean_iou"],
        "centre_error_px": result["test_centre_error_px"],
        "window_px": result["test_window_px"],
        "steps": result["steps"],
        "train_s": result["train_s"],
    }


def _header(s: Settings, command: str, encoder: dict[str, Any]) -> list[str]:
    v = code_version()
    return [
        "# Co-localisation (paper Appendix A.2)",
        "",
        (
            f"Share of the {s.n} images of each set whose ST window has IoU > 0.5 with the true 28x28 box. "
            f"torchstn {v['torchstn']} (git {v['git'] or 'unknown'}), torch {v['torch']}, "
            f"{torch.get_num_threads()} thread(s), {datetime.date.today().isoformat()}."
        ),
        "",
        f"Command: `{command}`",
        "",
        (
            f"Encoder: `{display_path(encoder['path'])}`, test error {encoder['test_error']}% "
            f"(`{encoder['command'] or 'given'}`); features `{s.features}`, L2-normalised."
        ),
        *(["", "**Synthetic digits: a smoke run, not a result.**"] if s.synthetic else []),
    ]


def _run_cases(
    out: Path, s: Settings, encoder: str, say: Callable[[str], None]
) -> tuple[list[dict], dict[bool, dict[int, tuple]]]:
    """Run (or reuse) every case of every seed, the first seed's sweep first; returns the rows, ordered by clutter,
    digit and seed, and the pictures' material (the first seed's cases of the first ``s.picture_digits`` digits)."""
    rows: list[dict] = []
    shown: dict[bool, dict[int, tuple]] = {c: {} for c in s.clutter}
    for seed in s.seed_values:
        for clutter in s.clutter:
            for digit in s.digits:
                cfg, run_dir = s.config(digit, clutter, encoder, seed), s.run_dir(out, digit, clutter, seed)
                result = run_case(cfg, run_dir, fresh=not s.resume, command=s.command(out, [digit], [clutter]))
                rows.append(_row(digit, clutter, seed, result))
                say(
                    f"digit {digit} {'cluttered' if clutter else 'plain'}"
                    + (f" seed {seed}" if s.seeds > 1 else "")
                    + f": {rows[-1]['rate']:.0f}% IoU > 0.5 (mean IoU {rows[-1]['mean_iou']:.2f}), "
                    f"trained in {rows[-1]['train_s']:.0f} s"
                )
                if seed == s.seed and len(shown[clutter]) < s.picture_digits:
                    shown[clutter][digit] = _shown(cfg, run_dir)
    rows.sort(key=lambda r: (s.clutter.index(r["clutter"]), s.digits.index(r["digit"]), r["seed"]))
    return rows, shown


def reproduce_colocalisation(
    out_dir: str | Path, *, say: Callable[[str], None] | None = print, **settings: Any
) -> list[dict]:
    """Run the co-localisation experiment for every ``(digit, clutter)`` case and write ``out_dir/colocalisation.md``
    and ``.csv`` (ours against the paper) and ``colocalisation_plain.png`` / ``colocalisation_cluttered.png``
    (windows on the images of the first ``picture_digits`` digits; needs matplotlib, else skipped).

    Args:
        out_dir: results; each case is a run directory ``out_dir/<case>`` (:func:`case_name`), with several
            ``seeds`` ``out_dir/seed<k>/<case>``; the encoder (unless given, one for all seeds) ``out_dir/encoder``.
        say: where progress lines go (``None``: nowhere).
        settings: the fields of :class:`Settings` (``digits``, ``clutter``, ``steps``, ``encoder_checkpoint``, ...).

    Returns:
        One row per case and seed (ordered by clutter, digit, seed): ``digit``, ``clutter``, ``seed``, ``rate``
        (% IoU > 0.5), ``paper``, ``mean_iou``, ``centre_error_px``, ``window_px``, ``steps``, ``train_s``.

    Raises:
        ConfigError: a case in ``out_dir`` made with another config, a bad override, or ``seeds`` < 1.
        DataError: MNIST (or the encoder checkpoint) cannot be loaded.
    """
    s, say = Settings(**settings), say or (lambda _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder = _encoder(out, s, say)
    say(f"encoder {encoder['path']} (test error {encoder['test_error']}%), features {s.features}")
    rows, shown = _run_cases(out, s, encoder["path"], say)
    md = write_tables(rows, out, _header(s, s.command(out, s.digits, s.clutter), encoder))
    add_pictures(shown, md)
    say(f"wrote {md} and {out / 'colocalisation.csv'}")
    return rows


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
    add_set_option(parser, "task.alpha=0.5 or optim.lr=0.1", "every case's config")
    add_run_options(parser, ("seed",), seed="seed of the sets, the localiser and the crops (default 0)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="run every case with seeds SEED .. SEED+K-1: mean and spread (default 1)"
    )
    parser.add_argument("--n", type=int, default=100, help="images per set (paper: 100)")
    parser.add_argument("--synthetic", type=int, default=0, help="smoke run on this many synthetic digits")
    parser.add_argument("--root", default=None, help="folder of the MNIST IDX files")
    add_run_options(parser, ("threads",), threads="torch CPU threads (run.threads of every case)")
    parser.add_argument("--fresh", action="store_true", help="retrain cases already in --out")
    return parser


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run :func:`reproduce_colocalisation` from parsed (or raw) arguments; returns 0.

    Raises:
        OptionError: ``--digits`` that are not comma-separated ints, or ``--seeds`` < 1.
    """
    if not isinstance(args, argparse.Namespace):
        args = get_args_parser().parse_args(args)
    try:
        digits = [int(d) for d in str(args.digits).split(",") if d.strip()]
    except ValueError:
        raise OptionError(f"--digits must be comma-separated ints, got {args.digits!r}") from None
    if args.seeds < 1:
        raise OptionError(f"--seeds must be >= 1 (how many seeds per case), got {args.seeds}")
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
        seeds=args.seeds,
        n=args.n,
        features=args.features,
        encoder_overrides=args.encoder_set,
        synthetic=args.synthetic,
        root=args.root,
        resume=not args.fresh,
        overrides=args.overrides,
        threads=args.threads,
    )
    return 0
