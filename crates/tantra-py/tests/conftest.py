"""Shared helpers: the repository's fixtures folder and a deep comparison of loaded objects."""

import collections
import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures"


@pytest.fixture
def fixtures() -> pathlib.Path:
    return FIXTURES


def tensor_bytes(t) -> bytes:
    """Row-major little-endian bytes of a torch tensor or NumPy array."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).tobytes()
    import torch

    flat = t.contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy()) if flat.numel() else b""


def assert_same(ours, theirs, where="root"):
    """Same nesting (container kinds, key order), same leaves; tensors by dtype, shape, bytes."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        if isinstance(theirs, collections.OrderedDict) and len(theirs) and where != "root":
            assert isinstance(ours, collections.OrderedDict), where
        assert list(ours) == list(theirs), where
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{where}.{k}")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs), where
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}.{i}")
    elif hasattr(theirs, "dtype") and hasattr(theirs, "shape"):
        assert ours.dtype == theirs.dtype, where
        assert tuple(ours.shape) == tuple(theirs.shape), where
        assert tensor_bytes(ours) == tensor_bytes(theirs), where
    else:
        assert type(ours) is type(theirs), where
        assert ours == theirs, where
