"""What ``torchstn reproduce colocalisation`` writes: the table (``colocalisation.md`` / ``.csv``, ours against the
paper) and the pictures of the windows (``colocalisation_plain.png`` / ``colocalisation_cluttered.png``).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from torchstn.experiments.colocalisation.boxes import box_iou

__all__ = ["PAPER_RATE", "COLUMNS", "SEED_COLUMNS", "rate_over_seeds", "write_tables", "picture", "add_pictures"]

#: The paper's share of images localised (IoU > 0.5), in %, without / with clutter (its Table 5 (left) gives it per
#: digit class, as an image not transcribed here).
PAPER_RATE = {False: "100", True: "75-93"}
#: The columns of ``colocalisation.csv``; a row is one ``(digit, clutter)`` case, ``rate`` in %.
COLUMNS = ["digit", "clutter", "rate", "paper", "mean_iou", "centre_error_px", "window_px", "steps", "train_s"]
#: The columns of ``colocalisation.csv`` when the rows hold several seeds: a row is one ``(digit, clutter, seed)`` run.
SEED_COLUMNS = ["digit", "clutter", "seed", *COLUMNS[2:]]


def rate_over_seeds(rates: list[float]) -> str:
    """A case's rates (%) over its seeds as the table shows them: mean ± sample standard deviation (n - 1), then
    each seed's rate in seed order.

    Raises:
        ValueError: fewer than two rates (no sample standard deviation).

    Example:
        >>> rate_over_seeds([95.0, 82.0, 88.0])
        '88.3 ± 6.5% (95 / 82 / 88)'
    """
    if len(rates) < 2:
        raise ValueError(f"a mean and spread needs the rates of at least 2 seeds, got {len(rates)}")
    each = " / ".join(f"{r:.0f}" for r in rates)
    return f"{statistics.mean(rates):.1f} ± {statistics.stdev(rates):.1f}% ({each})"


def write_tables(rows: list[dict], out: Path, header: list[str]) -> Path:
    """Write ``out/colocalisation.csv`` and ``out/colocalisation.md`` (``header`` lines, the table, the mean rate of
    each kind of set); returns the markdown's path.

    Rows of several seeds (their ``seed`` values differ) give one table row per ``(digit, clutter)`` with the rate as
    :func:`rate_over_seeds` and the other numbers as means over the seeds, summary lines with the mean and range of
    the per-digit means and the lowest single run, and one CSV row per run with a ``seed`` column
    (:data:`SEED_COLUMNS`); rows of one seed give the one-seed table and :data:`COLUMNS`.
    """
    seeds = sorted({r.get("seed", 0) for r in rows})
    columns = COLUMNS if len(seeds) < 2 else SEED_COLUMNS
    with open(out / "colocalisation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in columns})
    body = _one_seed(rows) if len(seeds) < 2 else _over_seeds(rows, seeds)
    md = out / "colocalisation.md"
    md.write_text("\n".join([*header, "", *body]) + "\n")
    return md


def _one_seed(rows: list[dict]) -> list[str]:
    """The lines of the one-seed table and its summary."""
    lines = [
        (
            "| Digit | Clutter | IoU > 0.5 (ours) | Paper | Mean IoU | Centre error (px, median) | "
            "Window (px) | Steps | Train time |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['digit']} | {'yes' if r['clutter'] else 'no'} | {r['rate']:.0f}% | {r['paper']}% | "
            f"{r['mean_iou']:.2f} | {r['centre_error_px']:.1f} | {r['window_px']:.1f} | {r['steps']} | "
            f"{r['train_s']:.0f} s |"
        )
    for clutter in sorted({r["clutter"] for r in rows}):
        rates = [r["rate"] for r in rows if r["clutter"] == clutter]
        lines.append(
            f"\n{'Cluttered' if clutter else 'Plain'}: mean {sum(rates) / len(rates):.1f}% over "
            f"{len(rates)} digit(s), range {min(rates):.0f}-{max(rates):.0f}% (paper {PAPER_RATE[clutter]}%)."
        )
    return lines


def _over_seeds(rows: list[dict], seeds: list[int]) -> list[str]:
    """The lines of the table over ``seeds``: one row per ``(digit, clutter)``, and the summary of each kind of set."""
    cases: dict[tuple[bool, int], list[dict]] = {}
    for r in rows:
        cases.setdefault((r["clutter"], r["digit"]), []).append(r)
    lines = [
        (
            f"{len(seeds)} seeds per case ({', '.join(map(str, seeds))}): the rate is the mean ± the sample standard "
            "deviation (n - 1) over the seeds, then each seed's rate in seed order; the other numbers are means "
            "over the seeds."
        ),
        "",
        (
            "| Digit | Clutter | IoU > 0.5 (ours, mean ± sample std; per seed) | Paper | Mean IoU | "
            "Centre error (px, median) | Window (px) | Steps | Train time |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (clutter, digit), runs in cases.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        mean = {k: statistics.mean(r[k] for r in runs) for k in ("mean_iou", "centre_error_px", "window_px")}
        steps, train_s = statistics.mean(r["steps"] for r in runs), statistics.mean(r["train_s"] for r in runs)
        lines.append(
            f"| {digit} | {'yes' if clutter else 'no'} | {rate_over_seeds([r['rate'] for r in runs])} | "
            f"{runs[0]['paper']}% | {mean['mean_iou']:.2f} | {mean['centre_error_px']:.1f} | "
            f"{mean['window_px']:.1f} | {steps:.0f} | {train_s:.0f} s |"
        )
    for clutter in sorted({c for c, _ in cases}):
        means = [statistics.mean(r["rate"] for r in runs) for (c, _), runs in cases.items() if c == clutter]
        low = min((r for r in rows if r["clutter"] == clutter), key=lambda r: r["rate"])
        lines.append(
            f"\n{'Cluttered' if clutter else 'Plain'}: mean {statistics.mean(means):.1f}% over {len(means)} digit(s) "
            f"x {len(seeds)} seeds (the mean of the per-digit means), per-digit means "
            f"{min(means):.1f}-{max(means):.1f}%, lowest single run {low['rate']:.0f}% (digit {low['digit']}, seed "
            f"{low['seed']}) (paper {PAPER_RATE[clutter]}%)."
        )
    return lines


def picture(shown: dict[int, tuple], clutter: bool, path: Path, cols: int = 6) -> Path | None:
    """Images of a few digits with the true box (green) and the ST's window (red), IoU in the titles.

    Args:
        shown: ``{digit: (images (k, 1, H, W), true boxes (k, 4), windows (k, 4))}``.

    Returns:
        ``path``, or ``None`` when there is nothing to show or no matplotlib.
    """
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


def add_pictures(shown: dict[bool, dict[int, tuple]], md: Path) -> None:
    """Draw :func:`picture` of each kind of set (``shown[clutter]``) beside the table ``md`` and link it there."""
    for clutter, digits in shown.items():
        pic = picture(digits, clutter, md.parent / f"colocalisation_{'cluttered' if clutter else 'plain'}.png")
        if pic is not None:
            with open(md, "a") as f:
                f.write(f"\n![{pic.stem}]({pic.name})\n")
