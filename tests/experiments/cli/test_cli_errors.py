"""The command line's errors: each mistake a user makes gives one line on stderr and exit status 2, never a traceback
(``--debug`` shows those), and the line says what is wrong."""

import struct

import pytest
import torch

from torchstn.experiments.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_toml):
    """A finished two-iteration run on synthetic digits (no MNIST needed)."""
    folder = tmp_path_factory.mktemp("cli_errors")
    (folder / "tiny.toml").write_text(
        tiny_toml(
            **{
                "model.hidden": [8, 8],
                "model.st_pool": None,
                "optim.lr": None,
                "optim.batch_size": 8,
                "optim.iterations": 2,
                "run.log_every": 1,
            }
        )
    )
    assert main(["train", str(folder / "tiny.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"torchstn {command}: error: ") and "Traceback" not in err, err
    assert err.count("\n") == 1, err
    return err


def _argparse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: argument" in err, err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_eval_on_cuda_without_cuda(run, capsys):
    assert main(["eval", str(run), "--device", "cuda"]) == 2
    assert "--device cuda but CUDA is not available" in _one_line_error(capsys, "eval")


def test_eval_unknown_device(run, capsys):
    assert main(["eval", str(run), "--device", "gpu"]) == 2
    assert "--device must be one of ['cpu', 'cuda'] or 'cuda:N', got 'gpu'" in _one_line_error(capsys, "eval")


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "RUN", "--batch-size", "0"],
        ["eval", "RUN", "--threads", "-1"],
        ["show", "RUN", "--out", "s.png", "-n", "0"],
        ["data", "show", "RTS", "--out", "s.png", "-n", "0"],
    ],
)
def test_counts_below_one_are_argument_errors(argv, capsys):
    assert "must be a positive integer" in _argparse_error(capsys, argv)


def test_show_unknown_image_format_fails_before_loading(run, tmp_path, capsys):
    assert main(["show", str(run), "--out", str(tmp_path / "s.xyz")]) == 2
    err = _one_line_error(capsys, "show")
    assert "unknown image format '.xyz'" in err and ".png" in err
    assert not (tmp_path / "s.xyz").exists()
    assert main(["show", str(tmp_path / "nothing"), "--out", str(tmp_path / "s")]) == 2  # checked first
    assert "no file suffix" in _one_line_error(capsys, "show")


def test_data_show_unknown_image_format_fails_before_any_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHSTN_CACHE", str(tmp_path / "cache"))  # empty: reading MNIST would need a download
    assert main(["data", "show", "RTS", "--out", str(tmp_path / "s.xyz")]) == 2
    assert "unknown image format '.xyz'" in _one_line_error(capsys, "data")
    assert not (tmp_path / "cache").exists()


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def test_show_wraps_many_images_into_bands_and_caps_the_count(run, tmp_path, capsys):
    assert main(["show", str(run), "--out", str(tmp_path / "s.png"), "-n", "20"]) == 0
    width, height = _png_size(tmp_path / "s.png")
    assert width <= 16 * 1.4 * 120 + 1 and height > 2 * 2 * 1.5 * 120 - 1  # 16 columns, two bands of two rows
    assert main(["show", str(run), "--out", str(tmp_path / "big.png"), "-n", "1000"]) == 2
    assert "at most 256 images" in _one_line_error(capsys, "show")
    assert not (tmp_path / "big.png").exists()


@pytest.mark.parametrize("command", ["eval", "show", "export"])
def test_non_checkpoint_files_are_named_as_such(run, tmp_path, command, capsys):
    extra = ["--out", str(tmp_path / "x.png")] if command == "show" else []
    noise = tmp_path / "noise.pt"
    noise.write_bytes(
        torch.randint(0, 256, (5000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy().tobytes()
    )
    for path, what in [(run / "config.toml", "(a TOML config)"), (noise, "(not a file torch.save writes)")]:
        assert main([command, str(path), *extra]) == 2
        err = _one_line_error(capsys, command)
        assert f"{path} is not a torchstn checkpoint {what}" in err and "weights_only" not in err


def test_a_torch_file_with_objects_is_not_loaded(tmp_path, capsys):
    path = tmp_path / "objects.pt"
    torch.save({"config": {}, "model": torch.nn.Linear(2, 2)}, path)  # a pickled module: never in a checkpoint
    assert main(["eval", str(path)]) == 2
    err = _one_line_error(capsys, "eval")
    assert "is not a torchstn checkpoint: it holds Python objects" in err and "weights_only" not in err


def _parsers(parser, name="torchstn"):
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_has_plain_help():
    import argparse

    from torchstn.experiments.cli import get_args_parser

    missing, markup = [], []
    for name, parser in _parsers(get_args_parser()):
        text = parser.format_help()
        if "``" in text or ":func:" in text or ":class:" in text:
            markup.append(name)
        missing += [
            f"{name} {a.option_strings or a.dest}"
            for a in parser._actions
            if a.help is None and not isinstance(a, argparse._SubParsersAction)
        ]
    assert missing == [] and markup == []


def test_demo_help_says_how_it_picks_threads(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "one thread against torch's default" in " ".join(capsys.readouterr().out.split())


def test_a_set_mistake_is_blamed_on_the_set_not_the_named_config(capsys):
    assert main(["train", "table1:RTS/st_cnn_affine", "--set", "optim.iteratons=5"]) == 2
    err = _one_line_error(capsys, "train")
    assert "error: --set optim.iteratons=5: unknown key 'optim.iteratons'. Did you mean 'optim.iterations'?" in err
    assert ".toml" not in err


def test_every_problem_of_a_config_is_reported_at_once(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "st_cnn"\ntransform = "afine"\n[optim]\niterations = -5\nlr = "fast"\n')
    assert main(["train", str(bad), "--set", "optim.batch_size=0", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchstn train: error: 4 problems in the config:\n") and "Traceback" not in err
    assert f"{bad}: model.transform must be one of" in err and "Did you mean 'affine'?" in err
    assert f"{bad}: optim.iterations must be > 0, got -5" in err and f"{bad}: optim.lr must be float" in err
    assert "--set optim.batch_size=0: optim.batch_size must be > 0" in err
    assert not (tmp_path / "run").exists()


def test_a_set_replaces_a_bad_file_value_before_it_is_checked(tmp_path):
    from torchstn.experiments.engine.config_io import load_config

    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\niterations = -5\n")
    assert load_config(bad, ["optim.iterations=3"]).optim.iterations == 3
