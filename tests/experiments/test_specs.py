"""The experiment specs (torchstn.experiments.specs and the table1 / addition / volume3d modules): the grid of cells,
the paper's number of each, the configs the cells expand to, training a cell by name, and the cells' old names."""

from __future__ import annotations

import json
import warnings

import pytest

from torchstn.errors import ConfigError
from torchstn.experiments.cli import main
from torchstn.experiments.engine.config import resolve, to_dict
from torchstn.experiments.engine.config_io import NAMED_CONFIGS, apply_overrides, config_name, load_config
from torchstn.experiments.reproduce import reproduce
from torchstn.experiments.specs import EXPERIMENTS, ExperimentSpec, grid

CELLS = [(name, cell) for name in EXPERIMENTS for cell in EXPERIMENTS.get(name).cells]
#: The cells that had a packaged config before the specs (icstn came after them).
OLD_CELLS = [(name, cell) for name, cell in CELLS if EXPERIMENTS.get(name).old_names]
#: The cells the paper gives no error for: the 3D experiment, and the single ST-FCN on addition but for affine.
NO_PAPER_ERROR = {"3D/proj_cnn", "3D/st3d_cnn_affine3d", "addition/st_fcn_projective", "addition/st_fcn_tps"}
#: IC-STN (beyond the paper): its paper's numbers are not confirmed here (docs/icstn.md).
NO_PAPER_ERROR |= {f"ICSTN/{m}" for m in ("cnn", "st_cnn_projective", "ic_stn1_projective", "ic_stn2_projective")}
NO_PAPER_ERROR |= {"ICSTN/ic_stn4_projective"}
#: What a fake ``fit`` returns in place of a training.
RESULT = {"test_error": 9.0, "parameters": 10, "train_s": 1.0, "iterations": 5, "completed": True, "device": "cpu"}
#: A tiny run of any cell: a few steps on synthetic digits, small nets.
TINY = [
    "--set",
    "optim.iterations=2",
    "--set",
    "data.synthetic=60",
    "--set",
    "optim.batch_size=16",
    "--set",
    "model.channels=[4, 4]",
    "--set",
    "run.eval_every=0",
    "--threads",
    "1",
    "--quiet",
]


def test_the_grids_are_the_papers_tables():
    assert EXPERIMENTS.names() == ["table1", "tc", "addition", "3d", "icstn"]  # the paper's order, then beyond it
    counts = {name: len(EXPERIMENTS.get(name).cells) for name in EXPERIMENTS}
    assert counts == {"table1": 32, "tc": 4, "addition": 8, "3d": 2, "icstn": 5}
    table1 = EXPERIMENTS.get("table1").cells
    assert [c.name for c in table1[:3]] == ["R/fcn", "R/cnn", "R/st_fcn_affine"]
    assert [c.variant for c in table1[::8]] == ["R", "RTS", "P", "E"]  # variant by variant, 8 models each


def test_every_cell_has_the_papers_number():
    papers = {cell.name: cell.paper for _, cell in CELLS}
    assert {name for name, paper in papers.items() if paper is None} == NO_PAPER_ERROR
    assert all(isinstance(p, float) and 0 < p < 50 for n, p in papers.items() if n not in NO_PAPER_ERROR)
    some = ["RTS/fcn", "RTS/st_cnn_affine", "E/st_cnn_tps", "TC/fcn", "addition/fcn", "addition/st_fcn_2x_tps"]
    assert [papers[name] for name in some] == [5.2, 0.5, 1.1, 13.2, 47.7, 5.8]


@pytest.mark.parametrize("experiment, cell", CELLS, ids=[f"{e}:{c.name}" for e, c in CELLS])
def test_every_cell_loads_with_its_overrides(experiment, cell):
    cfg = resolve(load_config(f"{experiment}:{cell.name}"))
    assert (cfg.data.variant, cfg.model.name, cfg.model.transform) == (cell.variant, cell.model, cell.transform)
    pooled = cell.transform is not None and cell.variant in ("RTS", "TC", "addition")
    assert cfg.model.st_pool == pooled and cfg.optim.schedule == "cpu" and cfg.optim.iterations > 0
    slow_loc = cell.name in ("addition/st_fcn_2x_affine", "addition/st_fcn_2x_projective")
    assert cfg.optim.loc_lr_mult == (0.1 if slow_loc else 1.0)
    assert cfg.optim.batch_size == (32 if experiment == "3d" else 128)


@pytest.mark.parametrize("experiment, cell", OLD_CELLS, ids=[f"{e}:{c.name}" for e, c in OLD_CELLS])
def test_the_old_name_warns_and_gives_the_same_config(experiment, cell):
    new = f"{experiment}:{cell.name}"
    old = EXPERIMENTS.get(experiment).old_name(cell)
    assert NAMED_CONFIGS.info(old)["replaced_by"] == new
    overrides = ["optim.schedule=paper", "run.seed=1", "optim.iterations=300"]
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated: use '{new}'"):
        before = load_config(old, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new name does not warn
        after = load_config(new, overrides)
    assert to_dict(resolve(before)) == to_dict(resolve(after))
    assert config_name(new) == config_name(old) == old  # the run directory of `torchstn train` stays runs/<old>


def test_old_names_are_the_packaged_files_they_replace():
    old = {NAMED_CONFIGS.info(n).get("replaced_by") and n for n in NAMED_CONFIGS} - {None}
    assert len(old) == 46
    assert {"table1_rts_st_cnn_affine", "table1_tc_fcn", "addition_st_fcn_2x_tps", "3d_st3d_cnn"} <= old


def test_an_unknown_cell_name_is_refused_with_a_suggestion(capsys):
    with pytest.raises(ConfigError, match=r"Did you mean 'table1:RTS/st_cnn_affine'"):
        load_config("table1:RTS/st_cnn_afine")
    with pytest.raises(
        ConfigError, match=r"Did you mean 'table1:RTS/st_cnn_affine'"
    ):  # an old name's typo: the new one
        load_config("table1_rts_st_cnn_afine")
    assert main(["train", "tc:TC/st_cnn_afine"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchstn train: error: config 'tc:TC/st_cnn_afine'") and "tc:TC/st_cnn_affine" in err


def test_a_cell_trains_by_name_and_its_old_name_continues_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "table1:RTS/st_cnn_affine", *TINY]) == 0
    run = tmp_path / "runs" / "table1_rts_st_cnn_affine"  # the default run directory, as before the specs
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 2 and result["command"].startswith("torchstn train table1:RTS/st_cnn_affine --set")
    saved = load_config(run / "config.toml").model
    assert (saved.name, saved.transform, saved.st_pool) == ("st_cnn", "affine", True)
    assert "warning" not in capsys.readouterr().err

    # the old spelling names the same config and run directory: the engine's resume check accepts it
    assert main(["train", "table1_rts_st_cnn_affine", "--resume", *TINY]) == 0
    err = capsys.readouterr().err
    assert (
        "torchstn train: warning: config name 'table1_rts_st_cnn_affine' is deprecated: use "
        "'table1:RTS/st_cnn_affine'" in err
    )
    assert main(["train", "table1:RTS/cnn", "--resume", "--out", str(run), *TINY]) == 2  # another cell: refused
    assert "cannot resume: the config differs" in capsys.readouterr().err


def test_reproduce_writes_each_cells_paper_number(tmp_path):
    seen = []

    def fake_fit(cfg, out, **kwargs):
        seen.append((str(out), kwargs["command"]))
        return {**RESULT, "config": {}}

    rows = reproduce("addition", seeds=1, runs=tmp_path, fit_fn=fake_fit, progress=False, say=lambda s: None)
    spec = EXPERIMENTS.get("addition")
    assert [(r["variant"], r["model"], r["paper_error"]) for r in rows] == [
        (c.variant, c.name.split("/")[1], c.paper) for c in spec.cells
    ]
    assert [r["config"] for r in rows] == [spec.config_name(c) for c in spec.cells]
    md = (tmp_path / "addition_cpu.md").read_text()
    assert "| addition | fcn | 47.7 | 9.00 (n=1) |" in md and "| addition | st_fcn_tps | - | 9.00 (n=1) |" in md
    assert seen[-1] == (
        str(tmp_path / "addition_st_fcn_2x_tps" / "cpu" / "seed0"),
        "torchstn train addition:addition/st_fcn_2x_tps --set optim.schedule=cpu --set run.seed=0",
    )


def test_reproduce_only_fills_the_table_in_with_the_other_finished_cells(tmp_path):
    """`--only` writes the table of every cell finished in `runs` (same key), not of its own cells alone: the
    documented way to add a missing cell to a table must not drop the others."""

    def fake_fit(cfg, out, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        result = {**RESULT, "test_error": 1.0 + len(str(out)) % 7, "config": to_dict(resolve(cfg))}
        (out / "result.json").write_text(json.dumps(result))
        return result

    def run(only, seeds=1):
        reproduce("table1", seeds=seeds, only=only, runs=tmp_path, fit_fn=fake_fit, progress=False, say=said.append)
        return [line.split(" | ")[:2] for line in (tmp_path / "table1_cpu.md").read_text().splitlines()[6:]]

    said: list[str] = []
    assert run(["RTS/fcn"]) == [["| RTS", "fcn"]]
    assert run(["R/cnn", "E/fcn"]) == [["| R", "cnn"], ["| RTS", "fcn"], ["| E", "fcn"]]  # table order
    rows = reproduce("table1", seeds=1, only=["R/cnn"], runs=tmp_path, fit_fn=fake_fit, say=said.append)
    assert [r["model"] for r in rows] == ["cnn"]  # the return value: the selected cells only
    # a finished run whose config is no longer its cell's is left out of the table, with the reason said
    stale = json.loads((tmp_path / "E_fcn" / "cpu" / "seed0" / "result.json").read_text())
    stale["config"]["optim"]["lr"] = 0.5
    (tmp_path / "E_fcn" / "cpu" / "seed0" / "result.json").write_text(json.dumps(stale))
    said.clear()
    assert run(["R/cnn"]) == [["| R", "cnn"], ["| RTS", "fcn"]]
    assert any("left out of the table" in s and "E_fcn" in s for s in said)
    # a cell another reproduction finishes meanwhile (one per core, sharing `runs`) is in the next table written
    other = fake_fit(
        resolve(apply_overrides(load_config("table1:P/cnn"), ["optim.schedule=cpu", "run.seed=0"])),
        tmp_path / "P_cnn" / "cpu" / "seed0",
    )

    def fit_while_the_other_finishes(cfg, out, **kwargs):
        (tmp_path / "P_cnn" / "cpu" / "seed0" / "result.json").write_text(json.dumps(other))
        return fake_fit(cfg, out, **kwargs)

    (tmp_path / "P_cnn" / "cpu" / "seed0" / "result.json").unlink()
    said.clear()
    reproduce("table1", seeds=1, only=["P/fcn"], runs=tmp_path, fit_fn=fit_while_the_other_finishes, say=said.append)
    assert "| P | cnn |" in (tmp_path / "table1_cpu.md").read_text()
    assert sum("left out of the table" in s for s in said) == 1  # said once, not at every write
    # another key (a shortened run) writes its own table from its own runs only
    reproduce(
        "table1",
        seeds=1,
        only=["P/fcn"],
        runs=tmp_path,
        overrides=["optim.iterations=9"],
        fit_fn=fake_fit,
        say=said.append,
    )
    assert "| P | fcn |" in (tmp_path / "table1_cpu+optim.iterations=9.md").read_text()
    assert "| R | cnn |" not in (tmp_path / "table1_cpu+optim.iterations=9.md").read_text()


def test_reproduce_table1_is_a_deprecated_spelling(tmp_path):
    from torchstn.experiments.reproduce import reproduce_table1

    seen = []

    def fake_fit(cfg, out, **kwargs):
        seen.append(str(out))
        return {**RESULT, "config": {}}

    with pytest.warns(DeprecationWarning, match=r'reproduce\("table1"'):
        rows = reproduce_table1(only=["rts/fcn"], seeds=1, runs=tmp_path, fit_fn=fake_fit, say=lambda s: None)
    assert [r["paper_error"] for r in rows] == [5.2] and seen == [str(tmp_path / "RTS_fcn" / "cpu" / "seed0")]


def test_a_spec_refuses_what_would_be_a_silent_mistake():
    cells = grid(("R", "RTS"), {("fcn", None): (2.1, 5.2), ("st_cnn", "affine"): (0.7, 0.5)})
    with pytest.raises(ConfigError, match=r"overrides for \['RTS/st_fnc_\*'\] match no cell"):
        ExperimentSpec("toy", "toy", cells, overrides={"RTS/st_fnc_*": {"model.st_pool": True}})
    with pytest.raises(ConfigError, match=r"lists the cells \['R/fcn'\] twice"):
        ExperimentSpec("toy", "toy", cells + cells[:1])
    with pytest.raises(ConfigError, match="row fcn/None has 1 paper errors for 2 variants"):
        grid(("R", "RTS"), {("fcn", None): (2.1,)})
    spec = ExperimentSpec("toy", "toy", cells, overrides={"RTS/st_*": {"model.st_pool": True}})
    with pytest.raises(ConfigError, match=r"--only 'RTS/cnn' matches no toy cell; cells: R/fcn, "):
        spec.select(["rts/cnn"])
    assert [c.name for c in spec.select(["R"])] == ["R/fcn", "R/st_cnn_affine"]
    assert "st_pool" not in spec.config_data(cells[1])["model"] and spec.config_data(cells[3])["model"]["st_pool"]
