"""The weights root from Python: register, hash-checked loading, versions, checkpoints."""

import hashlib
import json
import shutil

import numpy as np
import pytest

import tantra
from conftest import FIXTURES, tensor_bytes

SRC = FIXTURES / "torch/plain_dict.bin"


@pytest.fixture
def wm(tmp_path):
    return tantra.WeightManager(tmp_path / "Model")


def test_register_load_and_refuse_a_changed_file(wm, tmp_path):
    rep = wm.register(SRC, "demo", "v1", formats=["safetensors", "pt"], default=True)
    assert rep["model"] == "demo" and rep["version"] == "v1"
    ref = tantra.load_file(SRC)
    got = wm.load_model_weights("demo")  # default version, safetensors first
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert tensor_bytes(got[k]) == tensor_bytes(ref[k])
    info = wm.resolve("demo", format="pt")
    assert info["format"] == "pt" and info["path"].endswith("demo_v1_pt.pt")
    assert info["sha256"] == hashlib.sha256(open(info["path"], "rb").read()).hexdigest()
    # Module-level shortcut, as the seed's users wrote it.
    same = tantra.load_model_weights("demo", version="v1", root=wm.root)
    assert sorted(same) == sorted(ref)
    # Change one byte of the registered file: loading refuses it.
    path = wm.resolve("demo")["path"]
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(tantra.StoreError, match="changed since it was registered"):
        wm.load_model_weights("demo")
    problems = wm.verify()["problems"]
    assert len(problems) == 1
    # The pt file is untouched and still loads.
    assert sorted(wm.load_model_weights("demo", format="pt")) == sorted(ref)


def test_versions_default_tags_remove_backups(wm):
    wm.register(SRC, "demo", "v1", default=True)
    sd = tantra.load_file(SRC)
    first = sorted(sd)[0]
    sd = {k: np.array(v) for k, v in sd.items()}
    sd[first] = sd[first] + 1
    other = wm.root + "/../v2.safetensors"
    tantra.save(sd, other)
    wm.register(other, "demo", "v2")
    assert [v["version"] for v in wm.versions("demo")] == ["v1", "v2"]
    wm.set_default("demo", "v2")
    assert [v["default"] for v in wm.versions("demo")] == [False, True]
    wm.tag("demo", "v1", "keep")
    assert "keep" in wm.versions("demo")[0]["tags"]
    assert len(wm.list_weights("demo")) == 2
    with pytest.raises(tantra.StoreError, match="default version"):
        wm.remove("demo", "v2")
    removed = wm.remove("demo", "v1")
    assert removed["version_removed"]
    assert len(wm.backups()) >= 1
    with pytest.raises(tantra.StoreError, match="not registered"):
        wm.load_model_weights("demo", version="v1")
    with pytest.raises(tantra.StoreError, match="not registered"):
        wm.load_model_weights("nosuch")


def test_checkpoint_from_a_live_torch_state_dict(wm):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    rec = wm.save_checkpoint("demo", model.state_dict(), step=10, metrics={"loss": 0.5})
    assert rec["step"] == 10 and rec["metrics"] == {"loss": 0.5}
    with torch.no_grad():
        model.weight.add_(1.0)
    wm.save_checkpoint("demo", model.state_dict(), step=20, metrics={"loss": 0.25})
    assert [c["step"] for c in wm.list_checkpoints("demo")] == [10, 20]
    pruned = wm.prune_checkpoints("demo", keep_last=1)
    assert len(pruned) == 1
    assert [c["step"] for c in wm.list_checkpoints("demo")] == [20]
    wm.promote("demo", 20, "trained", default=True)
    back = wm.load_model_weights("demo", framework="torch")
    assert torch.equal(back["weight"], model.weight.detach())
    assert torch.equal(back["bias"], model.bias.detach())


def test_bad_names_raise_store_error(wm):
    with pytest.raises(tantra.StoreError, match="invalid model name"):
        wm.register(SRC, "../escape", "v1")
    with pytest.raises(tantra.UnsafePickleError):
        wm.register(FIXTURES / "malicious/zip_os_system.pt", "demo", "bad")


def test_config_manager(tmp_path):
    cm = tantra.ConfigManager(tmp_path / "Model")
    cfg = json.loads((FIXTURES / "hf_mamba_tiny/safetensors/config.json").read_text())
    cm.save("mamba", "tiny", cfg)
    assert cm.get("mamba", "tiny")["hidden_size"] == cfg["hidden_size"]
    assert [c["name"] for c in cm.list("mamba")] == ["tiny"]
    assert cm.validate("mamba", "tiny") == []
    assert cm.set("mamba", "tiny", "layer_norm_epsilon", 1e-6)["layer_norm_epsilon"] == 1e-6
    with pytest.raises(tantra.ConfigError, match="already exists"):
        cm.save("mamba", "tiny", cfg)
    with pytest.raises(tantra.ConfigError, match="invalid"):
        cm.save("mamba", "bad", dict(cfg, hidden_size=-3))
    with pytest.raises(tantra.ConfigError, match="no such config"):
        cm.get("mamba", "nosuch")


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_checkpoint_keeps_the_nesting_of_a_training_checkpoint(wm, fmt):
    torch = pytest.importorskip("torch")
    ckpt = torch.load(FIXTURES / "torch/nested_checkpoint.pt", weights_only=True)
    rec = wm.save_checkpoint("demo", ckpt, step=3, metrics={"loss": 1.0}, format=fmt)
    path = wm.root + "/" + rec["file"]
    from conftest import assert_same

    assert_same(tantra.load(path, framework="torch"), ckpt)
    if fmt == "pt":
        assert_same(torch.load(path, weights_only=True), ckpt)
