"""The SVHN tests' data: a tiny format-1 release (tests/fixtures/make_svhn.py) and its prepared 64px cache."""

import pytest

from tests.fixtures import make_svhn


@pytest.fixture(scope="session")
def svhn_release(tmp_path_factory):
    """``(folder of the release, ground truth)``."""
    pytest.importorskip("h5py")
    pytest.importorskip("PIL")
    root = tmp_path_factory.mktemp("svhn_release")
    return root, make_svhn.make_svhn(root)


@pytest.fixture(scope="session")
def svhn_cache(svhn_release, tmp_path_factory):
    """The 64px cache of :func:`svhn_release` (9 train, 2 val, 5 test images)."""
    from torchstn.experiments.svhn.data import prepare_svhn

    cache = tmp_path_factory.mktemp("svhn_cache")
    prepare_svhn(svhn_release[0], cache, 64, val_size=2, log=None)
    return cache
