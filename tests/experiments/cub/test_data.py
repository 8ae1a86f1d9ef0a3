"""Tests for torchstn.experiments.cub.data on a generated CUB_200_2011 folder in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchstn.errors import DataError, OptionError
from torchstn.experiments.cub.data import CUB_FILES, CUBDataset, read_cub, read_exclusion_list

pytest.importorskip("PIL")
pytest.importorskip("numpy")  # the fixture writer uses Image.fromarray


from tests.fixtures import make_cub  # noqa: E402


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return make_cub.make_cub(tmp_path_factory.mktemp("cub"))


def test_reader_parses_everything_exactly(cub):
    root, truth, names = cub
    index = read_cub(root)
    assert index.class_names == names
    assert list(index.image_ids) == [t["id"] for t in truth]
    assert list(index.paths) == [t["path"] for t in truth]
    assert list(index.labels) == [t["label"] for t in truth]
    assert list(index.is_train) == [t["train"] for t in truth]
    assert list(index.boxes) == [t["box"] for t in truth]
    assert index.indices("train") == [i for i, t in enumerate(truth) if t["train"]]
    assert len(index.indices("all")) == len(truth) and index.excluded == ()
    assert read_cub(root.parent).root == root  # the parent folder works too


def test_exclusion_list_by_id_path_and_name(cub, tmp_path):
    root, truth, _ = cub
    index = read_cub(root)
    t1, t2, t3 = truth[1], truth[3], truth[5]
    listing = tmp_path / "overlap.txt"
    listing.write_text(
        f"# ImageNet overlap\n{t1['id']}\n{t2['path']}  # a path\n\n{t3['path'].split('/')[1].removesuffix('.jpg')}\n"
    )
    assert read_exclusion_list(listing, index) == {t1["id"], t2["id"], t3["id"]}
    reduced = read_cub(root, exclude=listing)
    assert reduced.excluded == (t1["id"], t2["id"], t3["id"])
    assert len(reduced.image_ids) == len(truth) - 3 and t2["path"] not in reduced.paths
    assert read_cub(root, exclude=[t1["id"]]).excluded == (t1["id"],)
    listing.write_text("Not_A_Bird_0001\n")
    with pytest.raises(DataError, match="Not_A_Bird_0001"):
        read_cub(root, exclude=listing)
    with pytest.raises(DataError, match="not found"):
        read_cub(root, exclude=tmp_path / "none.txt")
    with pytest.raises(DataError, match="ids not in"):
        read_cub(root, exclude=[10_000])


def _copy(root: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(root, dest / "CUB_200_2011"))


@pytest.mark.parametrize("missing", CUB_FILES)
def test_missing_file_gives_data_error_naming_it(cub, tmp_path, missing):
    root = _copy(cub[0], tmp_path)
    (root / missing).unlink()
    with pytest.raises(DataError, match=f"{missing}: missing"):
        read_cub(root)


def test_bad_folders_and_lines(cub, tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read_cub(tmp_path / "nothing")
    root = _copy(cub[0], tmp_path)
    lines = (root / "bounding_boxes.txt").read_text().splitlines()
    (root / "bounding_boxes.txt").write_text("\n".join(lines[:2] + ["3 1.0 2.0 x 4.0"] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt:3: malformed"):
        read_cub(root)
    (root / "bounding_boxes.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="bounding_boxes.txt: image ids differ"):
        read_cub(root)
    (root / "bounding_boxes.txt").write_text("\n".join(lines) + "\n")
    first = (root / "images.txt").read_text().splitlines()[0].split()[1]
    (root / "images" / first).unlink()
    with pytest.raises(DataError, match="image files missing"):
        read_cub(root)


@pytest.mark.parametrize("split,augment", [("test", False), ("train", True)])
def test_dataset_boxes_follow_resize_crop_and_flip(cub, split, augment):
    root, truth, _ = cub
    data = CUBDataset(
        root,
        split,
        size=48,
        augment=augment,
        return_box=True,
        normalize=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert data.resize == 55 and len(data) == sum(t["train"] == (split == "train") for t in truth)
    for _ in range(3 if augment else 1):
        for i in range(len(data)):
            x, label, box = data[i]
            assert x.shape == (3, 48, 48) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            assert label == truth[data.items[i]]["label"]
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            inside = x[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
            assert inside.numel() > 0 and float(inside.mean(0).min()) > 0.55  # the bright bird box
            mask = torch.ones(48, 48, dtype=torch.bool)
            mask[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = False
            assert float(x.mean(0)[mask].max()) < 0.25  # dark everywhere else (so flips moved the box too)


def test_dataset_normalises_and_checks_sizes(cub):
    root = cub[0]
    x, label = CUBDataset(root, "test", size=32)[0]
    assert x.shape == (3, 32, 32) and isinstance(label, int) and float(x.min()) < 0  # ImageNet-normalised
    with pytest.raises(OptionError, match="size <= resize"):
        CUBDataset(root, size=64, resize=32)
    with pytest.raises(OptionError, match="split"):
        CUBDataset(root, "validation")


def test_training_flips_mirror_the_box(cub):
    root, truth, _ = cub
    data = CUBDataset(root, "train", size=48, resize=48, return_box=True, generator=torch.Generator().manual_seed(0))
    i = next(i for i, k in enumerate(data.items) if truth[k]["size"][0] <= truth[k]["size"][1])  # no x offset
    lefts = {round(float(data[i][2][0]), 3) for _ in range(12)}
    rights = {round(48 - float(data[i][2][2]), 3) for _ in range(12)}
    assert len(lefts) == 2 and lefts == rights  # two positions, mirror images of each other
