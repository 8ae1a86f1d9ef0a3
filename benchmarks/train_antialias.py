"""Does anti-aliased sampling change what an ST-CNN learns when the transformer itself downsamples?

Task: cluttered translated MNIST (the paper's TC recipe, §4.1): a 28x28 digit at a uniformly random position on a
60x60 canvas plus 6 random 6x6 crops of other training digits. Model: ``torchstn.SpatialTransformer`` (affine,
``torchstn.conv_localisation``) whose output is *smaller* than its input (30x30 by default: a 2x zoom-out at the
identity, instead of the paper's full-size sampling + 2x average pool), followed by a small CNN
(conv5-32, pool, conv5-64, pool, FC). The two arms differ only in ``antialias=True``; same seeds, data and order.

Reported per run: test error, the mean theta scale at the end, and the stability of theta: the std over the last
20% of training of the theta predicted for a fixed probe batch (mean over probe images and the 6 parameters), plus
the mean absolute change of theta between probes there. Adam, constant learning rate (localisation net x0.1).

Run: ``python benchmarks/train_antialias.py`` (default: 2 seeds x 2 arms x out sizes 30 and 15, a few minutes per run
on 2 CPU cores); ``--steps 300 --seeds 0 --out-sizes 30`` for a short version. Writes
``benchmarks/results/antialias_training.json``. Needs MNIST in the local cache (``torchstn data fetch mnist``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import torchstn
from torchstn.data.mnist import load_mnist

ROOT = Path(__file__).resolve().parents[1]
CANVAS = 60


def cluttered(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int, clutter: int = 6):
    """``n`` cluttered 60x60 canvases ``(n, 1, 60, 60)`` in [0, 1] and their labels (seeded)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(images), (n,), generator=g)
    digits = images[idx].float().div(255)  # (n, 28, 28)
    canvas = torch.zeros(n, CANVAS, CANVAS)
    pos = torch.randint(CANVAS - 28 + 1, (n, 2), generator=g)
    src = torch.randint(len(images), (n, clutter), generator=g)
    crop = torch.randint(28 - 6 + 1, (n, clutter, 2), generator=g)
    at = torch.randint(CANVAS - 6 + 1, (n, clutter, 2), generator=g)
    for i in range(n):
        for k in range(clutter):
            (cy, cx), (ay, ax) = crop[i, k].tolist(), at[i, k].tolist()
            piece = images[src[i, k], cy : cy + 6, cx : cx + 6].float().div(255)
            region = canvas[i, ay : ay + 6, ax : ax + 6]
            torch.maximum(region, piece, out=region)
        y, x = pos[i].tolist()
        region = canvas[i, y : y + 28, x : x + 28]
        torch.maximum(region, digits[i], out=region)
    return canvas.unsqueeze(1), labels[idx]


class STCNN(nn.Module):
    """Affine ST (60x60 -> out_size) then conv5-32, pool, conv5-64, pool, FC 10."""

    def __init__(self, out_size: int, antialias: bool):
        super().__init__()
        self.st = torchstn.SpatialTransformer(
            torchstn.conv_localisation(1, (CANVAS, CANVAS)),
            "affine",
            out_size=(out_size, out_size),
            antialias=antialias,
        )
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 64 * (out_size // 4) ** 2
        self.classifier = nn.Linear(flat, 10)

    def forward(self, x, return_theta=False):
        v, theta = self.st(x, return_theta=True)
        logits = self.classifier(self.features(v))
        return (logits, theta) if return_theta else logits


@torch.no_grad()
def evaluate(model, x, y, batch=500) -> float:
    model.eval()
    wrong = sum(int((model(x[i : i + batch]).argmax(1) != y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    model.train()
    return 100.0 * wrong / len(x)


def run(args, data, out_size: int, antialias: bool, seed: int) -> dict:
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = STCNN(out_size, antialias)
    opt = torch.optim.Adam(torchstn.param_groups(model, lr=args.lr, loc_lr_mult=args.loc_lr_mult))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps) if args.schedule == "cosine" else None
    order = torch.Generator().manual_seed(1000 + seed)
    probe = xte[:256]
    tail_start = int(0.8 * args.steps)
    tail, losses = [], []
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(len(xtr), (args.batch,), generator=order)
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
        if step >= tail_start and ((step - tail_start) % args.probe_every == 0 or step == args.steps - 1):
            with torch.no_grad():
                model.eval()
                tail.append(model.st.predict_theta(probe))
                model.train()
    seconds = time.perf_counter() - t0
    thetas = torch.stack(tail)  # (checkpoints, probe, 6)
    scale = thetas[-1].view(-1, 2, 3)[:, :, :2].det().abs().sqrt().mean()  # sqrt |det A|: ~ normalised extent read
    return {
        "out_size": out_size,
        "antialias": antialias,
        "seed": seed,
        "steps": args.steps,
        "test_error_pct": round(evaluate(model, xte, yte), 2),
        "final_train_loss": round(statistics.mean(losses[-100:]), 4),
        "theta_std_last20pct": round(float(thetas.std(dim=0).mean()), 6),
        "theta_mean_abs_change_last20pct": round(float((thetas[1:] - thetas[:-1]).abs().mean()), 6),
        "theta_scale_final": round(float(scale), 3),
        "zoom_out_final": round(float(scale) * CANVAS / out_size, 2),  # input px per output px at the end
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--loc-lr-mult", type=float, default=0.1)
    parser.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="constant keeps theta's late-training jitter visible (cosine damps it in both arms)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out-sizes", type=int, nargs="+", default=[30, 15])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--probe-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "antialias_training.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_images, train_labels = load_mnist("train", source="local")
    test_images, test_labels = load_mnist("test", source="local")
    data = (
        cluttered(train_images, train_labels, args.train, seed=1),
        cluttered(test_images, test_labels, args.test, seed=2),
    )
    runs = []
    for out_size in args.out_sizes:
        for seed in args.seeds:
            for antialias in (False, True):
                r = run(args, data, out_size, antialias, seed)
                runs.append(r)
                print(json.dumps(r), flush=True)
    summary = {}
    for out_size in args.out_sizes:
        for antialias in (False, True):
            rs = [r for r in runs if r["out_size"] == out_size and r["antialias"] == antialias]
            summary[f"out {out_size} | antialias {antialias}"] = {
                k: round(statistics.mean(r[k] for r in rs), 6)
                for k in ("test_error_pct", "theta_std_last20pct", "theta_mean_abs_change_last20pct", "zoom_out_final")
            }
    result = {
        "command": "python benchmarks/train_antialias.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        ),
        "torch": torch.__version__,
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
