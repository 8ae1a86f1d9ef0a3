"""`torchstn demo` into a directory: an earlier demo run there is replaced (and it says so), any other run is
refused, as `torchstn train` refuses it."""

import io

import pytest

import torchstn.data.mnist as mnist
from torchstn.errors import ConfigError
from torchstn.experiments.demo import run_demo

pytestmark = pytest.mark.usefixtures("one_thread")

_FAST = ["data.synthetic=60", "model.channels=[4, 4]", "optim.batch_size=8"]


def test_demo_replaces_an_earlier_demo_and_refuses_another_run(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist, "fetch_mnist", lambda root=None, source="auto": tmp_path)
    other = tmp_path / "trained"
    other.mkdir()
    (other / "config.toml").write_text("# torchstn run config (resolved); torchstn train my.toml\n")
    (other / "last.pt").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_demo(0.01, other, threads=1, overrides=_FAST, progress=False)
    assert (other / "last.pt").read_bytes() == b"precious"

    demo = tmp_path / "demo"
    (demo / "tb").mkdir(parents=True)
    (demo / "config.toml").write_text("# torchstn run config (resolved); torchstn demo --minutes 5 --out x\n")
    (demo / "tb" / "events.out.tfevents.1").write_text("the earlier demo's")
    stream = io.StringIO()
    run_demo(0.01, demo, threads=1, overrides=_FAST, stream=stream)
    assert f"replacing the run in {demo}" in stream.getvalue() and not (demo / "tb").exists()
    assert (demo / "result.json").is_file() and (demo / "st.png").is_file()
