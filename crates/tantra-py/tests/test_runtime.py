"""The Mamba runtime from Python against transformers' numbers (fixtures/hf_mamba_tiny/
reference.json, the same the Rust tests use)."""

import json

import numpy as np
import pytest

import tantra
from conftest import FIXTURES

REF = json.loads((FIXTURES / "hf_mamba_tiny/reference.json").read_text())


@pytest.mark.parametrize("form", ["safetensors", "pytorch"])
def test_logits_match_transformers(form):
    rt = tantra.MambaRuntime.from_path(FIXTURES / "hf_mamba_tiny" / form)
    ids = REF["input_ids"]
    logits = rt.logits(ids)
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32
    assert logits.shape == (len(ids), rt.vocab_size)
    assert np.abs(logits[0] - np.array(REF["logits_first"], dtype=np.float32)).max() <= 1e-4
    assert np.abs(logits[-1] - np.array(REF["logits_last"], dtype=np.float32)).max() <= 1e-4


def test_greedy_generation_and_stream_match_transformers():
    rt = tantra.MambaRuntime.from_path(FIXTURES / "hf_mamba_tiny/safetensors")
    # transformers' generate returns the prompt followed by the new tokens.
    assert REF["greedy_ids"][: len(REF["input_ids"])] == REF["input_ids"]
    new = REF["greedy_ids"][len(REF["input_ids"]) :]
    n = len(new)
    g = rt.generate(REF["input_ids"], max_new_tokens=n)
    assert g["ids"] == new
    assert g["prompt_ids"] == REF["input_ids"]
    assert g["text"] is None  # not tantra's byte-level vocabulary
    streamed = [tok for tok, _text in rt.stream(REF["input_ids"], max_new_tokens=n)]
    assert streamed == new
    # Sampling with a seed is reproducible.
    a = rt.generate(REF["input_ids"], max_new_tokens=5, temperature=0.8, top_k=10, seed=7)
    b = rt.generate(REF["input_ids"], max_new_tokens=5, temperature=0.8, top_k=10, seed=7)
    assert a["ids"] == b["ids"]


def test_runtime_refusals(tmp_path):
    rt = tantra.MambaRuntime.from_path(FIXTURES / "hf_mamba_tiny/safetensors")
    with pytest.raises(ValueError, match="byte-level"):
        rt.generate("hello")
    with pytest.raises(tantra.TantraError, match="out of range|vocabulary"):
        rt.logits([10**6])
    with pytest.raises(tantra.TantraError, match="no config.json"):
        tantra.MambaRuntime.from_path(tmp_path)
    with pytest.raises(tantra.StoreError, match="not registered"):
        tantra.MambaRuntime("mamba", root=tmp_path / "Model")


def test_runtime_from_the_weights_root_is_hash_checked(tmp_path):
    root = tmp_path / "Model"
    wm = tantra.WeightManager(root)
    wm.register(FIXTURES / "hf_mamba_tiny/safetensors/model.safetensors", "mamba", "tiny", default=True)
    rt = tantra.MambaRuntime("mamba", root=root)
    logits = rt.logits(REF["input_ids"])
    assert np.abs(logits[-1] - np.array(REF["logits_last"], dtype=np.float32)).max() <= 1e-4
    assert "mamba tiny" in rt.origin
    path = wm.resolve("mamba")["path"]
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(tantra.StoreError, match="changed since it was registered"):
        tantra.MambaRuntime("mamba", version="tiny", root=root)


@pytest.mark.parametrize("dtype, bound", [("f32", 1e-4), ("bf16", 2e-2), ("q8", 0.1)])
def test_dtypes_stay_close_to_transformers(dtype, bound):
    rt = tantra.MambaRuntime.from_path(FIXTURES / "hf_mamba_tiny/safetensors", dtype=dtype)
    assert rt.dtype == dtype
    logits = rt.logits(REF["input_ids"])
    err = np.abs(logits[-1] - np.array(REF["logits_last"], dtype=np.float32)).max()
    assert err <= bound
    if dtype != "f32":
        assert err > 0  # the precision is really applied
    with pytest.raises(ValueError, match="unknown dtype"):
        tantra.MambaRuntime.from_path(FIXTURES / "hf_mamba_tiny/safetensors", dtype="f16")


@pytest.mark.parametrize("dtype", ["f32", "bf16", "q8"])
def test_thread_count_does_not_change_results(dtype):
    path = FIXTURES / "hf_mamba_tiny/safetensors"
    one = tantra.MambaRuntime.from_path(path, dtype=dtype, threads=1)
    two = tantra.MambaRuntime.from_path(path, dtype=dtype, threads=2)
    assert (one.threads, two.threads) == (1, 2)
    assert tantra.MambaRuntime.from_path(path).threads >= 1  # all cores
    ids = REF["input_ids"]
    a, b = one.logits(ids), two.logits(ids)
    assert a.shape == (len(ids), one.vocab_size)
    assert np.array_equal(a, b)  # bit for bit, not close
    g1 = one.generate(ids, max_new_tokens=12)
    g2 = two.generate(ids, max_new_tokens=12)
    assert g1["ids"] == g2["ids"] and len(g1["ids"]) >= 1
    assert [i for i, _ in two.stream(ids, max_new_tokens=12)] == g1["ids"]
    with pytest.raises(ValueError, match="at least 1"):
        tantra.MambaRuntime.from_path(path, threads=0)


def test_threads_from_the_weights_root(tmp_path):
    root = tmp_path / "Model"
    wm = tantra.WeightManager(root)
    wm.register(FIXTURES / "hf_mamba_tiny/safetensors/model.safetensors", "mamba", "tiny", default=True)
    rt = tantra.MambaRuntime("mamba", root=root, threads=1)
    assert rt.threads == 1
    want = tantra.MambaRuntime.from_path(FIXTURES / "hf_mamba_tiny/safetensors", threads=2)
    assert np.array_equal(rt.logits(REF["input_ids"]), want.logits(REF["input_ids"]))
