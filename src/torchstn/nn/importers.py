"""Load the TPS stage of a TRBA checkpoint (clovaai's deep-text-recognition-benchmark) into a :class:`TPSRectifier`.

Their TPS module (``Transformation``) holds ``LocalizationNetwork.conv`` (four conv / BatchNorm blocks at indices 0, 1,
4, 5, 8, 9, 12, 13), ``LocalizationNetwork.localization_fc1.0`` (``Linear(512, 256)``) and
``LocalizationNetwork.localization_fc2`` (``Linear(256, 2F)``, the fiducial points' source positions), plus two
size-dependent buffers, ``GridGenerator.inv_delta_C`` and ``GridGenerator.P_hat``, which the importer drops (our TPS
basis is computed per output size). A checkpoint saved from ``nn.DataParallel`` prefixes every key with
``module.Transformation.``; the importer finds the prefix.

Their fiducial layout is ours for ``layout=(2, F/2)`` (the top row left to right at y = -1, then the bottom row at
y = 1; x evenly spaced from -1 to 1), in the same order, so the regression layer loads unchanged. Their predicted
points are in the ``align_corners=True`` frame (they sample with ``align_corners=True``), so the imported rectifier
has ``theta_align_corners=True`` (see :mod:`torchstn.nn.rectifier`). Their grid's kernel is ``r^2 log(r + 1e-6)``;
the imported rectifier uses it too (``kernel_eps=1e-6``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from torchstn.errors import DataError
from torchstn.nn.rectifier import TPSRectifier, text_localisation

__all__ = ["load_trba_tps", "trba_tps_key_map"]

_FC2 = "LocalizationNetwork.localization_fc2.weight"
_CONVS = (0, 4, 8, 12)  # conv indices of their LocalizationNetwork.conv; BatchNorm at i + 1
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def trba_tps_key_map() -> dict[str, str]:
    """Their key (after the prefix) -> our :class:`TPSRectifier` key, for every tensor the importer loads.

    Example:
        >>> m = trba_tps_key_map()
        >>> m["LocalizationNetwork.localization_fc1.0.weight"], m["LocalizationNetwork.localization_fc2.bias"]
        ('localisation.17.weight', 'head.linear.bias')
        >>> len(m)  # 4 convs, 4 BatchNorms of 5 tensors, 2 linear layers of 2
        28
    """
    ours: dict[str, str] = {}
    for i in _CONVS:
        ours[f"LocalizationNetwork.conv.{i}.weight"] = f"localisation.{i}.weight"
        for k in _BN_KEYS:
            ours[f"LocalizationNetwork.conv.{i + 1}.{k}"] = f"localisation.{i + 1}.{k}"
    for k in ("weight", "bias"):
        ours[f"LocalizationNetwork.localization_fc1.0.{k}"] = f"localisation.17.{k}"
        ours[f"LocalizationNetwork.localization_fc2.{k}"] = f"head.linear.{k}"
    return ours


def load_trba_tps(
    state_dict: Mapping[str, torch.Tensor],
    *,
    out_size: Sequence[int] = (32, 100),
    prefix: str | None = None,
    **options,
) -> TPSRectifier:
    """A :class:`TPSRectifier` holding the TPS weights of a TRBA-style checkpoint, reproducing its output.

    The fiducial count, input channels and layer widths come from the tensors' shapes. Call ``.eval()`` for
    inference (BatchNorm).

    Args:
        state_dict: the checkpoint's state dict (e.g. ``torch.load(path, map_location="cpu")``); other stages'
            keys are ignored.
        out_size: ``(H, W)`` of the rectified image: their ``I_r_size`` (``(imgH, imgW)``, 32 x 100 by default).
        prefix: the TPS module's key prefix (e.g. ``"module.Transformation."``); found when ``None``.
        **options: passed to :class:`TPSRectifier` (e.g. ``mode``); ``theta_align_corners`` defaults to ``True``
            and ``kernel_eps`` to their ``1e-6`` (0 gives the exact kernel, about 1e-4 px away).

    Raises:
        DataError: no or several TPS modules in ``state_dict`` (pass ``prefix``), a key missing, or a tensor of a
            shape the layout does not explain.

    Example:
        >>> theirs = TPSRectifier.rare(channels=(4, 4, 8, 8), fc=16).state_dict()
        >>> ours = {"module.Transformation." + k: theirs[v] for k, v in trba_tps_key_map().items()}
        >>> rect = load_trba_tps(ours).eval()
        >>> rect.theta_align_corners, rect.family.layout
        (True, (2, 10))
    """
    prefix = _find_prefix(state_dict) if prefix is None else prefix
    mapping = trba_tps_key_map()
    missing = [prefix + k for k in mapping if prefix + k not in state_dict]
    if missing:
        raise DataError(f"the TRBA TPS weights lack {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    fc2 = state_dict[prefix + _FC2]  # (2F, fc)
    conv_w = [state_dict[f"{prefix}LocalizationNetwork.conv.{i}.weight"] for i in _CONVS]  # (c_out, c_in, 3, 3)
    if fc2.dim() != 2 or fc2.shape[0] % 2 or any(w.dim() != 4 for w in conv_w):
        raise DataError(f"{prefix + _FC2} must be (2F, features) and the convs 4-D, got {tuple(fc2.shape)}")
    options.setdefault("theta_align_corners", True)
    options.setdefault("kernel_eps", 1e-6)
    options.setdefault("init", "rare")
    loc = text_localisation(int(conv_w[0].shape[1]), [int(w.shape[0]) for w in conv_w], int(fc2.shape[1]))
    rect = TPSRectifier(loc, out_size=out_size, num_fiducial=int(fc2.shape[0]) // 2, **options)
    ours = {v: state_dict[prefix + k] for k, v in mapping.items()}
    try:
        rect.load_state_dict(ours, strict=True)
    except RuntimeError as exc:
        raise DataError(f"the TRBA TPS weights do not fit the layout their shapes imply: {exc}") from None
    return rect


def _find_prefix(state_dict: Mapping[str, torch.Tensor]) -> str:
    found = sorted(k[: -len(_FC2)] for k in state_dict if k.endswith(_FC2))
    if len(found) != 1:
        what = "no key" if not found else f"{len(found)} keys ({found})"
        raise DataError(
            f"expected one TRBA TPS module (a key ending in {_FC2!r}), found {what}; pass prefix= to pick one"
        )
    return found[0]
