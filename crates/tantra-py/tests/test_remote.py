"""Remotes from Python against the real Garage cluster `scripts/test-all` starts: push from one
root, pull into another (identical bytes, same content), dedup figures, and the errors a user
meets. Without a cluster these tests are skipped, unless TANTRA_REQUIRE_GARAGE=1 (as in CI)."""

import hashlib
import os
import time

import pytest

import tantra
from conftest import FIXTURES

SRC = FIXTURES / "torch/plain_dict.bin"


def _garage():
    env = {k: os.environ.get(k) for k in ("TANTRA_S3_ENDPOINT", "TANTRA_S3_BUCKET", "AWS_ACCESS_KEY_ID")}
    if all(env.values()):
        return env
    if os.environ.get("TANTRA_REQUIRE_GARAGE") == "1":
        pytest.fail("TANTRA_REQUIRE_GARAGE=1 but no Garage cluster in the environment (scripts/garage-cluster)")
    pytest.skip("no Garage cluster (TANTRA_S3_ENDPOINT unset); run `bash scripts/test-all`")


@pytest.fixture
def remote_url():
    g = _garage()
    prefix = f"py-{os.getpid()}-{time.time_ns()}"
    return f"s3://{g['TANTRA_S3_BUCKET']}/{prefix}", g["TANTRA_S3_ENDPOINT"]


def _root(tmp_path, name, url, endpoint):
    wm = tantra.WeightManager(tmp_path / name)
    wm.add_remote("team", url, endpoint=endpoint, region="garage", default=True)
    return wm


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_push_then_pull_gives_identical_files(tmp_path, remote_url):
    url, endpoint = remote_url
    a = _root(tmp_path, "a", url, endpoint)
    defs = a.remotes()
    assert defs["default"] == "team"
    d = defs["remotes"]["team"]
    assert (f"s3://{d['bucket']}/{d['prefix']}", d["endpoint"], d["region"]) == (url, endpoint, "garage")
    a.register(SRC, "demo", "v1", formats=["safetensors", "pt"], default=True)
    first = a.push("demo:v1", formats=["safetensors"])
    assert first["formats_pushed"] == ["safetensors"]
    assert first["bytes_uploaded"] == first["bytes_referenced"] > 0
    # The other formats: the .pt tantra wrote is rebuilt from the tensors already there (only
    # its manifest is sent); the .bin registered as it came, written by torch, goes up whole.
    second = a.push("demo", "v1")
    assert second["formats_pushed"] == ["bin", "pt"] and second["formats_present"] == ["safetensors"]
    assert second["whole_files"] == ["bin"]
    assert second["bytes_uploaded"] == SRC.stat().st_size

    listed = a.remote_versions()
    assert [(v["model"], v["version"], sorted(v["formats"])) for v in listed] == [
        ("demo", "v1", ["bin", "pt", "safetensors"])
    ]
    assert sorted(listed[0]["local_formats"]) == ["bin", "pt", "safetensors"]

    b = _root(tmp_path, "b", url, endpoint)
    got = b.pull("demo")  # newest version on the remote
    assert got["version"] == "v1" and sorted(got["formats_pulled"]) == ["bin", "pt", "safetensors"]
    for fmt in ("safetensors", "pt", "bin"):
        assert _sha(b.resolve("demo", "v1", fmt)["path"]) == _sha(a.resolve("demo", "v1", fmt)["path"])
    ours = b.load_model_weights("demo", "v1")
    theirs = a.load_model_weights("demo", "v1")
    assert sorted(ours) == sorted(theirs)
    assert all(ours[k].tobytes() == theirs[k].tobytes() for k in ours)
    # A second pull has nothing to do.
    again = b.pull("demo", "v1")
    assert again["formats_pulled"] == [] and sorted(again["formats_present"]) == ["bin", "pt", "safetensors"]
    assert b.verify()["problems"] == []


def test_remote_errors(tmp_path, remote_url):
    url, endpoint = remote_url
    a = _root(tmp_path, "a", url, endpoint)
    with pytest.raises(tantra.RemoteError, match="exists already"):
        a.add_remote("team", url)
    with pytest.raises(tantra.RemoteError, match="expected an http"):
        a.add_remote("other", url, endpoint="ftp://x")
    with pytest.raises(tantra.RemoteError, match='no remote named "nosuch"'):
        a.pull("demo", remote="nosuch")
    with pytest.raises(tantra.RemoteError, match="no version demo:v9"):
        a.pull("demo:v9")
    with pytest.raises(tantra.StoreError):
        a.push("demo:v1")  # nothing of that name in the root
    with pytest.raises(ValueError, match="names version"):
        a.push("demo:v1", "v2")
    a.remove_remote("team")
    assert a.remotes()["remotes"] == {}
    with pytest.raises(tantra.RemoteError, match="no remote named"):
        a.remove_remote("team")
