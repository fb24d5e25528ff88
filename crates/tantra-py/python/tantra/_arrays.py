"""Raw little-endian tensor bytes <-> typed NumPy arrays and torch tensors.

The compiled module hands each tensor out as a 1-D ``uint8`` array: a view of the memory-mapped
file where the bytes allow, else a copy. This module gives those bytes their dtype and shape
without copying, and does the reverse for :func:`tantra.save`.

What NumPy gets for the dtypes it lacks (NumPy has no bfloat16, float8 or sub-byte floats):

* ``BF16`` -> ``uint16`` holding the raw bfloat16 bits (``(a.astype(np.uint32) << 16).view(np.float32)``
  gives the values); with ``framework="torch"`` you get ``torch.bfloat16``.
* ``F8_*`` -> ``uint8`` holding the raw bits; torch gets its ``float8_*`` dtypes.
* ``F4``, ``F6_*`` -> the packed bytes as a flat ``uint8`` array (torch too, except ``F4`` whose
  pairs become ``torch.float4_e2m1fn_x2`` where torch has it).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence, Tuple

import numpy as np

# safetensors dtype name -> NumPy dtype (little-endian, explicit).
NUMPY_DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
    # Raw bits for the kinds NumPy cannot represent (see the module docs).
    "BF16": np.dtype("<u2"),
    "F8_E5M2": np.dtype("u1"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E8M0": np.dtype("u1"),
    "F8_E4M3FNUZ": np.dtype("u1"),
    "F8_E5M2FNUZ": np.dtype("u1"),
}

PACKED = {"F4", "F6_E2M3", "F6_E3M2"}

NUMPY_TO_NAME = {
    np.dtype("?"): "BOOL",
    np.dtype("u1"): "U8",
    np.dtype("i1"): "I8",
    np.dtype("<i2"): "I16",
    np.dtype("<u2"): "U16",
    np.dtype("<i4"): "I32",
    np.dtype("<u4"): "U32",
    np.dtype("<i8"): "I64",
    np.dtype("<u8"): "U64",
    np.dtype("<f2"): "F16",
    np.dtype("<f4"): "F32",
    np.dtype("<f8"): "F64",
    np.dtype("<c8"): "C64",
}


def _torch_dtypes() -> dict:
    import torch

    names = {
        "BOOL": "bool",
        "U8": "uint8",
        "I8": "int8",
        "I16": "int16",
        "U16": "uint16",
        "I32": "int32",
        "U32": "uint32",
        "I64": "int64",
        "U64": "uint64",
        "F16": "float16",
        "BF16": "bfloat16",
        "F32": "float32",
        "F64": "float64",
        "C64": "complex64",
        "F8_E5M2": "float8_e5m2",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E8M0": "float8_e8m0fnu",
        "F8_E4M3FNUZ": "float8_e4m3fnuz",
        "F8_E5M2FNUZ": "float8_e5m2fnuz",
    }
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


_TORCH = None


def torch_dtypes() -> dict:
    """safetensors dtype name -> torch dtype, for the dtypes this torch has."""
    global _TORCH
    if _TORCH is None:
        _TORCH = _torch_dtypes()
    return _TORCH


def to_numpy(dtype: str, shape: Sequence[int], raw: np.ndarray, is_view: bool) -> np.ndarray:
    """Typed array over ``raw`` (no copy). Views of the file are made read-only, at the root too,
    so that ``flags.writeable = True`` is refused."""
    if is_view:
        raw.flags.writeable = False
    if dtype in PACKED:
        out = raw
    else:
        npd = NUMPY_DTYPES.get(dtype)
        if npd is None:
            raise ValueError(f"dtype {dtype} has no NumPy form")
        out = raw.view(npd).reshape(tuple(shape))
    if is_view:
        out.flags.writeable = False
    return out


def to_torch(dtype: str, shape: Sequence[int], raw: np.ndarray, device: str = "cpu") -> Any:
    """A torch tensor over ``raw`` (no copy on the CPU). A view of the file is backed by a private
    copy-on-write map: writing into the tensor changes this process's memory, never the file."""
    import torch

    shape = tuple(int(s) for s in shape)
    if dtype in PACKED:
        if dtype == "F4" and hasattr(torch, "float4_e2m1fn_x2") and shape and shape[-1] % 2 == 0:
            tdt = torch.float4_e2m1fn_x2
            shape = shape[:-1] + (shape[-1] // 2,)
        else:
            tdt, shape = torch.uint8, (raw.shape[0],)
    else:
        tdt = torch_dtypes().get(dtype)
        if tdt is None:
            raise ValueError(f"dtype {dtype} has no torch form in torch {torch.__version__}")
    if raw.shape[0] == 0:
        t = torch.empty(shape, dtype=tdt)
    else:
        with warnings.catch_warnings():
            # The map is private and writable; torch warns about any buffer numpy calls read-only.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.frombuffer(raw, dtype=tdt).reshape(shape)
    if device != "cpu":
        t = t.to(device)
    return t


def tensor_bytes(name: str, obj: Any) -> Tuple[str, list, np.ndarray]:
    """``(dtype name, shape, uint8 bytes)`` of a torch tensor or NumPy array, for writing."""
    if type(obj).__module__.startswith("torch"):
        import torch

        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        inv = {v: k for k, v in torch_dtypes().items()}
        if t.dtype not in inv:
            raise TypeError(f"{name}: torch dtype {t.dtype} has no safetensors name")
        shape = list(t.shape)
        flat = t.contiguous().reshape(-1)
        if flat.numel() == 0:
            return inv[t.dtype], shape, np.zeros(0, dtype=np.uint8)
        raw = flat.view(torch.uint8).numpy()
        return inv[t.dtype], shape, raw
    a = np.asarray(obj)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    key = a.dtype.newbyteorder("<") if a.dtype.byteorder == "=" else a.dtype
    dname = NUMPY_TO_NAME.get(key)
    if dname is None:
        raise TypeError(f"{name}: NumPy dtype {a.dtype} has no safetensors name")
    shape = list(a.shape)
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return dname, shape, raw


def is_tensor(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return True
    mod = type(obj).__module__
    return mod.startswith("torch") and hasattr(obj, "dtype") and hasattr(obj, "shape")
