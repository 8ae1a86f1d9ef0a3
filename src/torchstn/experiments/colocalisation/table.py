"""What ``torchstn reproduce colocalisation`` writes: the table (``colocalisation.md`` / ``.csv``, ours against the
paper) and the pictures of the windows (``colocalisation_plain.png`` / ``colocalisation_cluttered.png``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from torchstn.experiments.colocalisation.boxes import box_iou

__all__ = ["PAPER_RATE", "COLUMNS", "write_tables", "picture", "add_pictures"]

#: The paper's share of images localised (IoU > 0.5), in %, without / with clutter (its Table 5 (left) gives it per
#: digit class, as an image not transcribed here).
PAPER_RATE = {False: "100", True: "75-93"}
#: The columns of ``colocalisation.csv``; a row is one ``(digit, clutter)`` case, ``rate`` in %.
COLUMNS = ["digit", "clutter", "rate", "paper", "mean_iou", "centre_error_px", "window_px", "steps", "train_s"]


def write_tables(rows: list[dict], out: Path, header: list[str]) -> Path:
    """Write ``out/colocalisation.csv`` and ``out/colocalisation.md`` (``header`` lines, the table, the mean rate of
    each kind of set); returns the markdown's path."""
    with open(out / "colocalisation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    lines = [
        *header,
        "",
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
    md = out / "colocalisation.md"
    md.write_text("\n".join(lines) + "\n")
    return md


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
