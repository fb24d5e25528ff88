"""Loading, saving and safe_open, differential against real torch and safetensors."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import tantra
from conftest import FIXTURES, assert_same, tensor_bytes

torch = pytest.importorskip("torch")

EXPECTED = {e["file"]: e for e in json.loads((FIXTURES / "expected.json").read_text())}

# Every fixture torch itself can load with weights_only=True (torch 2.15 fails on the legacy
# all-dtypes file: its UntypedStorage has no dtype; that file is checked against digests below).
TORCH_LOADABLE = [
    "torch/all_dtypes.pt",
    "torch/checkpoint.pt",
    "torch/nested_checkpoint.pt",
    "torch/plain_dict.bin",
    "torch/views.pt",
    "torch/views_legacy.pt",
    "torch/float4_e2m1fn_x2.pt",
    "hf_mamba_tiny/pytorch/pytorch_model.bin",
]


@pytest.mark.parametrize("name", TORCH_LOADABLE)
def test_load_matches_torch_load(name):
    path = FIXTURES / name
    ours = tantra.load(path, framework="torch")
    theirs = torch.load(path, weights_only=True)
    assert_same(ours, theirs)


@pytest.mark.parametrize(
    "name", ["torch/all_dtypes.safetensors", "hf_mamba_tiny/safetensors/model.safetensors"]
)
def test_load_file_matches_safetensors(name):
    from safetensors.torch import load_file

    path = FIXTURES / name
    ours = tantra.load_file(path, framework="torch")
    theirs = load_file(path)
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        assert_same(ours[k], theirs[k], k)


@pytest.mark.parametrize("name", sorted(k for k, e in EXPECTED.items() if "tensors" in e))
def test_every_expected_digest(name):
    """Each tensor of each file of expected.json (torch's own digests) from NumPy bytes."""
    exp = EXPECTED[name]
    path = next(FIXTURES.rglob(name))
    with tantra.safe_open(path, framework="numpy") as f:
        assert sorted(f.keys()) == sorted(t["name"] for t in exp["tensors"])
        for t in exp["tensors"]:
            s = f.get_slice(t["name"])
            assert s.get_dtype() == t["dtype"]
            assert s.get_shape() == t["shape"]
            got = hashlib.sha256(tensor_bytes(f.get_tensor(t["name"]))).hexdigest()
            assert got == t["sha256"], t["name"]


def test_numpy_dtypes_and_bf16_bits():
    a = tantra.load_file(FIXTURES / "torch/all_dtypes.safetensors")
    t = tantra.load_file(FIXTURES / "torch/all_dtypes.safetensors", framework="torch")
    assert a["f32"].dtype == np.float32 and a["i16"].dtype == np.int16
    assert a["bool"].dtype == np.bool_
    # NumPy has no bfloat16: the raw bits as uint16, which decode to torch's values.
    assert a["bf16"].dtype == np.uint16
    decoded = (a["bf16"].astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(decoded, t["bf16"].float().numpy())
    assert t["bf16"].dtype == torch.bfloat16 and t["f8_e4m3"].dtype == torch.float8_e4m3fn
    assert t["f8_e5m2"].dtype == torch.float8_e5m2


def test_safetensors_views_are_zero_copy_and_read_only(tmp_path):
    src = FIXTURES / "torch/all_dtypes.safetensors"
    f = tantra.safe_open(src)
    a = f.get_tensor("f32")
    assert not a.flags.writeable and not a.flags.owndata
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    with pytest.raises(ValueError):
        a.flags.writeable = True
    # Two reads share the one map.
    b = f.get_tensor("f32")
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def test_view_outlives_its_handle_and_torch_writes_stay_private(tmp_path):
    path = tmp_path / "w.safetensors"
    shutil.copy(FIXTURES / "torch/all_dtypes.safetensors", path)
    before = path.read_bytes()
    with tantra.safe_open(path, framework="torch") as f:
        t = f.get_tensor("f32")
        expect = t.clone()
        # Zero copy: two reads are the same memory (the map), for torch as for NumPy.
        assert f.get_tensor("f32").data_ptr() == t.data_ptr()
        assert f.get_tensor("bf16").dtype == torch.bfloat16
    del f
    import gc

    gc.collect()
    assert torch.equal(t, expect)  # still readable after close and collection
    t.add_(1.0)  # torch can write: the map is private (copy-on-write)
    assert torch.equal(t, expect + 1.0)
    assert path.read_bytes() == before  # the file never changes
    with pytest.raises(ValueError, match="closed"):
        f2 = tantra.safe_open(path)
        f2.close()
        f2.keys()


def test_pytorch_archive_tensors_are_views_where_contiguous():
    f = tantra._tantra._File(str(FIXTURES / "torch/views.pt"))
    assert f.is_view("big")
    assert not f.is_view("transposed")  # a strided view has to be materialized
    g = tantra._tantra._File(str(FIXTURES / "torch/views_legacy.pt"))
    assert g.format == "pytorch-legacy"


def test_safe_open_behaves_like_safetensors():
    from safetensors import safe_open as st_open

    path = FIXTURES / "hf_mamba_tiny/safetensors/model.safetensors"
    with st_open(path, framework="pt") as ref, tantra.safe_open(path, framework="pt") as ours:
        assert ours.keys() == list(ref.keys())
        assert ours.metadata() == ref.metadata()
        for k in ref.keys():
            rs, os_ = ref.get_slice(k), ours.get_slice(k)
            assert os_.get_shape() == rs.get_shape()
            assert os_.get_dtype() == rs.get_dtype()
            assert torch.equal(os_[:1], rs[:1])
            assert torch.equal(ours.get_tensor(k), ref.get_tensor(k))
        with pytest.raises(KeyError):
            ours.get_tensor("nope")


@pytest.mark.parametrize("ext", ["safetensors", "pt", "bin"])
def test_save_output_loads_in_torch_and_back(tmp_path, ext):
    ckpt = torch.load(FIXTURES / "torch/nested_checkpoint.pt", weights_only=True)
    out = tmp_path / f"out.{ext}"
    n = tantra.save(ckpt, out)
    assert n == out.stat().st_size
    assert_same(tantra.load(out, framework="torch"), ckpt)
    if ext == "safetensors":
        from safetensors.torch import load_file

        flat = load_file(out)
        assert torch.equal(flat["model.embed.weight"], ckpt["model"]["embed.weight"])
    else:
        assert_same(torch.load(out, weights_only=True), ckpt)


def test_save_numpy_state_dict_and_metadata(tmp_path):
    from safetensors.numpy import load_file

    sd = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, -2], dtype=">i8")}
    out = tmp_path / "np.safetensors"
    tantra.save(sd, out, metadata={"format": "np"})
    back = load_file(out)
    assert np.array_equal(back["w"], sd["w"]) and back["b"].tolist() == [1, -2]
    assert tantra.safe_open(out).metadata() == {"format": "np"}
    with pytest.raises(ValueError, match="format"):
        tantra.save(sd, tmp_path / "x.unknown")
    with pytest.raises(TypeError, match="object"):
        tantra.save({"w": object()}, tmp_path / "y.safetensors")


def test_refusals_raise_the_right_exception(tmp_path):
    with pytest.raises(tantra.UnsafePickleError, match="posix.system"):
        tantra.load(FIXTURES / "malicious/zip_os_system.pt")
    with pytest.raises(tantra.BadFileError, match="sparse"):
        tantra.load(FIXTURES / "unsupported/sparse.pt")
    bad = tmp_path / "notes.safetensors"
    bad.write_text("hello, not weights")
    with pytest.raises(tantra.BadFileError, match=str(bad)):
        tantra.load_file(bad)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((FIXTURES / "torch/all_dtypes.safetensors").read_bytes()[:200])
    with pytest.raises(tantra.BadFileError, match="cut.safetensors"):
        tantra.safe_open(truncated)
    with pytest.raises(tantra.TantraError, match="missing.pt") as failed:
        tantra.load(tmp_path / "missing.pt")
    # The message carries the cause after the file, once: the same line the CLI prints.
    assert str(failed.value) == (
        f"{tmp_path / 'missing.pt'}: I/O error: No such file or directory (os error 2)"
    )
    assert issubclass(tantra.UnsafePickleError, tantra.TantraError)
    assert issubclass(tantra.StoreError, tantra.TantraError)


def test_inspect_scan_convert_diff(tmp_path):
    src = FIXTURES / "torch/checkpoint.pt"
    info = tantra.inspect(src)
    assert info["format"] == "pytorch-zip"
    assert info["values"]["epoch"] == torch.load(src, weights_only=True)["epoch"]
    assert tantra.scan(src)["verdict"] == "safe"
    scanned = tantra.scan(FIXTURES / "malicious/zip_os_system.pt")
    assert scanned["verdict"] == "unsafe" and "posix.system" in scanned["globals"]
    out = tmp_path / "c.safetensors"
    rep = tantra.convert(src, out)
    assert rep["verified"] and rep["output_format"] == "safetensors"
    assert tantra.diff(src, out)["identical"]
    with pytest.raises(tantra.TantraError, match="already exists"):
        tantra.convert(src, out)
    other = tmp_path / "d.safetensors"
    sd = tantra.load_file(out, framework="torch")
    first = sorted(sd)[0]
    sd[first] = sd[first] + 1
    del sd[sorted(sd)[1]]
    tantra.save(sd, other)
    d = tantra.diff(out, other)
    assert not d["identical"]
    assert [c["name"] for c in d["changed"]] == [first]
    assert len(d["only_in_a"]) == 1 and d["only_in_b"] == []


GGUF_EXPECTED = json.loads((FIXTURES / "gguf/mamba_tiny_expected.json").read_text())


@pytest.mark.parametrize("name", sorted(GGUF_EXPECTED))
def test_gguf_tensors_dequantize_to_gguf_py(name):
    """Quantized GGUF tensors come out dequantized (F32), equal to gguf-py's `dequantize`
    (digests); F16 ones as they are."""
    exp = GGUF_EXPECTED[name]
    got = tantra.load_file(FIXTURES / "gguf" / name)
    assert sorted(got) == sorted(exp)
    for k, e in exp.items():
        a = got[k]
        assert a.dtype == (np.float16 if e["type"] == "F16" else np.float32), k
        assert a.reshape(-1)[:4].astype(np.float64).tolist() == pytest.approx(e["first"]), k
        # The digests are of gguf-py's values as float32.
        assert hashlib.sha256(a.astype(np.float32).tobytes()).hexdigest() == e["sha256"], k
