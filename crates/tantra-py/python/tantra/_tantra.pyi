"""Type stubs for the compiled module ``tantra._tantra`` (public names are re-exported by
``tantra``; names starting with ``_`` are used by the Python layer)."""

from os import PathLike
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]

__version__: str

class TantraError(Exception):
    """Base of every error tantra raises; the message names the file and what is wrong."""

class UnsafePickleError(TantraError):
    """A pickle that names something able to run code; nothing was executed."""

class BadFileError(TantraError):
    """A file that is not weights, breaks a rule of its format, or holds an unsupported tensor kind."""

class StoreError(TantraError):
    """The weights root refused or failed (unknown model/version, a changed file, a held lock)."""

class ConfigError(TantraError):
    """A model configuration that is missing, invalid, or does not match the weights."""

class RemoteError(TantraError):
    """A remote refused or failed (unknown remote, credentials, a missing bucket or version, a damaged object)."""

class Mapping:
    """A private (copy-on-write) map of a weight file: the ``base`` of every zero-copy view."""

class _File:
    def __init__(self, path: _Path) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def format(self) -> str: ...
    def keys(self) -> List[str]: ...
    def infos(self) -> List[Tuple[str, str, List[int]]]: ...
    def raw(self, name: str) -> Tuple[str, List[int], npt.NDArray[np.uint8], bool]: ...
    def metadata(self) -> Dict[str, str]: ...
    def values(self) -> Dict[str, Any]: ...
    def structure(self) -> Optional[str]: ...
    def is_view(self, name: str) -> bool: ...
    def __len__(self) -> int: ...

def _save(
    path: _Path,
    tensors: Sequence[Tuple[str, str, Sequence[int], npt.NDArray[np.uint8]]],
    values: Dict[str, Any],
    structure: Optional[str] = None,
    metadata: Optional[Dict[str, str]] = None,
    format: Optional[str] = None,
    overwrite: bool = True,
) -> int: ...
def inspect(path: _Path) -> Dict[str, Any]:
    """What a file holds without loading its tensors: format, tensors, parameters, metadata, values."""
def scan(path: _Path) -> Dict[str, Any]:
    """What a pickle would do if unpickled: verdict, reasons, globals, opcodes, protocol."""
def convert(
    input: _Path,
    output: _Path,
    *,
    format: Optional[str] = None,
    force: bool = False,
    verify: bool = True,
    select: Optional[str] = None,
    strip: Optional[str] = None,
) -> Dict[str, Any]:
    """Convert between formats, verifying the output tensor by tensor."""
def diff(a: _Path, b: _Path) -> Dict[str, Any]:
    """Which tensors differ: identical, only_in_a, only_in_b, changed, same."""

class _WeightManager:
    def __init__(self, root: Optional[_Path] = None) -> None: ...
    @property
    def root(self) -> str: ...
    def register(self, path: _Path, model: str, version: str, *, formats: Optional[List[str]] = None,
                 default: bool = False, force: bool = False, tags: Optional[List[str]] = None,
                 note: Optional[str] = None, config: Optional[str] = None) -> Dict[str, Any]: ...
    def load(self, model: str, version: Optional[str] = None, format: Optional[str] = None) -> Tuple[_File, Dict[str, Any]]: ...
    def versions(self, model: str) -> List[Dict[str, Any]]: ...
    def list_weights(self, model: Optional[str] = None, format: Optional[str] = None) -> List[Dict[str, Any]]: ...
    def set_default(self, model: str, version: str) -> None: ...
    def tag(self, model: str, version: str, tag: str, *, remove: bool = False) -> None: ...
    def remove(self, model: str, version: str, *, format: Optional[str] = None, force: bool = False,
               backup: bool = True, dry_run: bool = False) -> Dict[str, Any]: ...
    def backups(self) -> List[Dict[str, Any]]: ...
    def restore(self, id: str) -> Dict[str, Any]: ...
    def verify(self, scope: Optional[str] = None) -> Dict[str, Any]: ...
    def cleanup(self, *, keep_versions: Optional[int] = None, model: Optional[str] = None,
                orphans: bool = False, dry_run: bool = False, backup: bool = True) -> Dict[str, Any]: ...
    def save_checkpoint(self, model: str, step: int, tensors: Sequence[Tuple[str, str, Sequence[int], npt.NDArray[np.uint8]]],
                        values: Dict[str, Any], metrics: Dict[str, float], format: str = "safetensors",
                        force: bool = False, structure: Optional[str] = None) -> Dict[str, Any]: ...
    def list_checkpoints(self, model: str) -> List[Dict[str, Any]]: ...
    def prune_checkpoints(self, model: str, *, keep_last: int = 0, keep_best: int = 0, metric: Optional[str] = None,
                          mode: str = "min", dry_run: bool = False, backup: bool = True) -> List[Dict[str, Any]]: ...
    def promote(self, model: str, step: int, version: str, *, default: bool = False) -> Dict[str, Any]: ...

def _push(store: _WeightManager, model: str, version: Optional[str] = None, *, remote: Optional[str] = None,
          formats: Optional[Sequence[str]] = None) -> Dict[str, Any]: ...
def _pull(store: _WeightManager, model: str, version: Optional[str] = None, *, remote: Optional[str] = None,
          formats: Optional[Sequence[str]] = None, default: bool = False) -> Dict[str, Any]: ...
def _remote_versions(store: _WeightManager, remote: Optional[str] = None,
                     model: Optional[str] = None) -> List[Dict[str, Any]]: ...
def _remotes(store: _WeightManager) -> Dict[str, Any]: ...
def _add_remote(store: _WeightManager, name: str, url: str, *, endpoint: Optional[str] = None,
                region: Optional[str] = None, profile: Optional[str] = None, default: bool = False) -> None: ...
def _remove_remote(store: _WeightManager, name: str) -> None: ...

class _ConfigManager:
    def __init__(self, root: Optional[_Path] = None) -> None: ...
    def list(self, model: Optional[str] = None) -> List[Dict[str, Any]]: ...
    def show(self, model: str, name: str) -> str: ...
    def import_config(self, model: str, name: str, config: str, *, force: bool = False) -> None: ...
    def set(self, model: str, name: str, field: str, value: str) -> str: ...
    def validate(self, model: str, name: str) -> List[Dict[str, Any]]: ...

class MambaRuntime:
    """A Mamba language model ready to run, from the weights root or a path."""
    def __init__(self, model_type: str = "mamba", version: Optional[str] = None,
                 root: Optional[_Path] = None, format: Optional[str] = None,
                 dtype: str = "f32", threads: Optional[int] = None) -> None:
        """``dtype``: the precision weight matrices are kept at, ``"f32"``, ``"bf16"`` or ``"q8"``.
        ``threads``: the threads this runtime computes on (its own pool; ``None``: all cores);
        results are the same bits whatever the count."""
    @staticmethod
    def from_path(path: _Path, dtype: str = "f32",
                  threads: Optional[int] = None) -> "MambaRuntime": ...
    @property
    def dtype(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def origin(self) -> str: ...
    def logits(self, ids: Union[str, Sequence[int]]) -> npt.NDArray[np.float32]:
        """Logits of every position, shape ``[len(ids), vocab_size]``."""
    def generate(self, prompt: Union[str, Sequence[int]], *, max_new_tokens: int = 32,
                 temperature: float = 0.0, top_k: Optional[int] = None, top_p: float = 1.0,
                 seed: int = 0, eos_token_id: Optional[int] = None) -> Dict[str, Any]:
        """``{"text", "ids", "prompt_ids", "stop"}``."""
    def stream(self, prompt: Union[str, Sequence[int]], *, max_new_tokens: int = 32,
               temperature: float = 0.0, top_k: Optional[int] = None, top_p: float = 1.0,
               seed: int = 0, eos_token_id: Optional[int] = None) -> "TokenStream": ...

class TokenStream(Iterator[Tuple[int, Optional[str]]]):
    def __iter__(self) -> "TokenStream": ...
    def __next__(self) -> Tuple[int, Optional[str]]: ...

_Image = Union[_Path, bytes, Any]  # a path, PNG/JPEG bytes, a PIL image, or an HxWxC uint8 array

class MultimodalRuntime:
    """Image + prompt -> text (``mamba_multimodal``), from the weights root or a path."""
    def __init__(self, model_type: str = "mamba_multimodal", version: Optional[str] = None,
                 root: Optional[_Path] = None, format: Optional[str] = None,
                 dtype: str = "f32") -> None:
        """``dtype``: the precision weight matrices are kept at, ``"f32"``, ``"bf16"`` or ``"q8"``."""
    @staticmethod
    def from_path(path: _Path, dtype: str = "f32") -> "MultimodalRuntime": ...
    def generate(self, prompt: Union[str, Sequence[int], None] = None, *, image: Optional[_Image] = None,
                 max_new_tokens: int = 32, temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: float = 1.0, seed: int = 0) -> Dict[str, Any]: ...
    def image_tokens(self, image: _Image) -> npt.NDArray[np.float32]: ...

class OcrRuntime:
    """Image -> text (``ocr_native``, greedy CTC), from the weights root or a path."""
    def __init__(self, model_type: str = "ocr_native", version: Optional[str] = None,
                 root: Optional[_Path] = None, format: Optional[str] = None,
                 dtype: str = "f32") -> None:
        """``dtype``: the precision weight matrices are kept at, ``"f32"``, ``"bf16"`` or ``"q8"``."""
    @staticmethod
    def from_path(path: _Path, dtype: str = "f32") -> "OcrRuntime": ...
    def recognize(self, image: _Image) -> Dict[str, Any]:
        """``{"text", "classes", "frame_classes", "logits"}`` (logits ``[frames, classes]``)."""
