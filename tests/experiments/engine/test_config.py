import dataclasses

import pytest

from torchstn.data.distortions import ProjectiveJitter
from torchstn.errors import ConfigError
from torchstn.experiments.engine.config import TrainConfig, from_dict, resolve, to_dict
from torchstn.experiments.engine.config_io import apply_overrides, load_config, packaged_configs, to_toml
from torchstn.experiments.engine.schedules import SCHEDULES, ResolvedOptim, lr_factor_fn


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "optim.lr=0.05",
            "batch_size=64",
            "run.time_limit=2",
            "model.transform=tps",
            "st_pool=true",
            "optim.lr_steps=[10, 20]",
            "model.bound=none",
            "run.out=runs/123",
        ],
    )
    assert cfg.optim.lr == 0.05 and cfg.optim.batch_size == 64 and cfg.run.time_limit == 2.0
    assert cfg.model.transform == "tps" and cfg.model.st_pool is True and cfg.optim.lr_steps == (10, 20)
    assert cfg.model.bound is None and cfg.run.out == "runs/123"


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lrr=0.1", r"unknown key 'optim.lrr'. Did you mean 'optim.lr'\?.*Accepted keys: .*optim.lr,"),
        ("nosuch=1", "unknown key 'nosuch'"),
        ("optim.lr=fast", r"optim.lr must be float or none, got 'fast'"),
        ("optim.batch_size=1.5", "optim.batch_size must be int"),
        ("run.seed=true", "run.seed must be int"),
        (
            "data.variant=RST",
            r"data.variant must be one of \['R', 'RTS', 'P', 'E', 'TC', 'plain', 'addition', '3D'\].*'RTS'",
        ),
        (
            "optim.schedule=fast",
            r"optim.schedule must be one of \[.*'cpu'.*'demo'.*'paper'.*\]",
        ),  # + experiments' presets
        ("optim.optimizer=adma", "Did you mean 'adam'"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("run.device=gpu", "run.device must be one of"),
        ("optim.lr_steps=[20, 10]", "increasing"),
        ("lr", "must look like key=value"),
    ],
)
def test_bad_overrides_raise_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(TrainConfig(), [override])


def test_unknown_sections_and_keys_in_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "st_cnn"\ntransfrom = "affine"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key 'model.transfrom'. Did you mean 'model.transform'"):
        load_config(bad)
    bad.write_text("[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer'. Did you mean 'optim'"):
        load_config(bad)
    bad.write_text("lr = 0.1\n")
    with pytest.raises(ConfigError, match=r"belongs in the \[optim\] section"):
        load_config(bad)
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a file nor a packaged config"):
        load_config("table1_rts_st_cnn_afine")


def test_config_is_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().optim.lr = 1.0  # type: ignore[misc]


def test_toml_round_trip(tmp_path):
    cfg = resolve(
        apply_overrides(
            TrainConfig(),
            [
                "model.transform=tps",
                "optim.lr_steps=[5]",
                "optim.decay=step",
                "optim.iterations=10",
                "model.channels=[8, 8]",
            ],
        )
    )
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg, header="hello"))
    assert load_config(path) == cfg
    assert from_dict(to_dict(cfg)) == cfg


def test_every_packaged_config_loads_and_resolves():
    configs = packaged_configs()
    assert "demo" in configs and "colocalisation_encoder" in configs  # the experiments' cells are specs now
    for name in configs:
        cfg = resolve(load_config(name))
        assert cfg.optim.iterations > 0


def test_schedules():
    paper = resolve(apply_overrides(TrainConfig(), ["optim.schedule=paper"])).optim
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.iterations) == ("sgd", 0.01, 256, 150_000)
    assert paper.lr_steps == (50_000, 100_000) and paper.weight_decay == 0.0 and paper.momentum == 0.0
    short = resolve(apply_overrides(TrainConfig(), ["optim.schedule=paper", "optim.iterations=300"])).optim
    assert short.lr_steps == (100, 200)  # the paper's steps scale with a shorter run
    f = lr_factor_fn(resolve(TrainConfig()).optim)
    cpu = SCHEDULES.get("cpu")
    assert f(0) == pytest.approx(0.1) and f(cpu["warmup"]) == pytest.approx(1.0)
    assert f(cpu["iterations"]) == pytest.approx(0.0, abs=1e-12)


def test_resolved_optim_holds_every_optim_field_set():
    import dataclasses
    import types
    import typing

    from torchstn.experiments.engine.config import OptimConfig

    optional, resolved = typing.get_type_hints(OptimConfig), typing.get_type_hints(ResolvedOptim)
    assert list(resolved) == list(optional)  # the same fields, in the same order
    for name, tp in optional.items():  # each with its type less None
        args = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
        assert (resolved[name],) == tuple(a for a in args if a is not type(None)), name
    for schedule in SCHEDULES:
        cfg = resolve(apply_overrides(TrainConfig(), [f"optim.schedule={schedule}", "run.time_limit=1"]))
        assert dataclasses.asdict(ResolvedOptim.of(cfg.optim)) == dataclasses.asdict(cfg.optim)
    with pytest.raises(ConfigError, match="^optim.optimizer, optim.lr, .*, optim.clock unset: resolve the config"):
        ResolvedOptim.of(TrainConfig().optim)


def test_short_runs_scale_the_warmup_and_reject_a_longer_one():
    cfg = resolve(apply_overrides(TrainConfig(), ["optim.iterations=600"]))
    assert cfg.optim.warmup == round(SCHEDULES.get("cpu")["warmup"] * 600 / SCHEDULES.get("cpu")["iterations"])
    with pytest.raises(ConfigError, match="optim.warmup"):
        resolve(apply_overrides(TrainConfig(), ["optim.iterations=50", "optim.warmup=50"]))


def test_a_task_with_one_dataset_needs_no_data_variant(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[task]\nname = "colocalisation"\ndigit = 3\nclutter = true\n')
    cfg = load_config(str(path))
    assert (cfg.task.name, cfg.task.options.digit, cfg.task.options.clutter) == ("colocalisation", 3, True)
    assert cfg.data.variant == "colocalisation"
    path.write_text('[task]\nname = "colocalisation"\n[data]\nvariant = "RTS"\n')  # spelled out: still checked
    with pytest.raises(ConfigError, match="data.variant must be one of \\['colocalisation'\\]"):
        load_config(str(path))


def test_data_recipe_reaches_both_datasets_and_is_saved(tmp_path):
    from torchstn.experiments.engine.data import build_datasets

    cfg = apply_overrides(TrainConfig(), ["data.variant=P", "data.synthetic=60", "data.recipe=stretch"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path).data.recipe == "stretch"
    train_set, test_set = build_datasets(cfg)
    assert train_set.image_shape == test_set.image_shape == (1, 42, 42)
    assert test_set.distortion.options()["recipe"] == "stretch"
    with pytest.raises(ConfigError, match="Did you mean 'stretch'"):
        build_datasets(apply_overrides(cfg, ["data.recipe=strech"]))
    with pytest.raises(ConfigError, match="recipe"):
        build_datasets(apply_overrides(cfg, ["data.variant=R"]))


def test_data_sigma_reaches_both_datasets_and_a_variant_without_it_refuses(tmp_path):
    from torchstn.experiments.engine.data import build_datasets

    cfg = apply_overrides(TrainConfig(), ["data.variant=E", "data.synthetic=60", "data.sigma=2.5"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path).data.sigma == 2.5
    train_set, test_set = build_datasets(cfg)
    assert train_set.distortion.options()["sigma"] == test_set.distortion.options()["sigma"] == 2.5
    p_train, _ = build_datasets(apply_overrides(cfg, ["data.variant=P", "data.recipe=radial"]), test=False)
    assert (p_train.distortion.options()["sigma"], p_train.distortion.options()["recipe"]) == (2.5, "radial")
    with pytest.raises(ConfigError, match="sigma"):
        build_datasets(apply_overrides(cfg, ["data.variant=R"]))
    with pytest.raises(ConfigError, match="sigma"):
        build_datasets(apply_overrides(cfg, ["data.sigma=-1"]))


def test_resolve_names_the_data_recipe_and_sigma_so_a_changed_default_is_a_difference():
    from torchstn.experiments.engine.trainer import config_differences

    p = resolve(apply_overrides(TrainConfig(), ["data.variant=P"]))
    assert (p.data.recipe, p.data.sigma) == (ProjectiveJitter().recipe, ProjectiveJitter().sigma)
    assert resolve(apply_overrides(TrainConfig(), ["data.variant=P", "data.sigma=2"])).data.sigma == 2
    rts = resolve(TrainConfig())
    assert (rts.data.recipe, rts.data.sigma) == (None, None)
    # a run saved before the recipes were named (None) is not taken for one of today's default recipe
    old = dataclasses.replace(p, data=dataclasses.replace(p.data, recipe=None, sigma=None))
    assert config_differences(old, apply_overrides(TrainConfig(), ["data.variant=P"])) == ["data.recipe", "data.sigma"]
    assert config_differences(p, apply_overrides(TrainConfig(), ["data.variant=P"])) == []
