"""SVHN house numbers (paper §4.2), making the cache: read the official "format 1" release and crop 64px / 128px
sequences (:func:`prepare_svhn`; :mod:`torchstn.experiments.svhn.data` reads the cache back).

The release (``train.tar.gz``, ``test.tar.gz``, ``extra.tar.gz``, each unpacked to a folder) holds full-size PNGs
``1.png, 2.png, ...`` and ``digitStruct.mat``: a MATLAB v7.3 file, i.e. HDF5 (read with h5py). Its group
``digitStruct`` has two ``(N, 1)`` datasets of object references, ``name`` (each a ``uint16`` array of character
codes) and ``bbox`` (each a group with fields ``height``, ``left``, ``top``, ``width``, ``label``). A field is a
``(1, 1)`` dataset holding the value itself when the image has one digit, and an ``(n, 1)`` dataset of references to
``(1, 1)`` datasets when it has ``n`` digits. Label ``10`` means the digit ``0``. ``left`` / ``top`` are read as
0-based pixel offsets of the box's top-left corner (what common loaders do; a 1-pixel shift is immaterial after the
30% margin).

**Crops** (:func:`crop_box`, following Goodfellow et al. 2014): the union of the digit boxes, enlarged by ``expand``
(30%) in x and in y about its centre, then by ``context`` (1 for the 64px set); the rectangle is cut out (pixels
outside the image repeat the border pixel) and resampled to ``size x size``, sub-pixel exact, with antialiased
bilinear interpolation (aspect ratio not kept, as Goodfellow). Goodfellow then takes random 54x54 crops at training
time; the STN paper trains on the 64x64 crops, which is our default (``SVHNSequences(crop=54)`` gives Goodfellow's).
The paper's 128px set is only called "a looser crop"; our reading is ``context=2``: twice the 64px box's extent, so
the digits keep their pixel size and the image gains context around them (``prepare_svhn(..., context=...)``).

**Labels**: ``(N, 5)`` int64, digit ``d`` at each position of the sequence and the null class ``10`` after its end,
plus the lengths ``(N,)``. Sequences longer than 5 digits are dropped and counted in the report.

**Cache** (:func:`prepare_svhn`): ``svhn{size}_{train,val,test}.pt``, each a plain dict of tensors, ints, floats and
strings written atomically and read back with ``torch.load(weights_only=True, mmap=True)``; ``svhn{size}_report.json``
says what was kept and dropped. The validation split (5000 images) is drawn, seeded, from train (+ extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from torchstn._io import atomic_path, write_text_atomic
from torchstn.errors import DataError, OptionError

__all__ = [
    "SVHNRecord",
    "read_digit_struct",
    "read_split",
    "encode_sequence",
    "crop_box",
    "crop_resize",
    "prepare_svhn",
    "MAX_DIGITS",
    "NULL_CLASS",
    "FORMAT",
]

MAX_DIGITS = 5
NULL_CLASS = 10
FIELDS = ("height", "left", "top", "width", "label")
SPLITS = ("train", "test", "extra")
FORMAT = "torchstn-svhn-v1"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading SVHN's digitStruct.mat needs h5py: pip install h5py (or pip install 'torchstn[experiments]')"
        ) from None
    return h5py


@dataclasses.dataclass(frozen=True)
class SVHNRecord:
    """One image of ``digitStruct.mat``: file name, digit boxes ``(left, top, width, height)`` and digits 0-9."""

    name: str
    boxes: tuple[tuple[float, float, float, float], ...]
    digits: tuple[int, ...]


def _values(f, ds, where: str) -> list[float]:
    """A bbox field: a (1, 1) dataset of the value, or an (n, 1) dataset of references to (1, 1) datasets."""
    h5py = _h5py()
    raw = ds[()].reshape(-1)
    if h5py.check_dtype(ref=ds.dtype) is not None:
        return [float(f[r][()].reshape(-1)[0]) for r in raw]
    return [float(v) for v in raw]


def read_digit_struct(path: str | os.PathLike[str]) -> list[SVHNRecord]:
    """Parse an SVHN ``digitStruct.mat`` (MATLAB v7.3 / HDF5) into records, in file order.

    Raises:
        DataError: the file is missing, not HDF5, or lacks / mangles the ``digitStruct`` fields (the message names
            the file and the record).
        ImportError: h5py is not installed.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (each SVHN split folder holds a digitStruct.mat)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a MATLAB v7.3 (HDF5) file ({e})") from None
    records = []
    with f:
        group = f.get("digitStruct")
        if group is None or "name" not in group or "bbox" not in group:
            raise DataError(f"{path}: no group 'digitStruct' with datasets 'name' and 'bbox'")
        names, bboxes = group["name"][()].reshape(-1), group["bbox"][()].reshape(-1)
        if len(names) != len(bboxes):
            raise DataError(f"{path}: {len(names)} names but {len(bboxes)} bboxes")
        for i, (name_ref, box_ref) in enumerate(zip(names, bboxes)):
            where = f"{path}: record {i}"
            try:
                name = "".join(chr(int(c)) for c in f[name_ref][()].reshape(-1))
                box = f[box_ref]
                fields = {k: _values(f, box[k], where) for k in FIELDS}
            except (KeyError, ValueError, TypeError) as e:
                raise DataError(f"{where}: malformed ({e})") from None
            n = len(fields["label"])
            if n == 0 or any(len(v) != n for v in fields.values()):
                raise DataError(f"{where} ({name}): fields of unequal lengths {[len(v) for v in fields.values()]}")
            labels = fields["label"]
            if any(lab not in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10) for lab in labels):
                raise DataError(f"{where} ({name}): labels must be 1..10 (10 = digit 0), got {labels}")
            boxes = tuple(zip(fields["left"], fields["top"], fields["width"], fields["height"]))
            records.append(SVHNRecord(name, boxes, tuple(int(lab) % 10 for lab in labels)))
    return records


def read_split(src_dir: str | os.PathLike[str], split: str) -> tuple[Path, list[SVHNRecord]]:
    """``(folder, records)`` of one split folder ``src_dir/<split>`` of the format-1 release.

    Raises:
        DataError: the folder or its ``digitStruct.mat`` is missing (named in the message).
    """
    folder = Path(src_dir) / split
    if not folder.is_dir():
        raise DataError(f"{folder}: missing SVHN split folder (unpack {split}.tar.gz from the format-1 release)")
    return folder, read_digit_struct(folder / "digitStruct.mat")


def encode_sequence(digits: Sequence[int], length: int = MAX_DIGITS) -> torch.Tensor:
    """Sequence labels ``(length,)`` int64: the digits, then the null class 10.

    Raises:
        DataError: more than ``length`` digits or a digit outside 0-9.

    Example:
        >>> encode_sequence([1, 9, 0])
        tensor([ 1,  9,  0, 10, 10])
    """
    if len(digits) > length or any(not 0 <= int(d) <= 9 for d in digits):
        raise DataError(f"a sequence of at most {length} digits 0-9 is needed, got {list(digits)}")
    out = torch.full((length,), NULL_CLASS, dtype=torch.int64)
    out[: len(digits)] = torch.as_tensor([int(d) for d in digits], dtype=torch.int64)
    return out


def crop_box(boxes: Sequence[Sequence[float]], expand: float = 1.3, context: float = 1.0) -> tuple[float, ...]:
    """The crop ``(x1, y1, x2, y2)`` in pixels around digit boxes ``(left, top, width, height)``: their union, scaled
    about its centre by ``expand * context`` in x and in y.

    Example:
        >>> crop_box([(10, 20, 10, 20), (20, 20, 10, 20)])  # union 10..30 x 20..40, enlarged by 30%
        (7.0, 17.0, 33.0, 43.0)
    """
    x1 = min(b[0] for b in boxes)
    y1 = min(b[1] for b in boxes)
    x2 = max(b[0] + b[2] for b in boxes)
    y2 = max(b[1] + b[3] for b in boxes)
    k = float(expand) * float(context)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * k / 2, (y2 - y1) * k / 2
    return tuple(round(v, 6) for v in (cx - hw, cy - hh, cx + hw, cy + hh))


def _resample_matrix(lo: float, hi: float, n_out: int, n_in: int) -> tuple[torch.Tensor, int]:
    """``(weights (n_out, n), start)``: reading the span ``[lo, hi)`` (pixel edges) into ``n_out`` pixels from input
    pixels ``start .. start + n - 1``, with a triangle filter widened by the zoom-out factor (antialiased bilinear, as
    PIL); indices outside ``[0, n_in)`` are clamped (the border pixel repeats)."""
    scale = (hi - lo) / n_out  # input pixels per output pixel
    support = max(scale, 1.0)
    centres = lo + (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale  # (n_out,) in pixel-edge units
    taps = torch.arange(math.floor(lo - support) - 1, math.ceil(hi + support) + 2)  # (T,)
    w = (1 - ((taps.double() + 0.5)[None, :] - centres[:, None]).abs() / support).clamp_min(0)  # (n_out, T)
    w = w / w.sum(1, keepdim=True)
    idx = taps.clamp(0, n_in - 1)
    start = int(idx.min())
    out = torch.zeros(n_out, int(idx.max()) - start + 1, dtype=torch.float64)
    return out.scatter_add_(1, (idx - start).expand(n_out, -1), w).float(), start


def crop_resize(image: torch.Tensor, box: Sequence[float], size: int) -> torch.Tensor:
    """Read ``box (x1, y1, x2, y2)`` (pixel edges, sub-pixel exact) of ``image (C, H, W)`` uint8 into
    ``(C, size, size)`` uint8 with antialiased bilinear interpolation, repeating the border pixels outside the image.

    Example:
        >>> img = torch.zeros(1, 8, 8, dtype=torch.uint8); img[:, 2:6, 2:6] = 255
        >>> torch.equal(crop_resize(img, (2, 2, 6, 6), 4), img[:, 2:6, 2:6])  # same scale: the pixels themselves
        True
    """
    _, H, W = image.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise DataError(f"empty crop box {tuple(box)}")
    wy, y0 = _resample_matrix(y1, y2, size, H)  # (size, h)
    wx, x0 = _resample_matrix(x1, x2, size, W)  # (size, w)
    region = image[:, y0 : y0 + wy.shape[1], x0 : x0 + wx.shape[1]].float()  # (C, h, w)
    out = (wy @ region) @ wx.T  # (C, size, size)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _read_png(path: Path) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs pillow: pip install pillow (or 'torchstn[experiments]')") from None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            data = im.tobytes()
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)  # (3, H, W)


def prepare_svhn(
    src_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    size: int = 64,
    *,
    extra: bool = True,
    val_size: int = 5000,
    seed: int = 0,
    expand: float = 1.3,
    context: float | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Crop every sequence of the format-1 release to ``size x size`` and cache train / val / test.

    Args:
        src_dir: folder holding ``train/``, ``test/`` (and ``extra/``), each with PNGs and ``digitStruct.mat``.
        out_dir: where ``svhn{size}_{train,val,test}.pt`` and ``svhn{size}_report.json`` go.
        size: 64 (the paper's main set) or 128 (its looser set); any size >= 8 works.
        extra: add the 202k ``extra`` images to the training pool (the paper's ~200k images).
        val_size: images drawn (seeded by ``seed``) from the training pool into ``val``.
        expand: the margin around the union box (1.3: Goodfellow et al.'s 30%).
        context: extra enlargement; ``None`` gives 1 for ``size <= 64`` and ``size / 64`` above (looser crops).
        log: progress messages (``None`` for silence).

    Returns:
        The report: images kept per split, sequences dropped for having more than 5 digits, the crop settings.

    Raises:
        DataError: a missing folder, ``digitStruct.mat`` or PNG (named), or ``val_size`` larger than the pool.
        OptionError: a size below 8.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise OptionError(f"size must be an int >= 8 (64 or 128 in the paper), got {size!r}")
    context = (1.0 if size <= 64 else size / 64) if context is None else float(context)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny per-image ops: threads only add synchronisation
    try:
        return _prepare(src_dir, out_dir, size, extra, val_size, seed, expand, context, log or (lambda _m: None))
    finally:
        torch.set_num_threads(threads)


def _crop_split(items: list[tuple[str, Path, SVHNRecord]], size: int, expand: float, context: float, log) -> dict:
    """Crop the records ``(source split, folder, record)`` into one split's tensors (the only full-size buffer)."""
    images = torch.empty(len(items), 3, size, size, dtype=torch.uint8)
    for i, (_, folder, rec) in enumerate(items):
        images[i] = crop_resize(_read_png(folder / rec.name), crop_box(rec.boxes, expand, context), size)
        if (i + 1) % 10_000 == 0:
            log(f"svhn: {i + 1}/{len(items)}")
    labels = [encode_sequence(r.digits) for _, _, r in items]
    return {
        "images": images,
        "labels": torch.stack(labels) if labels else torch.empty(0, MAX_DIGITS).long(),
        "lengths": torch.tensor([len(r.digits) for _, _, r in items], dtype=torch.int64),
        "names": [f"{split}/{r.name}" for split, _, r in items],
    }


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``(3,)`` in [0, 1] units of uint8 ``images (N, 3, S, S)``, a chunk at a time."""
    total, total_sq = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double() / 255  # (n, 3, S, S)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    n = max(1, images.numel() // 3)
    mean = total / n
    std = (total_sq / n - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)


def _prepare(src_dir, out_dir, size, extra, val_size, seed, expand, context, log) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = ("train", "extra", "test") if extra else ("train", "test")
    kept: dict[str, list] = {}
    dropped: dict[str, int] = {}
    for split in sources:
        log(f"svhn: reading {Path(src_dir) / split / 'digitStruct.mat'}")
        folder, records = read_split(src_dir, split)
        kept[split] = [(split, folder, r) for r in records if len(r.digits) <= MAX_DIGITS]
        dropped[split] = len(records) - len(kept[split])
    pool = [item for s in sources if s != "test" for item in kept[s]]
    if not 0 <= val_size < len(pool):
        raise DataError(f"val_size={val_size} must be below the {len(pool)} training images")
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    plan = {
        "train": [pool[int(i)] for i in perm[val_size:].sort().values],
        "val": [pool[int(i)] for i in perm[:val_size].sort().values],
        "test": kept["test"],
    }
    meta: dict[str, object] = {"format": FORMAT, "size": size, "expand": float(expand), "context": context}
    counts = {}
    with contextlib.ExitStack() as files:  # all three files, or none, replace the old ones (when the block ends)
        for split, items in plan.items():  # train first: its statistics go into every file
            log(f"svhn: cropping {split} ({len(items)} images)")
            data = _crop_split(items, size, expand, context, log)
            if split == "train":
                meta["mean"], meta["std"] = _channel_stats(data["images"])
            tmp = files.enter_context(atomic_path(out_dir / f"svhn{size}_{split}.pt", durable=True))
            torch.save({**data, **meta, "split": split}, tmp)
            counts[split] = len(items)
            del data
    for split, count in counts.items():
        log(f"svhn: wrote {out_dir / f'svhn{size}_{split}.pt'} ({count} images)")
    report = {
        "size": size,
        "expand": float(expand),
        "context": context,
        "extra": extra,
        "val_size": val_size,
        "seed": seed,
        "images": counts,
        "dropped_longer_than_5": dropped,
        "dropped_total": sum(dropped.values()),
    }
    write_text_atomic(out_dir / f"svhn{size}_report.json", json.dumps(report, indent=2) + "\n")
    log(f"svhn: dropped {report['dropped_total']} sequences longer than {MAX_DIGITS} digits {dropped}")
    return report
