"""tantra: model weights without surprises.

Safe loading of every weight format (safetensors, PyTorch ``.pt``/``.bin`` zip and legacy
archives, GGUF) that never executes anything from a file, zero-copy into NumPy and torch; the
versioned weights root (:class:`WeightManager`, :class:`ConfigManager`); and the Mamba runtimes.

>>> import tantra
>>> sd = tantra.load_file("model.safetensors", framework="torch")
>>> ckpt = tantra.load("checkpoint.pt", framework="torch")  # same nesting as torch.load
>>> tantra.save(sd, "model.pt")

Errors are :class:`TantraError` and its subclasses :class:`UnsafePickleError`,
:class:`BadFileError`, :class:`StoreError`, :class:`ConfigError` and :class:`RemoteError`; the message is what the
``tantra`` command prints.
"""

from ._tantra import (
    BadFileError,
    MambaRuntime,
    MultimodalRuntime,
    OcrRuntime,
    ConfigError,
    RemoteError,
    StoreError,
    TantraError,
    UnsafePickleError,
    __version__,
    convert,
    diff,
    inspect,
    scan,
)
from ._files import load, load_file, safe_open, save
from ._store import ConfigManager, WeightManager, load_model_weights

__all__ = [
    "BadFileError",
    "MambaRuntime",
    "MultimodalRuntime",
    "OcrRuntime",
    "ConfigError",
    "ConfigManager",
    "RemoteError",
    "StoreError",
    "TantraError",
    "UnsafePickleError",
    "WeightManager",
    "__version__",
    "convert",
    "diff",
    "inspect",
    "load",
    "load_file",
    "load_model_weights",
    "safe_open",
    "save",
]
