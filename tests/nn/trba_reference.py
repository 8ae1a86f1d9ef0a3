"""An independent reference of the TPS stage of TRBA (clovaai's deep-text-recognition-benchmark), written from the
published formulas (RARE, Shi et al. 2016, and the behaviour of their public implementation), in float64, with no
torchstn code: a TRBA-style state dict of random weights, and the output their module computes from it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PREFIX = "module.Transformation."
EPS = 1e-6  # their P_hat kernel: r^2 log(r + eps)


def trba_state_dict(
    num_fiducial: int = 20, in_channels: int = 1, channels=(8, 16, 16, 32), fc: int = 32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights under TRBA's key names and shapes (plus their size-dependent buffers and another stage's key),
    float32 as their checkpoints are. fc2 starts near their Fig. 6(a) bias so the points stay near the image."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    c_in = in_channels
    for i, c in zip((0, 4, 8, 12), channels):
        sd[f"LocalizationNetwork.conv.{i}.weight"] = torch.randn(c, c_in, 3, 3, generator=g) * math.sqrt(2 / (9 * c_in))
        bn = f"LocalizationNetwork.conv.{i + 1}."
        sd[bn + "weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[bn + "bias"] = 0.1 * torch.randn(c, generator=g)
        sd[bn + "running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[bn + "running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[bn + "num_batches_tracked"] = torch.tensor(100)
        c_in = c
    sd["LocalizationNetwork.localization_fc1.0.weight"] = torch.randn(fc, c_in, generator=g) / math.sqrt(c_in)
    sd["LocalizationNetwork.localization_fc1.0.bias"] = 0.1 * torch.randn(fc, generator=g)
    sd["LocalizationNetwork.localization_fc2.weight"] = 0.05 * torch.randn(2 * num_fiducial, fc, generator=g)
    x = torch.linspace(-1, 1, num_fiducial // 2)
    top, bottom = torch.linspace(0, -1, num_fiducial // 2), torch.linspace(1, 0, num_fiducial // 2)
    bias = torch.cat((torch.stack((x, top), 1), torch.stack((x, bottom), 1))).reshape(-1)
    sd["LocalizationNetwork.localization_fc2.bias"] = bias + 0.05 * torch.randn(2 * num_fiducial, generator=g)
    sd["GridGenerator.inv_delta_C"] = torch.zeros(num_fiducial + 3, num_fiducial + 3)  # size-dependent buffers
    sd["GridGenerator.P_hat"] = torch.zeros(32 * 100, num_fiducial + 3)
    out = {PREFIX + k: v for k, v in sd.items()}
    out["module.FeatureExtraction.ConvNet.conv0_1.weight"] = torch.zeros(1)  # another stage: ignored
    return out


def _localise(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Their LocalizationNetwork in float64 (BatchNorm in eval mode): images -> C' (B, F, 2)."""
    p = {k[len(PREFIX) :]: v.double() for k, v in sd.items() if k.startswith(PREFIX)}
    h = x.double()
    for block, i in enumerate((0, 4, 8, 12)):
        bn = f"LocalizationNetwork.conv.{i + 1}."
        h = F.conv2d(h, p[f"LocalizationNetwork.conv.{i}.weight"], padding=1)
        h = F.batch_norm(h, p[bn + "running_mean"], p[bn + "running_var"], p[bn + "weight"], p[bn + "bias"])
        h = F.relu(h)
        h = F.max_pool2d(h, 2, 2) if block < 3 else h.mean((2, 3))
    h = F.relu(
        F.linear(
            h, p["LocalizationNetwork.localization_fc1.0.weight"], p["LocalizationNetwork.localization_fc1.0.bias"]
        )
    )
    c_prime = F.linear(
        h, p["LocalizationNetwork.localization_fc2.weight"], p["LocalizationNetwork.localization_fc2.bias"]
    )
    return c_prime.view(x.shape[0], -1, 2)


def _fiducials(num_fiducial: int) -> torch.Tensor:
    """C: top row at y = -1, bottom row at y = 1, x evenly in [-1, 1] (F, 2)."""
    x = torch.linspace(-1, 1, num_fiducial // 2, dtype=torch.float64)
    ones = torch.ones_like(x)
    return torch.cat((torch.stack((x, -ones), 1), torch.stack((x, ones), 1)))


def _delta_c_inverse(C: torch.Tensor) -> torch.Tensor:
    """inv([[1, C, U(C, C)], [0, C^T], [0, 1^T]]) (F+3, F+3) with U(r) = r^2 log r, U(0) = 0."""
    n = C.shape[0]
    r = torch.cdist(C, C)
    r.fill_diagonal_(1.0)  # log 1 = 0
    hat = r**2 * torch.log(r)
    top = torch.cat((torch.ones(n, 1, dtype=C.dtype), C, hat), 1)  # (F, F+3)
    mid = torch.cat((torch.zeros(2, 3, dtype=C.dtype), C.t()), 1)  # (2, F+3)
    bottom = torch.cat((torch.zeros(1, 3, dtype=C.dtype), torch.ones(1, n, dtype=C.dtype)), 1)  # (1, F+3)
    return torch.linalg.inv(torch.cat((top, mid, bottom)))


def _p_hat(C: torch.Tensor, out_size, eps: float) -> torch.Tensor:
    """[1, P, r^2 log(r + eps)] at the rectified image's pixel centres P ((2i + 1) / n - 1), (H*W, F+3)."""
    H, W = out_size
    gx = (torch.arange(-W, W, 2, dtype=torch.float64) + 1.0) / W
    gy = (torch.arange(-H, H, 2, dtype=torch.float64) + 1.0) / H
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    P = torch.stack((xx, yy), -1).reshape(-1, 2)  # (H*W, 2), x fastest
    r = torch.cdist(P, C)
    kernel = r**2 * torch.log(r + eps) if eps else r**2 * torch.log(r.clamp_min(1e-300))  # r^2 log r -> 0 at r = 0
    return torch.cat((torch.ones(P.shape[0], 1, dtype=P.dtype), P, kernel), 1)


def reference_trba_tps(
    sd: dict[str, torch.Tensor], x: torch.Tensor, out_size=(32, 100), eps: float = EPS, return_grid: bool = False
):
    """Their TPS stage on images ``x``: C' from the localisation net, T = inv(delta_C) [C'; 0], P' = P_hat T,
    then grid_sample with border padding and align_corners=True; float64. ``eps=0`` gives the exact kernel."""
    c_prime = _localise(sd, x)  # (B, F, 2)
    B, n, _ = c_prime.shape
    C = _fiducials(n)
    T = _delta_c_inverse(C) @ torch.cat((c_prime, c_prime.new_zeros(B, 3, 2)), 1)  # (B, F+3, 2)
    grid = (_p_hat(C, out_size, eps) @ T).view(B, *out_size, 2)
    out = F.grid_sample(x.double(), grid, padding_mode="border", align_corners=True)
    return (out, grid) if return_grid else out


def parity_table(seeds=range(1, 6), in_sizes=((32, 100), (32, 140), (24, 64))) -> list[tuple]:
    """Max abs differences of the imported rectifier from the reference (the numbers of docs/tps.md): per input size,
    (float32 vs reference, float64 vs reference, exact kernel on both sides, exact kernel vs their kernel)."""
    from torchstn.nn import load_trba_tps

    rows = []
    for in_size in in_sizes:
        worst = [0.0] * 4
        for seed in seeds:
            sd = trba_state_dict(seed=seed)
            x = torch.rand(3, 1, *in_size, generator=torch.Generator().manual_seed(seed + 1))
            want, exact = reference_trba_tps(sd, x), reference_trba_tps(sd, x, eps=0.0)
            with torch.no_grad():
                ours, ours_exact = load_trba_tps(sd).eval(), load_trba_tps(sd, kernel_eps=0.0).double().eval()
                x64 = x.double()
                diffs = [ours(x).double() - want, ours.double()(x64) - want, ours_exact(x64) - exact]
                diffs.append(ours_exact(x64) - want)
            worst = [max(w, float(d.abs().max())) for w, d in zip(worst, diffs)]
        rows.append((in_size, *worst))
    return rows


if __name__ == "__main__":  # PYTHONPATH=src python -m tests.nn.trba_reference
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}")
    for in_size, *worst in parity_table():
        print(f"{in_size[0]} x {in_size[1]} | " + " | ".join(f"{w:.1e}" for w in worst))
