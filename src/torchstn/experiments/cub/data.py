"""CUB-200-2011 birds (paper §4.3, Table 3): read the official ``CUB_200_2011`` folder; a dataset of resized images.

The folder (from the official ``CUB_200_2011.tgz``) holds ``images.txt`` (``<id> <class folder>/<file>.jpg``),
``train_test_split.txt`` (``<id> <1 = train, 0 = test>``), ``image_class_labels.txt`` (``<id> <class 1..200>``),
``bounding_boxes.txt`` (``<id> <x> <y> <width> <height>``, pixels), ``classes.txt`` (``<class> <name>``) and
``images/<class folder>/<file>.jpg``: 5994 train and 5794 test images of 200 species.

**ImageNet overlap.** 22 CUB test images also appear in ImageNet (the 2012 training set), on which the backbones are
pre-trained. The list is not shipped here (nor downloadable from this machine); to exclude them, give a text file
with one entry per line, each an image id of ``images.txt``, a path as written there
(``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``) or a file name (with or without ``.jpg``);
``#`` starts a comment. Unknown entries are an error (a typo must not silently keep an image).

**Images** (:class:`CUBDataset`): the shorter side is resized to ``resize`` (default ``size * 8 / 7``: the paper's
224-from-256, here 448-from-512), then a ``size x size`` crop is taken: random with a random horizontal flip for
training, central for evaluation; pixels in [0, 1] normalised by the ImageNet mean and std. The bird's box follows
every step, so a sample can return it in the output image's pixels. The random crops and flips are drawn apart from
the images (:func:`crop_params`) from the generator a batch is given, so a batch is a pure function of its indices and
that generator's state (a resumed run draws the same).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from torchstn._checks import look_up_option
from torchstn.errors import DataError, OptionError

__all__ = [
    "CUBIndex",
    "read_cub",
    "read_exclusion_list",
    "CUBDataset",
    "crop_params",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CUB_FILES",
]

CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "bounding_boxes.txt", "classes.txt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: How :func:`_table` reads a value of each kind.
_PARSERS: dict[str, Callable[[str], object]] = {"i": int, "f": float, "s": str.strip}


def _table(path: Path, ncols: int, kinds: str) -> dict[int, tuple]:
    """``{id: (values...)}`` of an ``<id> <v1> ...`` file; ``kinds`` gives each value's type (i int, f float, s str;
    a final ``s`` takes the rest of the line)."""
    out: dict[int, tuple] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split(None, ncols - 1 if kinds.endswith("s") else -1)
            try:
                if len(parts) != ncols:
                    raise ValueError(f"{ncols} fields expected, got {len(parts)}")
                key = int(parts[0])
                vals = tuple(_PARSERS[k](p) for k, p in zip(kinds, parts[1:]))
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: malformed line {line.rstrip()!r} ({e})") from None
            if key in out:
                raise DataError(f"{path}:{lineno}: id {key} appears twice")
            out[key] = vals
    return out


@dataclasses.dataclass(frozen=True)
class CUBIndex:
    """The parsed folder: one entry per image, in ``images.txt`` order (minus excluded images).

    Attributes:
        root: the ``CUB_200_2011`` folder.
        image_ids: ids of ``images.txt``; ``paths``: their paths below ``images/``.
        labels: class index 0-199 (``image_class_labels.txt`` minus 1); ``class_names``: the 200 names.
        is_train: from ``train_test_split.txt``.
        boxes: ``(x, y, width, height)`` in the original image's pixels.
        excluded: ids removed by an exclusion list.
    """

    root: Path
    image_ids: tuple[int, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    is_train: tuple[bool, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    class_names: tuple[str, ...]
    excluded: tuple[int, ...] = ()

    def indices(self, split: str) -> list[int]:
        """Positions of the ``train``, ``test`` or ``all`` images."""
        look_up_option("split", split, ("train", "test", "all"))
        return [i for i, t in enumerate(self.is_train) if split == "all" or t == (split == "train")]


def read_exclusion_list(path: str | os.PathLike[str], index: CUBIndex) -> set[int]:
    """Image ids named by an exclusion file (ids, ``images.txt`` paths or file names; ``#`` comments).

    Raises:
        DataError: the file is missing, or names images that are not in ``index`` (listed in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: exclusion list not found")
    by_name: dict[str, int] = {}
    for i, p in zip(index.image_ids, index.paths):
        base = p.rsplit("/", 1)[-1]
        by_name.update({p: i, base: i, base.rsplit(".", 1)[0]: i})
    known, ids, unknown = set(index.image_ids), set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.isdigit() and int(entry) in known:
            ids.add(int(entry))
        elif entry.removeprefix("images/") in by_name:
            ids.add(by_name[entry.removeprefix("images/")])
        else:
            unknown.append(entry)
    if unknown:
        raise DataError(f"{path}: {len(unknown)} entries name no CUB image, e.g. {unknown[:5]}")
    return ids


def read_cub(root: str | os.PathLike[str], exclude: str | os.PathLike[str] | Iterable[int] | None = None) -> CUBIndex:
    """Parse the official ``CUB_200_2011`` folder.

    Args:
        root: the folder (or its parent, if it holds ``CUB_200_2011/``).
        exclude: an exclusion list file (see the module docstring) or image ids to leave out.

    Raises:
        DataError: a missing file (named), a malformed line (file and line named), ids that disagree between the
            files, a class id outside ``classes.txt``, or an image file that is not there.
    """
    root = Path(root)
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
        root = root / "CUB_200_2011"
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (unpack CUB_200_2011.tgz and pass the CUB_200_2011 folder)")
    for name in CUB_FILES:
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing; is {root} the official CUB_200_2011 folder?")
    images = _table(root / "images.txt", 2, "s")
    split = _table(root / "train_test_split.txt", 2, "i")
    labels = _table(root / "image_class_labels.txt", 2, "i")
    boxes = _table(root / "bounding_boxes.txt", 5, "ffff")
    classes = _table(root / "classes.txt", 2, "s")
    for name, table in (
        ("train_test_split.txt", split),
        ("image_class_labels.txt", labels),
        ("bounding_boxes.txt", boxes),
    ):
        if set(table) != set(images):
            diff = sorted(set(images) ^ set(table))
            raise DataError(f"{root / name}: image ids differ from images.txt (e.g. {diff[:5]})")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DataError(f"{root / 'classes.txt'}: class ids must be 1..{len(classes)}")
    ids = list(images)
    bad = [i for i in ids if not 1 <= labels[i][0] <= len(classes) or split[i][0] not in (0, 1)]
    if bad:
        raise DataError(f"{root}: image ids {bad[:5]} have a class outside 1..{len(classes)} or a split not 0/1")
    missing = [images[i][0] for i in ids if not (root / "images" / images[i][0]).is_file()]
    if missing:
        raise DataError(f"{root / 'images'}: {len(missing)} image files missing, e.g. {missing[:3]}")
    index = CUBIndex(
        root,
        tuple(ids),
        tuple(images[i][0] for i in ids),
        tuple(labels[i][0] - 1 for i in ids),
        tuple(split[i][0] == 1 for i in ids),
        tuple(boxes[i] for i in ids),
        tuple(classes[c][0] for c in sorted(classes)),
    )
    if exclude is None:
        return index
    if isinstance(exclude, (str, os.PathLike)):
        drop = read_exclusion_list(exclude, index)
    else:
        drop = {int(i) for i in exclude}
        if drop - set(ids):
            raise DataError(f"exclude names ids not in {root / 'images.txt'}: {sorted(drop - set(ids))[:5]}")
    keep = [k for k, i in enumerate(ids) if i not in drop]
    return dataclasses.replace(
        index,
        excluded=tuple(sorted(drop)),
        image_ids=tuple(index.image_ids[k] for k in keep),
        paths=tuple(index.paths[k] for k in keep),
        labels=tuple(index.labels[k] for k in keep),
        is_train=tuple(index.is_train[k] for k in keep),
        boxes=tuple(index.boxes[k] for k in keep),
    )


def crop_params(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The random part of ``n`` training crops, drawn apart from the images (``sample_params`` then ``apply``):
    ``(n, 3)`` float64 in ``[0, 1)``, per image the crop's vertical and horizontal position (as a fraction of the
    free range) and a flip draw (``< 0.5``: flip).

    Example:
        >>> crop_params(2, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3])
    """
    return torch.rand(int(n), 3, generator=generator, dtype=torch.float64)


class CUBDataset(torch.utils.data.Dataset):
    """CUB images as ``(image (3, size, size), label)`` or, with ``return_box``, ``(image, label, box (4,))`` where
    ``box`` is the bird's ``(x1, y1, x2, y2)`` in the output image's pixels (clipped to it).

    It also follows the engine's dataset contract (:mod:`torchstn.experiments.engine.data`): ``image_shape``,
    ``num_classes`` and :meth:`batch`, whose random crops and flips come from the generator it is given.

    Args:
        root: the ``CUB_200_2011`` folder, or a :class:`CUBIndex`.
        split: ``train``, ``test`` or ``all``.
        size: output side (448 for the paper's ST models, 224 for its CNN).
        resize: the shorter side before cropping; default ``round(size * 8 / 7)``.
        augment: random crop + horizontal flip (default: ``split == "train"``); otherwise the central crop.
        exclude: exclusion list file or ids (see :func:`read_cub`); ignored when ``root`` is an index.
        normalize: subtract the ImageNet mean and divide by its std.
        generator: random source of the crops and flips of ``dataset[i]`` (:meth:`batch` takes its own).
        workers: threads that decode the images of a :meth:`batch` (0: in the calling thread); the result does
            not depend on it.

    Example:
        >>> CUBDataset("/no/such/CUB_200_2011")
        Traceback (most recent call last):
        ...
        torchstn.errors.DataError: /no/such/CUB_200_2011: no such folder (unpack CUB_200_2011.tgz and pass ...
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | CUBIndex,
        split: str = "train",
        *,
        size: int = 448,
        resize: int | None = None,
        augment: bool | None = None,
        exclude: str | os.PathLike[str] | Iterable[int] | None = None,
        return_box: bool = False,
        normalize: bool = True,
        generator: torch.Generator | None = None,
        workers: int = 0,
    ):
        self.index = root if isinstance(root, CUBIndex) else read_cub(root, exclude)
        self.items = self.index.indices(split)
        self.size = int(size)
        self.resize = round(self.size * 8 / 7) if resize is None else int(resize)
        if self.size < 1 or self.resize < self.size:
            raise OptionError(f"need 1 <= size <= resize, got size={size!r}, resize={resize!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise OptionError(f"workers must be an int >= 0, got {workers!r}")
        self.augment = (split == "train") if augment is None else bool(augment)
        self.return_box, self.normalize, self.generator = bool(return_box), bool(normalize), generator
        self.workers = workers
        self.image_shape = (3, self.size, self.size)
        self.num_classes = len(self.index.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, k: int):
        try:
            from PIL import Image
        except ImportError:
            raise ImportError(
                "reading CUB images needs pillow: pip install pillow (or 'torchstn[experiments]')"
            ) from None
        path = self.index.root / "images" / self.index.paths[k]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = self.resize / min(w, h)
                nw, nh = max(self.size, round(w * s)), max(self.size, round(h * s))
                # antialiased when shrinking; Image.Resampling needs Pillow >= 9.1 (we take 9.0), and Pillow defines the
                # old module-level name by a loop over its enums, which its annotations do not show
                im = im.resize((nw, nh), Image.BILINEAR)  # type: ignore[attr-defined]
                data = im.tobytes()
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read image ({e})") from None
        img = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(nh, nw, 3).permute(2, 0, 1)  # (3, nh, nw)
        return img, (nw / w, nh / h)

    def sample(self, i: int, params: torch.Tensor | None = None) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(image (3, size, size), label, box (4,))`` of item ``i``, cropped by ``params`` (one row of
        :func:`crop_params`) or, with ``None``, centrally and unflipped: a pure function of its arguments."""
        k = self.items[i]
        img, (sx, sy) = self._load(k)
        _, H, W = img.shape
        S = self.size
        if params is None:
            oy, ox, flip = (H - S) // 2, (W - S) // 2, False
        else:
            oy, ox = (min(int(float(u) * (n - S + 1)), n - S) for u, n in zip(params[:2], (H, W)))
            flip = bool(params[2] < 0.5)
        x = img[:, oy : oy + S, ox : ox + S].float().div_(255)  # (3, S, S)
        bx, by, bw, bh = self.index.boxes[k]
        box = torch.tensor([bx * sx - ox, by * sy - oy, (bx + bw) * sx - ox, (by + bh) * sy - oy]).clamp_(0, S)
        if flip:
            x = x.flip(-1)
            box = torch.stack([S - box[2], box[1], S - box[0], box[3]])
        if self.normalize:
            x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return x, self.index.labels[k], box

    def __getitem__(self, i: int):
        params = crop_params(1, self.generator)[0] if self.augment else None
        x, label, box = self.sample(i, params)
        return (x, label, box) if self.return_box else (x, label)

    def batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, 3, size, size) float32, labels (B,) int64)`` of the items ``indices``; with ``augment``,
        their crops and flips are drawn from ``generator`` (:func:`crop_params`, before any image is read), so the
        same generator state gives the same batch whatever ``workers`` is."""
        idx = [int(i) for i in indices]
        params = crop_params(len(idx), generator) if self.augment else [None] * len(idx)
        jobs = list(zip(idx, params))
        if self.workers and len(jobs) > 1:
            from concurrent.futures import ThreadPoolExecutor  # pillow decodes and resizes without the GIL

            with ThreadPoolExecutor(min(self.workers, len(jobs))) as pool:
                items = list(pool.map(lambda job: self.sample(*job), jobs))
        else:
            items = [self.sample(*job) for job in jobs]
        return torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items], dtype=torch.int64)
