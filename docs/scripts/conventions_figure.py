"""Draw docs/img/conventions.png: pixel centres in normalised coordinates for both align_corners values, and the
output -> input direction of a transform. Run: python docs/scripts/conventions_figure.py"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from torchstn.coords import identity_grid  # noqa: E402
from torchstn.functional import affine_grid  # noqa: E402

H, W = 3, 4
fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
for ax, ac in zip(axes[:2], (False, True)):
    for i in range(W + 1):  # pixel boundaries in normalised units (align_corners=False: edges at -1, +1)
        x = -1 + 2 * i / W if not ac else -1 + 2 * (i - 0.5) / (W - 1)
        ax.axvline(x, color="0.8", lw=1)
    for j in range(H + 1):
        y = -1 + 2 * j / H if not ac else -1 + 2 * (j - 0.5) / (H - 1)
        ax.axhline(y, color="0.8", lw=1)
    g = identity_grid((H, W), ac)[0]
    ax.scatter(g[..., 0].flatten(), g[..., 1].flatten(), color="C0", zorder=3)
    for r in range(H):
        for c in range(W):
            x, y = g[r, c].tolist()
            ax.annotate(
                f"px ({c},{r})\n({x:.2f}, {y:.2f})",
                (x, y),
                fontsize=6.5,
                ha="center",
                va="bottom",
                xytext=(0, 4),
                textcoords="offset points",
            )
    ax.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, color="C3", lw=2))
    ax.set_xlim(-1.8, 1.8)
    ax.set_ylim(1.8, -1.8)  # y down, like image rows
    ax.set_aspect("equal")
    ax.set_title(f"align_corners={ac}: pixel (col,row) -> normalised (x,y)\nred square = [-1, 1]^2", fontsize=9)
    ax.set_xlabel("x (width, last tensor dim)")
    ax.set_ylabel("y (height)")

ax = axes[2]
theta = torch.tensor([[[0.5, -0.2, 0.3], [0.2, 0.5, -0.2]]])
grid = affine_grid(theta, (6, 6))[0]
ax.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, color="k", lw=1.5, label="input U"))
ax.scatter(grid[..., 0].flatten(), grid[..., 1].flatten(), s=8, color="C1", label="grid: where output pixels read")
corners = affine_grid(theta, (2, 2), align_corners=True)[0].reshape(-1, 2)[[0, 1, 3, 2, 0]]
ax.plot(corners[:, 0], corners[:, 1], color="C1")
ax.set_xlim(-1.2, 1.2)
ax.set_ylim(1.2, -1.2)
ax.set_aspect("equal")
ax.legend(loc="lower left", fontsize=7)
ax.set_title("transforms map OUTPUT -> INPUT (backward warping)\ntheta = [[0.5,-0.2,0.3],[0.2,0.5,-0.2]]", fontsize=9)
fig.tight_layout()
out = Path(__file__).resolve().parents[1] / "img" / "conventions.png"
fig.savefig(out, dpi=80)
print(out)
