"""Weight files of any format: ``load``, ``load_file``, ``save``, ``safe_open``.

Nothing here executes anything from a file: the compiled reader resolves only an allowlist of
inert pickle globals and raises :class:`tantra.UnsafePickleError` for the rest.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Dict, List, Optional, Union

from . import _arrays
from ._tantra import _File, _save

PathLike = Union[str, "os.PathLike[str]"]

_FRAMEWORKS = ("numpy", "np", "torch", "pt")


def _framework(framework: str) -> str:
    if framework not in _FRAMEWORKS:
        raise ValueError(f"framework must be 'numpy' or 'torch', not {framework!r}")
    return "torch" if framework in ("torch", "pt") else "numpy"


def _tensor(f: _File, name: str, framework: str, device: str) -> Any:
    dtype, shape, raw, is_view = f.raw(name)
    if framework == "torch":
        return _arrays.to_torch(dtype, shape, raw, device)
    return _arrays.to_numpy(dtype, shape, raw, is_view)


class _Slice:
    """A tensor not yet read: ``get_shape()``, ``get_dtype()``, and ``[...]`` to read part of it.

    Indexing reads the tensor (a view of the file where possible, so no bytes are copied) and
    applies the index; the result is a copy only for a tensor that had to be materialized.
    """

    def __init__(self, owner: "safe_open", name: str, dtype: str, shape: List[int]):
        self._owner = owner
        self._name = name
        self._dtype = dtype
        self._shape = list(shape)

    def get_shape(self) -> List[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype

    def __getitem__(self, index: Any) -> Any:
        return self._owner.get_tensor(self._name)[index]

    def __repr__(self) -> str:
        return f"<tantra slice {self._name} {self._dtype} {self._shape}>"


class safe_open:
    """Open a weight file of any format with the ``safetensors.safe_open`` API.

    ``framework`` is ``"numpy"`` (``"np"``) or ``"torch"`` (``"pt"``). Tensors from safetensors
    files and contiguous tensors of PyTorch archives are views of a copy-on-write memory map of
    the file; they stay valid after the handle is closed (each view keeps the map alive).

    >>> with tantra.safe_open("model.safetensors", framework="torch") as f:
    ...     w = f.get_tensor("lm_head.weight")
    ...     rows = f.get_slice("embed.weight")[:10]

    Raises :class:`tantra.UnsafePickleError` for a pickle that could run code and
    :class:`tantra.BadFileError` for a malformed file.
    """

    def __init__(self, filename: PathLike, framework: str = "numpy", device: str = "cpu"):
        self._framework = _framework(framework)
        self._device = device
        self._file: Optional[_File] = _File(os.fspath(filename))
        self._infos = {n: (d, s) for n, d, s in self._file.infos()}

    def _open(self) -> _File:
        if self._file is None:
            raise ValueError("the file is closed")
        return self._file

    def keys(self) -> List[str]:
        """Tensor names, sorted (as safetensors sorts them)."""
        return sorted(self._open().keys())

    def offset_keys(self) -> List[str]:
        """Tensor names in the order the file stores them."""
        return self._open().keys()

    def metadata(self) -> Optional[Dict[str, str]]:
        """String metadata (safetensors ``__metadata__``), ``None`` when there is none."""
        m = self._open().metadata()
        return m or None

    def get_tensor(self, name: str) -> Any:
        """Tensor ``name`` as a NumPy array or torch tensor (``KeyError`` if absent)."""
        return _tensor(self._open(), name, self._framework, self._device)

    def get_slice(self, name: str) -> _Slice:
        """A lazy handle on tensor ``name``: ``get_shape()``, ``get_dtype()``, ``[...]``."""
        if name not in self._infos:
            raise KeyError(f"{self._open().path}: no tensor named {name!r}")
        dtype, shape = self._infos[name]
        return _Slice(self, name, dtype, shape)

    @property
    def format(self) -> str:
        """The container: ``safetensors``, ``pytorch-zip``, ``pytorch-legacy`` or ``gguf``."""
        return self._open().format

    def close(self) -> None:
        """Forget the file. Tensors already handed out stay valid."""
        self._file = None

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_file(filename: PathLike, framework: str = "numpy", device: str = "cpu") -> Dict[str, Any]:
    """Read every tensor of a weight file of any format into a flat ``{name: tensor}`` dict,
    like ``safetensors.torch.load_file``. Non-tensor checkpoint values are left out (see
    :func:`load`). Zero copy where the file allows it (see :class:`safe_open`)."""
    fw = _framework(framework)
    f = _File(os.fspath(filename))
    return {name: _tensor(f, name, fw, device) for name in f.keys()}


def _build(node: Any, leaves: Dict[str, Any]) -> Any:
    if isinstance(node, str):
        return leaves[node]
    (tag, body), = node.items()
    if tag in ("dict", "ordered_dict"):
        out = collections.OrderedDict() if tag == "ordered_dict" else {}
        for k, child in body:
            out[k] = _build(child, leaves)
        return out
    items = [_build(c, leaves) for c in body]
    return tuple(items) if tag == "tuple" else items


def load(
    filename: PathLike, *, framework: str = "numpy", device: str = "cpu"
) -> Any:
    """Load a weight file or checkpoint of any format into the nesting ``torch.load(f,
    weights_only=True)`` returns: dicts (``OrderedDict`` where the file has one), lists, tuples,
    ints, floats, strings, bools, ``None``, with tensors as NumPy arrays (``framework="numpy"``) or
    torch tensors (``framework="torch"``). A plain state dict comes back as a dict of tensors and
    values. Never executes anything from the file.

    Raises :class:`tantra.UnsafePickleError` for a pickle that could run code,
    :class:`tantra.BadFileError` for a malformed or unsupported file.
    """
    fw = _framework(framework)
    f = _File(os.fspath(filename))
    leaves: Dict[str, Any] = {name: _tensor(f, name, fw, device) for name in f.keys()}
    values = f.values()
    leaves.update(values)
    structure = f.structure()
    if structure is None:
        return leaves
    return _build(json.loads(structure), leaves)


def _flatten(obj: Any, prefix: str, tensors: list, values: dict) -> Any:
    """Walks ``obj``; collects tensors and values under dotted names; returns its structure."""
    def child(part: str) -> str:
        return f"{prefix}.{part}" if prefix else part

    if _arrays.is_tensor(obj):
        name = prefix or "tensor"
        tensors.append((name,) + _arrays.tensor_bytes(name, obj))
        return name
    if isinstance(obj, dict):
        tag = "ordered_dict" if isinstance(obj, collections.OrderedDict) else "dict"
        items = []
        for k, v in obj.items():
            if isinstance(k, bool):
                part = "True" if k else "False"
            elif isinstance(k, (int, str)):
                part = str(k)
            else:
                raise TypeError(f"{prefix or 'the root'}: key {k!r} is not a str, int or bool")
            items.append([k, _flatten(v, child(part), tensors, values)])
        return {tag: items}
    if isinstance(obj, (list, tuple)):
        tag = "tuple" if isinstance(obj, tuple) else "list"
        return {tag: [_flatten(v, child(str(i)), tensors, values) for i, v in enumerate(obj)]}
    name = prefix or "value"
    values[name] = obj
    return name


def save(
    obj: Any,
    filename: PathLike,
    *,
    format: Optional[str] = None,
    metadata: Optional[Dict[str, str]] = None,
) -> int:
    """Write ``obj`` (a state dict, or a nested checkpoint of dicts, lists, tuples, tensors and
    plain values) to ``filename`` as safetensors, a PyTorch ``.pt`` or ``.bin`` archive
    (``format`` or the extension decides). The file loads in torch (``torch.load(...,
    weights_only=True)``) and safetensors; a nested checkpoint keeps its nesting. Tensors may be
    torch tensors or NumPy arrays. Writes through a temporary file renamed into place. Returns the
    bytes written."""
    tensors: list = []
    values: dict = {}
    structure = _flatten(obj, "", tensors, values)
    return _save(
        os.fspath(filename),
        tensors,
        values,
        structure=json.dumps(structure),
        metadata=metadata,
        format=format,
    )
