"""Anti-aliased sampling: quality (PSNR against supersampled references) and speed (forward + backward).

Question: does ``torchstn.sample(..., antialias=True)`` remove the aliasing of a zooming-out spatial transformer, how
close does it get to the ideal area filter, and what does it cost next to ``F.grid_sample``?

Case ``quality`` (no timing):

* Images (512x512, values in [0, 1]): a zone plate (unaliased over the region used: at most 0.35 cycles/px), a
  procedural "natural-ish" image (fractal 1/f noise, hard-edged shapes, patches of fine gratings), and a mosaic of
  real MNIST test digits when they are in the local cache.
* Transforms: the central 256x256 input region mapped to an output of ``256/s`` pixels (s = 2, 4, 8), with and
  without a 30 degree rotation; 3x at 10 degrees; an anisotropic case (4x along x, 1x along y).
* References (float64): (1) "box", the ideal area filter: the mean of the input pixels under each output pixel's
  footprint parallelogram, each weighted by the area it covers (``K x K`` stratified nearest-pixel sub-samples per
  output pixel, ``K = max(16, 4 s)``, so 4+ per input pixel and axis); (2) "gaussian": a Gaussian with that box's
  covariance (``J J^T / 12``) on the bilinear reconstruction of the input, densely sampled.
* PSNR in dB (peak 1, capped at 60 = equal up to rounding) against each reference for ours, ``F.grid_sample``
  bilinear / bicubic, ``F.interpolate(antialias=True)`` (bilinear) and ``F.interpolate(mode="area")`` (pure scaling
  only), and the alternative designs we measured (other levels and tap counts of our sampler, a Gaussian
  prefilter). Also draws ``docs/img/antialias.png``.

Case ``speed``: B=16, 3x224x224 -> 56x56, a random per-sample rotation (+-30 deg) and zoom-out (4x +- 10%), forward +
backward with gradients for the input and theta, every method timed interleaved by the shared harness
(``benchmarks/README.md``: fresh process, warm-up, quiet-machine gate, median and per-repeat ratios to bilinear
``grid_sample``).

Run: ``python benchmarks/bench_antialias.py --until-quiet 600`` (the published numbers); ``--only quality`` for the
PSNR part alone (~30 s); ``--render benchmarks/results/antialias.json`` for the tables.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, fmt_ratio, paired_ratio, table, time_interleaved  # noqa: E402

import torchstn  # noqa: E402
from torchstn.functional.affine import affine_grid  # noqa: E402
from torchstn.functional.antialias import TAP_SHARE, _sample_antialiased, affine_jacobian  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "docs" / "img" / "antialias.png"
SIZE = 512  # input images are SIZE x SIZE
REGION = 256  # the central region the output covers, in input pixels
# the design space of our sampler (options of its private core)
ALTERNATIVES = {
    "alt: classic mip-map level log2(q)": {"classic_level": True},
    "alt: mip-map + taps (tap_share=2)": {"tap_share": 2.0},
    "alt: supersampling (tap_share=1)": {"tap_share": 1.0},
}
CASES = [{"part": "quality"}, {"part": "speed"}]


# ---------------------------------------------------------------------------------------------------- images
def zone_plate(n: int = SIZE) -> torch.Tensor:
    """``0.5 + 0.5 cos(pi r^2 / n)``: local frequency r / n cycles/px (Nyquist at r = n / 2)."""
    c = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    r2 = c.view(1, -1) ** 2 + c.view(-1, 1) ** 2
    return 0.5 + 0.5 * torch.cos(math.pi * r2 / n)


def natural_image(n: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Fractal 1/f noise + hard-edged discs and bars + patches of fine gratings, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, n, dtype=torch.float64)
    for octave in range(2, 9):  # 1/f noise: octave k has 2^k cells, amplitude 2^-k/2... summed
        cells = 2**octave
        noise = torch.rand(1, 1, cells, cells, generator=g, dtype=torch.float64)
        img += F.interpolate(noise, size=(n, n), mode="bicubic", align_corners=False)[0, 0] * 0.6**octave
    img = (img - img.min()) / (img.max() - img.min()) * 0.6 + 0.2
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    for _ in range(40):  # discs and rotated bars with sharp edges (1 px anti-aliased)
        cx, cy, r = (torch.rand(3, generator=g, dtype=torch.float64) * torch.tensor([n, n, n / 10])).tolist()
        val = float(torch.rand(1, generator=g))
        if torch.rand(1, generator=g) < 0.5:
            d = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() - r
        else:
            a = float(torch.rand(1, generator=g)) * math.pi
            along = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
            across = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
            d = torch.maximum(along.abs() - 3 * r, across.abs() - r / 3)
        m = (0.5 - d).clamp(0, 1)
        img = img * (1 - m) + val * m
    for _ in range(12):  # fine gratings (periods 2.5 to 6 px), the part that aliases
        cx, cy = (torch.rand(2, generator=g, dtype=torch.float64) * n).tolist()
        period = 2.5 + 3.5 * float(torch.rand(1, generator=g))
        a = float(torch.rand(1, generator=g)) * math.pi
        phase = 2 * math.pi * ((xx * math.cos(a) + yy * math.sin(a)) / period)
        m = (((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() < n / 10).double()
        img = img * (1 - m) + (0.5 + 0.45 * torch.cos(phase)) * m
    return img.clamp(0, 1)


def mnist_mosaic(n: int = SIZE) -> torch.Tensor | None:
    """Real MNIST test digits tiled on a 512x512 canvas, or None when MNIST is not in the local cache."""
    try:
        from torchstn.data.mnist import load_mnist

        images, _ = load_mnist("test", source="local")
    except Exception:  # noqa: BLE001 - not cached: the benchmark runs without it
        return None
    k = n // 28
    tiles = images[: k * k].double().div(255).view(k, k, 28, 28).permute(0, 2, 1, 3).reshape(k * 28, k * 28)
    out = torch.zeros(n, n, dtype=torch.float64)
    off = (n - k * 28) // 2
    out[off : off + k * 28, off : off + k * 28] = tiles
    return out


# ---------------------------------------------------------------------------------------------------- transforms
def case_matrix(scale_x: float, scale_y: float, degrees: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """Output->input matrix (1, 2, 3) and out_size of the central REGION zoomed out by (scale_x, scale_y), rotated."""
    a = math.radians(degrees)
    half = REGION / SIZE  # normalised half-extent of the region
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    lin = rot * half
    out_size = (int(REGION / scale_y), int(REGION / scale_x))
    if scale_y != scale_x:  # anisotropic: keep the output square region on x, shrink the covered height
        out_size = (int(REGION / scale_x), int(REGION / scale_x))
        lin = rot @ torch.diag(torch.tensor([half, half * scale_y / scale_x], dtype=torch.float64))
    m = torch.cat((lin, torch.zeros(2, 1, dtype=torch.float64)), dim=1)
    return m.unsqueeze(0), out_size


def reference(img: torch.Tensor, m: torch.Tensor, out_size: tuple[int, int], scale: float) -> torch.Tensor:
    """The ideal area filter: the mean of the input pixels over every output pixel's footprint parallelogram, each
    pixel weighted by the area it covers (K x K stratified nearest-pixel sub-samples, 4+ per input pixel and axis)."""
    k = max(16, int(4 * scale))
    fine = affine_grid(m, (out_size[0] * k, out_size[1] * k))  # sub-pixel centres of the output pixels
    v = F.grid_sample(img, fine, mode="nearest", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(v, k)


def reference_gaussian(img: torch.Tensor, m: torch.Tensor, out_size: tuple[int, int], scale: float) -> torch.Tensor:
    """Second reference: a Gaussian with the footprint box's covariance (``J J^T / 12``, i.e. sigma^2 = 1/12 output
    px^2), truncated at +-1 output px (3.5 sigma), on the bilinear reconstruction; K x K sub-samples per output px."""
    k = 2 * max(8, int(2 * scale))
    (H, W), f64 = out_size, torch.float64
    fy = (torch.arange((H + 2) * k, dtype=f64) + 0.5) / k - 1.0  # output pixel units, pixel i spans [i, i + 1)
    fx = (torch.arange((W + 2) * k, dtype=f64) + 0.5) / k - 1.0
    yy, xx = torch.meshgrid(2 * fy / H - 1, 2 * fx / W - 1, indexing="ij")  # normalised output coordinates
    pts = torch.stack((xx, yy), dim=-1)  # (Hf, Wf, 2)
    fine = pts @ m[0, :, :2].T + m[0, :, 2]
    v = F.grid_sample(img, fine.unsqueeze(0), mode="bilinear", padding_mode="zeros", align_corners=False)
    off = (torch.arange(2 * k, dtype=f64) + 0.5) / k - 1.0
    g = torch.exp(-off.square() * 6.0)  # exp(-x^2 / (2 sigma^2)), sigma^2 = 1/12
    kern = (g.view(-1, 1) * g.view(1, -1) / g.sum() ** 2).view(1, 1, 2 * k, 2 * k)
    return F.conv2d(v[..., k // 2 :, k // 2 :], kern, stride=k)[..., :H, :W]


def gaussian_prefilter(img: torch.Tensor, m: torch.Tensor, out_size) -> torch.Tensor:
    """Design alternative: blur the input with a Gaussian of the footprint box's covariance (``J J^T / 12``) per
    sample (a grouped convolution), then sample bilinearly. ``m`` is ``(B, 2, 3)``."""
    B, C = img.shape[:2]
    J = affine_jacobian(m, img.shape[2:], out_size)  # (B, 2, 2)
    cov = J @ J.transpose(1, 2) / 12.0 + 1e-3 * torch.eye(2, dtype=img.dtype)
    rad = math.ceil(3 * math.sqrt(float(cov.detach().diagonal(dim1=1, dim2=2).max())))
    c = torch.arange(-rad, rad + 1, dtype=img.dtype)
    pts = torch.stack(torch.meshgrid(c, c, indexing="xy"), dim=-1)  # (k, k, 2) as (x, y)
    kern = torch.exp(-0.5 * torch.einsum("hwi,bij,hwj->bhw", pts, torch.linalg.inv(cov), pts))
    kern = (kern / kern.sum((1, 2), keepdim=True)).repeat_interleave(C, 0).unsqueeze(1)  # (B C, 1, k, k)
    blurred = F.conv2d(img.reshape(1, B * C, *img.shape[2:]), kern, padding=rad, groups=B * C).view_as(img)
    return F.grid_sample(blurred, affine_grid(m, out_size), align_corners=False)


def methods(img, m, out_size, pure_scale):
    g = affine_grid(m, out_size)
    out = {
        "ours": torchstn.sample(img, g, antialias=True),
        "grid_sample bilinear": F.grid_sample(img, g, mode="bilinear", align_corners=False),
        "grid_sample bicubic": F.grid_sample(img, g, mode="bicubic", align_corners=False).clamp(0, 1),
        **{name: _sample_antialiased(img, g, None, "zeros", False, **kw) for name, kw in ALTERNATIVES.items()},
        "alt: Gaussian prefilter": gaussian_prefilter(img, m, out_size),
    }
    if pure_scale:
        lo = (SIZE - REGION) // 2
        crop = img[:, :, lo : lo + REGION, lo : lo + REGION]
        out["F.interpolate bilinear antialias"] = F.interpolate(
            crop, size=out_size, mode="bilinear", antialias=True, align_corners=False
        )
        out["F.interpolate area"] = F.interpolate(crop, size=out_size, mode="area")
    return out


PICTURE_COLUMNS = ("grid_sample bilinear", "grid_sample bicubic", "ours", "alt: mip-map + taps (tap_share=2)")
PSNR_CAP = 60.0  # dB; 60 means "equal up to float rounding" (e.g. any area filter on an aligned integer zoom-out)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float(((x.double() - ref) ** 2).mean())
    return min(PSNR_CAP, 10 * math.log10(1.0 / max(mse, 1e-30)))


def quality() -> tuple[dict, dict]:
    images = {"zone plate": zone_plate(), "natural-ish": natural_image()}
    digits = mnist_mosaic()
    if digits is not None:
        images["MNIST mosaic"] = digits
    cases = [(s, s, d) for s in (2, 4, 8) for d in (0, 30)] + [(3, 3, 10), (4, 1, 0), (4, 1, 30)]
    table, pictures = {}, {}
    for name, im in images.items():
        img = im.view(1, 1, SIZE, SIZE)
        for sx, sy, deg in cases:
            m, out_size = case_matrix(sx, sy, deg)
            refs = {
                "box": reference(img, m, out_size, max(sx, sy)),
                "gaussian": reference_gaussian(img, m, out_size, max(sx, sy)),
            }
            outs = methods(img, m, out_size, pure_scale=deg == 0 and sx == sy)
            key = f"{name} | {sx}x{'' if sx == sy else f' x {sy}y'} | rot {deg}"
            table[key] = {r: {k: round(psnr(v, ref), 2) for k, v in outs.items()} for r, ref in refs.items()}
            if sx == sy == 4 and deg == 30:
                pictures[name] = {"reference (area)": refs["box"], **{k: outs[k] for k in PICTURE_COLUMNS}}
            print(
                f"{key:32s} "
                + "  ".join(f"{k.split(':')[-1].strip()[:14]}={v:.1f}" for k, v in table[key]["box"].items()),
                flush=True,
            )
    return table, pictures


def summarise(table: dict) -> dict:
    """Mean PSNR per method and reference, and ours minus bilinear grid_sample at 4x (the goal: >= 6 dB)."""
    out = {}
    for r in ("box", "gaussian"):
        names = [k for k in next(iter(table.values()))[r] if all(k in t[r] for t in table.values())]
        out[f"mean_psnr_{r}"] = {k: round(statistics.mean(t[r][k] for t in table.values()), 2) for k in names}
        gains = {
            key: round(t[r]["ours"] - t[r]["grid_sample bilinear"], 2) for key, t in table.items() if "| 4x |" in key
        }
        out[f"ours_minus_bilinear_at_4x_{r}"] = gains
        out[f"ours_minus_interpolate_antialias_pure_scale_{r}"] = {
            key: round(t[r]["ours"] - t[r]["F.interpolate bilinear antialias"], 2)
            for key, t in table.items()
            if "F.interpolate bilinear antialias" in t[r]
        }
    return out


# ---------------------------------------------------------------------------------------------------- speed
def _timing_setup(B=16, C=3, n_in=224, n_out=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(B, C, n_in, n_in, generator=g, requires_grad=True)
    ang = (torch.rand(B, generator=g) - 0.5) * math.radians(60)
    scale = 1.0 + 0.2 * (torch.rand(B, generator=g) - 0.5)  # zoom-out 4x +- 10% (the out size gives the 4x)
    rot = torch.stack((torch.stack((ang.cos(), -ang.sin()), 1), torch.stack((ang.sin(), ang.cos()), 1)), 1)
    shift = (torch.rand(B, 2, 1, generator=g) - 0.5) * 0.1
    theta = torch.cat((rot * scale.view(B, 1, 1), shift), dim=2).requires_grad_()  # (B, 2, 3)
    grad_out = torch.randn(B, C, n_out, n_out, generator=g)
    return U, theta, grad_out, (n_out, n_out)


def _speed_fns(U, theta, grad_out, out_size) -> dict:
    in_size = tuple(U.shape[2:])

    def run(fn):
        return lambda: torch.autograd.grad(fn(), [U, theta], grad_out)

    def jac():
        return affine_jacobian(theta, in_size, out_size).view(-1, 1, 1, 2, 2)

    return {
        "grid_sample bilinear": run(lambda: F.grid_sample(U, affine_grid(theta, out_size), align_corners=False)),
        "grid_sample bicubic": run(
            lambda: F.grid_sample(U, affine_grid(theta, out_size), mode="bicubic", align_corners=False)
        ),
        "ours (footprint from grid)": run(lambda: torchstn.sample(U, affine_grid(theta, out_size), antialias=True)),
        "ours (footprint from matrix)": run(
            lambda: torchstn.sample(
                U, affine_grid(theta, out_size), antialias=True, jacobian=affine_jacobian(theta, in_size, out_size)
            )
        ),
        **{
            name: run(lambda kw=kw: _sample_antialiased(U, affine_grid(theta, out_size), jac(), "zeros", False, **kw))
            for name, kw in ALTERNATIVES.items()
            if "classic" not in name
        },
        "alt: Gaussian prefilter": run(lambda: gaussian_prefilter(U, theta, out_size)),
    }


def run_case(case: dict, method: Method) -> dict:
    if case["part"] == "quality":
        table_, pictures = quality()
        picture(pictures, PICTURE)
        return {
            "reference": "box: the area-weighted mean of the input pixels under each output pixel's footprint "
            "parallelogram (K x K stratified nearest-pixel sub-samples, K = max(16, 4 s), float64)",
            "reference_2": "gaussian: a Gaussian with the box's covariance J J^T / 12 on the bilinear "
            "reconstruction, densely sampled",
            "ours": f"torchstn.sample(..., antialias=True): mip-map + anisotropy taps, tap_share={TAP_SHARE}",
            "psnr_cap_db": PSNR_CAP,
            "summary": summarise(table_),
            "psnr_db": table_,
        }
    U, theta, grad_out, out_size = _timing_setup()
    fns = _speed_fns(U, theta, grad_out, out_size)
    with torch.no_grad():  # the two footprint sources must agree
        g = affine_grid(theta, out_size)
        a = torchstn.sample(U, g, antialias=True)
        b = torchstn.sample(U, g, antialias=True, jacobian=affine_jacobian(theta, U.shape[2:], out_size))
    stats = time_interleaved(fns, method)
    ratios = {k: paired_ratio(stats, k, "grid_sample bilinear") for k in fns}
    return {
        "stats": stats,
        "ratio_to_bilinear": ratios,
        "checks": {"grid_vs_matrix_footprint_max_abs_diff": float((a - b).abs().max())},
    }


# ---------------------------------------------------------------------------------------------------- picture
def picture(pictures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(pictures)
    cols = ["reference (area)", *PICTURE_COLUMNS]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.3 * len(rows)))
    for i, r in enumerate(rows):
        ref = pictures[r][cols[0]]
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(pictures[r][c][0, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            label = c.replace("alt: mip-map + taps (tap_share=2)", "ours, tap_share=2")
            label = label.replace("grid_sample ", "grid_sample\n")
            ax.set_title(label if j == 0 else f"{label}\n{psnr(pictures[r][c], ref):.1f} dB", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(r, fontsize=8)
    fig.suptitle("4x zoom-out with a 30 degree rotation (64x64 outputs); PSNR against the area filter", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def render(doc: dict) -> str:
    out = [f"Command: `{doc['command']}`  ", _common.env_line(doc), ""]
    for res in doc["cases"]:
        if res["case"]["part"] == "quality":
            out += ["PSNR (dB) against the area filter (box) and a Gaussian, mean over the images:", ""]
            rows = []
            names = ["grid_sample bilinear", "grid_sample bicubic", "ours", *ALTERNATIVES, "alt: Gaussian prefilter"]
            for case in ("2x | rot 30", "3x | rot 10", "4x | rot 0", "4x | rot 30", "8x | rot 30", "4x x 1y | rot 30"):
                keys = [k for k in res["psnr_db"] if k.split("|", 1)[1].strip() == case]
                for ref in ("box", "gaussian"):
                    means = [statistics.mean(res["psnr_db"][k][ref][m] for k in keys) for m in names]
                    rows.append([case.replace(" | ", ", "), ref] + [f"{v:.1f}" for v in means])
            out += [table(["case", "reference", *[n.replace("alt: ", "") for n in names]], rows), ""]
        else:
            rows = [[k, fmt_ms(s), fmt_ratio(res["ratio_to_bilinear"][k])] for k, s in res["stats"].items()]
            g = res["gate"]
            out += [
                (
                    f"Forward + backward, B=16, 3x224x224 -> 56x56, ms median [IQR], ratio to bilinear per repeat "
                    f"median [quartiles]; quiet {g['quiet_repeats']}/{g['repeats']}:"
                ),
                "",
            ]
            out += [table(["method", "time (ms)", "ratio to grid_sample bilinear"], rows), ""]
    return "\n".join(out)


if __name__ == "__main__":
    _common.main("antialias", __doc__.splitlines()[0], CASES, run_case, render)
