"""Tiny SVHN runs for fast tests: the paper's models at 4 channels a layer, a few iterations of batch 4."""

from torchstn.experiments.engine.config import TrainConfig, from_dict


def tiny_config(cache, **sections) -> TrainConfig:
    """An ``svhn`` config on the fixture cache ``cache`` (smoke schedule, 6 iterations of 4 images, one thread, a
    metrics row per iteration); ``sections`` update the ``model`` / ``task`` / ``optim`` / ``run`` tables."""
    data = {
        "task": {"name": "svhn", "fc": [8, 8]},
        "model": {"name": "svhn_st_cnn_multi", "channels": [4] * 8},
        "data": {"variant": "svhn", "root": None if cache is None else str(cache)},
        "optim": {"schedule": "svhn_smoke", "batch_size": 4, "iterations": 6},
        "run": {"threads": 1, "log_every": 1, "checkpoint_every": 0},
    }
    for name, values in sections.items():
        data[name].update(values)
    return from_dict(data)
