"""Pictures of what a spatial transformer does: inputs with its sampling grid, and its outputs.

:func:`st_figure` draws, for each image, the input with the transformer's sampling points and the outline of its
output frame (the image of the output's border under ``T_theta``, in input pixels), and below it the transformer's
output. :func:`save_frame` / :func:`write_gif` make the training GIF. matplotlib and pillow are imported only here,
and only when called (``pip install torchstn[experiments]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from torchstn.coords import pixel_from_normalised
from torchstn.errors import OptionError, ShapeError
from torchstn.nn import CompositionalSpatialTransformer, SpatialTransformer, record_theta

__all__ = [
    "labelled_grid",
    "transformer_views",
    "st_figure",
    "compositional_figure",
    "volume_figure",
    "save_frame",
    "write_gif",
    "check_figure_path",
]


@torch.no_grad()
def transformer_views(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """Run ``model`` on ``images`` and capture every spatial transformer's input, output, theta and sampling points.

    Returns:
        ``(logits (B, K), views)``; each view is a dict with ``name``, ``input (B, C, H, W)``, ``output
        (B, C, H', W')``, ``theta (B, P)`` and ``points (B, H', W', 2)``: the sampling points in input pixel
        coordinates ``(x, y)`` (pixel centres at integers).
    """
    captured: dict[str, dict] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, SpatialTransformer):

            def hook(_m, args, out, _name=name):
                if _name not in captured:  # first call only (a module reused in a loop shows its first use)
                    captured[_name] = {"input": args[0].detach(), "output": out.detach()}

            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with record_theta(model) as thetas:
            logits = model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    views = []
    modules = dict(model.named_modules())
    for name, c in captured.items():
        st: SpatialTransformer = modules[name]
        theta = thetas[name][0]
        U, V = c["input"], c["output"]
        grid = st.family.grid(theta, tuple(V.shape[2:]), align_corners=st.align_corners)  # (B, H', W', 2)
        to_pix = pixel_from_normalised(tuple(U.shape[2:]), st.align_corners, dtype=grid.dtype)  # (3, 3)
        points = grid @ to_pix[:2, :2].T + to_pix[:2, 2]  # (B, H', W', 2) in input pixels
        views.append({"name": name, "input": U, "output": V, "theta": theta, "points": points})
    return logits, views


def _outline(points: torch.Tensor) -> torch.Tensor:
    """Border of a point grid ``(H', W', 2)`` as a closed polyline ``(N, 2)``."""
    top, right = points[0, :], points[:, -1]
    bottom, left = points[-1, :].flip(0), points[:, 0].flip(0)
    return torch.cat([top, right, bottom, left, points[:1, 0]])


def _show(ax, image: torch.Tensor) -> None:
    """``(C, H, W)``: grey for one channel (or the mean of many), RGB for three; two channels (MNIST addition) as
    red (channel 0) and green (channel 1), so each digit keeps its colour through the transformers."""
    image = image.float()
    if image.shape[0] == 2:
        image = torch.cat([image, torch.zeros_like(image[:1])])
    img = image.mean(0) if image.shape[0] != 3 else image.permute(1, 2, 0).clamp(0, 1)
    ax.imshow(img.cpu().numpy(), cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("drawing needs matplotlib: pip install matplotlib (or torchstn[experiments])") from None
    return plt


def check_figure_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a :class:`~pathlib.Path`, checked to name an image format matplotlib writes (by its suffix), so a
    figure command fails before it computes anything.

    Raises:
        OptionError: no suffix, or one matplotlib cannot write (the message lists those it can).
        ImportError: matplotlib is not installed.
    """
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(out)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    fmt = out.suffix.lower().removeprefix(".")
    if fmt not in formats:
        what = f"unknown image format {out.suffix!r}" if fmt else "no file suffix to tell the image format"
        raise OptionError(f"--out {out}: {what}; use one of {', '.join('.' + f for f in formats)}")
    return out


def st_figure(
    model: nn.Module,
    images: torch.Tensor,
    out: str | os.PathLike[str],
    *,
    labels: torch.Tensor | None = None,
    grid_points: int = 7,
    title: str = "",
    columns: int = 16,
) -> Path:
    """Save a figure of ``model``'s spatial transformers at work on ``images`` ``(B, C, H, W)``.

    Row 1: each input with the sampling points (a ``grid_points`` x ``grid_points`` subset, dots) and the output
    frame's outline (line), in the input's pixels. Row 2: the transformer's output. One such pair of rows per
    transformer. Column titles give the prediction (and the label when ``labels`` is given). More than ``columns``
    images wrap into further bands of rows below.

    Returns:
        The path written.
    """
    plt = _pyplot()
    logits, views = transformer_views(model, images)
    pred = logits.argmax(1)
    n = images.shape[0]
    cols = max(1, min(n, columns))
    band = max(1, 2 * len(views))  # rows per band of `cols` images
    rows = band * -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows), squeeze=False)
    cell = [(band * (j // cols), j % cols) for j in range(rows // band * cols)]  # (first row, column) of place j
    for r, c in cell[n:]:  # the unused places of the last band
        for k in range(band):
            axes[r + k, c].set_axis_off()
    cell = cell[:n]
    for j, (r, c) in enumerate(cell):
        head = f"pred {int(pred[j])}" + (f" ({int(labels[j])})" if labels is not None else "")
        axes[r, c].set_title(head, fontsize=7, color="black" if labels is None or pred[j] == labels[j] else "red")
    if not views:
        for j, (r, c) in enumerate(cell):
            _show(axes[r, c], images[j])
    for v_i, view in enumerate(views):
        pts = view["points"]
        hp, wp = pts.shape[1:3]
        sub_y = torch.linspace(0, hp - 1, min(grid_points, hp)).round().long()
        sub_x = torch.linspace(0, wp - 1, min(grid_points, wp)).round().long()
        for j, (r, c) in enumerate(cell):
            ax_in, ax_out = axes[r + 2 * v_i, c], axes[r + 2 * v_i + 1, c]
            _show(ax_in, view["input"][j])
            h, w = view["input"].shape[2:]
            dots = pts[j][sub_y][:, sub_x].reshape(-1, 2).cpu()
            ax_in.scatter(dots[:, 0], dots[:, 1], s=2, c="tab:orange", linewidths=0)
            line = _outline(pts[j]).cpu()
            ax_in.plot(line[:, 0], line[:, 1], color="tab:red", linewidth=0.8)
            ax_in.set_xlim(-0.5, w - 0.5)
            ax_in.set_ylim(h - 0.5, -0.5)
            _show(ax_out, view["output"][j])
        label = view["name"] or "ST"
        for r in range(0, rows, band):
            axes[r + 2 * v_i, 0].set_ylabel(f"{label} input", fontsize=7)
            axes[r + 2 * v_i + 1, 0].set_ylabel(f"{label} output", fontsize=7)
    return _save(plt, fig, out, title)


@torch.no_grad()
def compositional_figure(
    model: nn.Module,
    images: torch.Tensor,
    out: str | os.PathLike[str],
    *,
    theta_init: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Save a figure of a :class:`~torchstn.nn.CompositionalSpatialTransformer` (``model`` itself or the first one
    inside it) refining its warp step by step on ``images (B, C, H, W)`` (one row each).

    Column 1: the input with the outline of the frame each step's composite warp reads (lighter to darker, the last
    in red); then what each step's localisation net saw; last, the output. ``theta_init`` is the warp to start from
    (the IC-STN protocol's perturbation; see :mod:`torchstn.experiments.icstn`).

    Raises:
        OptionError: ``model`` holds no compositional transformer.
        ImportError: matplotlib is not installed.

    Returns:
        The path written.
    """
    cst = next((m for m in model.modules() if isinstance(m, CompositionalSpatialTransformer)), None)
    if cst is None:
        raise OptionError(f"{type(model).__name__} holds no CompositionalSpatialTransformer to draw")
    if images.dim() != 4:
        raise ShapeError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    plt = _pyplot()
    was_training = cst.training
    try:
        V, mats, views = cst.eval()(images, theta_init, return_steps=True)
    finally:
        cst.train(was_training)
    n, steps = images.shape[0], mats.shape[1]
    h, w = images.shape[2:]
    fig, axes = plt.subplots(n, steps + 2, figsize=(1.4 * (steps + 2), 1.5 * n), squeeze=False)
    to_pix = pixel_from_normalised((h, w), cst.align_corners, dtype=torch.float32)
    colours = plt.get_cmap("Blues")(torch.linspace(0.4, 0.9, steps).tolist())
    for j in range(n):
        _show(axes[j, 0], images[j])
        lo, hi = torch.tensor([-0.5, -0.5]), torch.tensor([w - 0.5, h - 0.5])
        for k in range(steps):
            grid = cst.grid(mats[j : j + 1, k], (h, w))
            line = _outline(grid[0].float() @ to_pix[:2, :2].T + to_pix[:2, 2]).cpu()
            colour = "tab:red" if k == steps - 1 else colours[k]
            axes[j, 0].plot(line[:, 0], line[:, 1], color=colour, linewidth=0.8)
            lo, hi = torch.minimum(lo, line.min(0).values), torch.maximum(hi, line.max(0).values)
        lo, hi = lo.clamp(min=-w), hi.clamp(max=2 * w)  # the whole frame, unless it runs far off
        axes[j, 0].set_xlim(float(lo[0]), float(hi[0]))
        axes[j, 0].set_ylim(float(hi[1]), float(lo[1]))
        for k in range(steps):
            _show(axes[j, k + 1], views[j, k])
        _show(axes[j, steps + 1], V[j])
    for k, head in enumerate(["input", *(f"step {k + 1} sees" for k in range(steps)), "output"]):
        axes[0, k].set_title(head, fontsize=7)
    return _save(plt, fig, out, title)


@torch.no_grad()
def volume_figure(
    model: nn.Module,
    volumes: torch.Tensor,
    out: str | os.PathLike[str],
    *,
    labels: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Save a figure of a volume model (:class:`~torchstn.models.volume.VolumeNet`) on ``volumes (B, C, D, H, W)``:
    per volume (one row each) its three axis-aligned projections (mean along depth, height and width) and the
    projection the model learned (``model.project``: the 3D transformer's output averaged over its depth).

    Returns:
        The path written.

    Raises:
        OptionError: ``model`` is not a :class:`~torchstn.models.volume.VolumeNet`.
        ShapeError: ``volumes`` is not 5-D.
    """
    from torchstn.models.volume import VolumeNet

    if not isinstance(model, VolumeNet):
        raise OptionError(f"volume_figure draws a VolumeNet (its learned projection), got {type(model).__name__}")
    if volumes.dim() != 5:
        raise ShapeError(f"volume_figure: expected volumes (B, C, D, H, W), got shape {tuple(volumes.shape)}")
    plt = _pyplot()
    was_training = model.training
    model.eval()
    try:
        learned, pred = model.project(volumes), model(volumes).argmax(1)
    finally:
        model.train(was_training)
    views = [
        ("along depth (z)", volumes.mean(2)),
        ("along height (y)", volumes.mean(3)),
        ("along width (x)", volumes.mean(4)),
        ("learned", learned),
    ]
    n = volumes.shape[0]
    fig, axes = plt.subplots(n, len(views), figsize=(1.6 * len(views), 1.6 * n), squeeze=False)
    for i in range(n):
        for k, (name, img) in enumerate(views):
            _show(axes[i, k], img[i])
            if i == 0:
                axes[i, k].set_title(name, fontsize=7)
        head = f"pred {int(pred[i])}" + (f" ({int(labels[i])})" if labels is not None else "")
        wrong = labels is not None and pred[i] != labels[i]
        axes[i, 0].set_ylabel(head, fontsize=7, color="red" if wrong else "black")
    return _save(plt, fig, out, title)


def labelled_grid(
    images: torch.Tensor, titles: list[str], out: str | os.PathLike[str], *, wrong: list[bool], cols: int = 8, title=""
) -> Path:
    """Images ``(N, C, H, W)`` in a grid, each with its title (red where ``wrong``), written to ``out``."""
    plt = _pyplot()
    n = images.shape[0]
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            _show(ax, images[k])
            ax.set_title(titles[k], fontsize=7, color="red" if wrong[k] else "black")
        else:
            ax.axis("off")
    return _save(plt, fig, out, title)


def _save(plt, fig, out: str | os.PathLike[str], title: str = "") -> Path:
    """Title, lay out, write (making the folder) and close ``fig``; returns the path."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _pil():
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ImportError("GIF frames need pillow: pip install pillow (it comes with matplotlib)") from None
    return Image, ImageDraw


def save_frame(
    model: nn.Module, images: torch.Tensor, out: str | os.PathLike[str], *, scale: int = 3, title: str = ""
) -> Path:
    """Save the first transformer's outputs on ``images`` as one tiled grayscale PNG (a GIF frame)."""
    Image, ImageDraw = _pil()
    _, views = transformer_views(model, images)
    V = views[0]["output"].float().mean(1) if views else images.float().mean(1)  # (B, H', W')
    b, h, w = V.shape
    cols = min(b, 8)
    rows = -(-b // cols)
    lo, hi = float(V.min()), float(V.max())
    V = ((V - lo) / max(hi - lo, 1e-6) * 255).round().to(torch.uint8)
    top = 12 if title else 0
    tile = torch.zeros(rows * (h + 2), cols * (w + 2), dtype=torch.uint8)
    for k in range(b):
        r, c = divmod(k, cols)
        tile[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = V[k]
    img = Image.fromarray(tile.numpy(), mode="L").resize((tile.shape[1] * scale, tile.shape[0] * scale), Image.NEAREST)
    if title:
        canvas = Image.new("L", (img.width, img.height + top), 0)
        canvas.paste(img, (0, top))
        ImageDraw.Draw(canvas).text((2, 0), title, fill=255)
        img = canvas
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def write_gif(frames: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, ms: int = 400) -> Path | None:
    """Join PNG ``frames`` into a looping GIF (the last frame held longer). Returns ``None`` if there are none."""
    if not frames:
        return None
    Image, _ = _pil()
    images = [Image.open(f).convert("L") for f in frames]
    durations = [ms] * (len(images) - 1) + [ms * 4]
    out = Path(out)
    images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return out
