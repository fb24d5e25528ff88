"""The weights root from Python: :class:`WeightManager`, :class:`ConfigManager` and the
module-level :func:`load_model_weights`.

The root is ``root``, else the ``TANTRA_ROOT`` environment variable, else ``./Model`` (as for the
``tantra`` command). Every method returns what the command's ``--json`` prints, as Python data.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from ._files import PathLike, _flatten, _framework, _tensor
from ._tantra import (
    _ConfigManager,
    _WeightManager,
    _add_remote,
    _pull,
    _push,
    _remote_versions,
    _remotes,
    _remove_remote,
)


class WeightManager:
    """A weights root: registered, versioned, hash-checked weight files, backups, checkpoints.

    >>> wm = tantra.WeightManager("Model")
    >>> wm.register("model.pt", "mamba", "sample_small", formats=["safetensors", "pt"])
    >>> sd = wm.load_model_weights("mamba", version="sample_small", framework="torch")

    Errors are :class:`tantra.StoreError` (unknown model or version, a file changed since it
    was registered, a held lock) with the message the ``tantra`` command prints.
    """

    def __init__(self, root: Optional[PathLike] = None):
        self._wm = _WeightManager(None if root is None else os.fspath(root))

    @property
    def root(self) -> str:
        """The root folder."""
        return os.fspath(self._wm.root)

    def register(
        self,
        path: PathLike,
        model: str,
        version: str,
        *,
        formats: Optional[List[str]] = None,
        default: bool = False,
        force: bool = False,
        tags: Optional[List[str]] = None,
        note: Optional[str] = None,
        config: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Register a weight file as ``model:version``, converted to each of ``formats``
        (``safetensors``, ``pt``, ``bin``; default: the file's own). Returns the report."""
        return self._wm.register(
            os.fspath(path), model, version, formats=formats, default=default, force=force,
            tags=tags, note=note, config=config,
        )

    def load_model_weights(
        self,
        model: str,
        version: Optional[str] = None,
        format: Optional[str] = None,
        *,
        framework: str = "numpy",
        device: str = "cpu",
    ) -> Dict[str, Any]:
        """The tensors of ``model`` (its default version unless ``version``; safetensors first
        unless ``format``) as a flat ``{name: tensor}`` dict, after checking the file's size and
        sha256 against the registry: a changed file raises :class:`tantra.StoreError` and is
        never used."""
        fw = _framework(framework)
        f, _info = self._wm.load(model, version, format)
        return {name: _tensor(f, name, fw, device) for name in f.keys()}

    def resolve(self, model: str, version: Optional[str] = None, format: Optional[str] = None) -> Dict[str, Any]:
        """Which file ``load_model_weights`` reads (model, version, format, path, sha256),
        after the same hash check."""
        return self._wm.load(model, version, format)[1]

    def versions(self, model: str) -> List[Dict[str, Any]]:
        """The versions of ``model`` with default flag, tags, formats, sizes."""
        return self._wm.versions(model)

    def list_weights(self, model: Optional[str] = None, format: Optional[str] = None) -> List[Dict[str, Any]]:
        """One row per registered file."""
        return self._wm.list_weights(model, format)

    def set_default(self, model: str, version: str) -> None:
        """Make ``version`` the one loaded when none is named."""
        self._wm.set_default(model, version)

    def tag(self, model: str, version: str, tag: str, *, remove: bool = False) -> None:
        """Add (or remove) a tag; tagged versions survive cleanup."""
        self._wm.tag(model, version, tag, remove=remove)

    def remove(self, model: str, version: str, *, format: Optional[str] = None, force: bool = False,
               backup: bool = True, dry_run: bool = False) -> Dict[str, Any]:
        """Remove a version (or one format of it); files are backed up first unless
        ``backup=False``."""
        return self._wm.remove(model, version, format=format, force=force, backup=backup, dry_run=dry_run)

    def backups(self) -> List[Dict[str, Any]]:
        """The backups, newest last."""
        return self._wm.backups()

    def restore(self, backup_id: str) -> Dict[str, Any]:
        """Put a backed-up file back (by id or a unique prefix of it)."""
        return self._wm.restore(backup_id)

    def verify(self, scope: Optional[str] = None) -> Dict[str, Any]:
        """Re-hash every registered file (or ``"model"`` / ``"model:version"``) against the
        registry; ``problems`` lists what is missing or changed."""
        return self._wm.verify(scope)

    def cleanup(self, *, keep_versions: Optional[int] = None, model: Optional[str] = None,
                orphans: bool = False, dry_run: bool = False, backup: bool = True) -> Dict[str, Any]:
        """Retention: keep the newest ``keep_versions`` of each model (plus default and tagged),
        sweep orphans."""
        return self._wm.cleanup(keep_versions=keep_versions, model=model, orphans=orphans,
                                dry_run=dry_run, backup=backup)

    def save_checkpoint(
        self,
        model: str,
        state_dict: Any,
        step: int,
        metrics: Optional[Dict[str, float]] = None,
        *,
        format: str = "safetensors",
        force: bool = False,
    ) -> Dict[str, Any]:
        """Save a live state dict, or a whole training checkpoint (torch tensors or NumPy arrays
        in dicts, lists and tuples, with plain values), as the checkpoint of ``model`` at
        ``step`` with ``metrics``. The nesting is kept (``tantra.load`` or ``torch.load`` of the
        file gives it back); the written file is read back and compared before it is recorded."""
        tensors: list = []
        values: dict = {}
        structure = _flatten(state_dict, "", tensors, values)
        return self._wm.save_checkpoint(model, int(step), tensors, values,
                                        {k: float(v) for k, v in (metrics or {}).items()},
                                        format=format, force=force, structure=json.dumps(structure))

    def list_checkpoints(self, model: str) -> List[Dict[str, Any]]:
        """The checkpoints of ``model`` with their steps, metrics and files."""
        return self._wm.list_checkpoints(model)

    def prune_checkpoints(self, model: str, *, keep_last: int = 0, keep_best: int = 0,
                          metric: Optional[str] = None, mode: str = "min", dry_run: bool = False,
                          backup: bool = True) -> List[Dict[str, Any]]:
        """Remove all but the last ``keep_last`` and the best ``keep_best`` by ``metric``."""
        return self._wm.prune_checkpoints(model, keep_last=keep_last, keep_best=keep_best,
                                          metric=metric, mode=mode, dry_run=dry_run, backup=backup)

    def promote(self, model: str, step: int, version: str, *, default: bool = False) -> Dict[str, Any]:
        """Register the checkpoint at ``step`` as ``version`` of ``model``."""
        return self._wm.promote(model, int(step), version, default=default)

    # Remotes: an S3-compatible object store shared by several roots (see docs/remote.md).

    def push(self, model: str, version: Optional[str] = None, *, remote: Optional[str] = None,
             formats: Optional[List[str]] = None) -> Dict[str, Any]:
        """Send ``model:version`` (``model`` may be ``"name:version"``; default: the model's
        default version) to ``remote`` (default: the default or only remote), each distinct
        tensor once. Returns the report (bytes uploaded against bytes referenced).
        Errors are :class:`tantra.RemoteError` (unknown remote, credentials, the name taken by
        other weights on the remote) or :class:`tantra.StoreError`."""
        return _push(self._wm, model, version, remote=remote, formats=formats)

    def pull(self, model: str, version: Optional[str] = None, *, remote: Optional[str] = None,
             formats: Optional[List[str]] = None, default: bool = False) -> Dict[str, Any]:
        """Fetch ``model:version`` (default: the newest on the remote) into this root: every
        blob verified, every file rebuilt and checked against its sha256, the version
        registered only when all its files are in place. Returns the report."""
        return _pull(self._wm, model, version, remote=remote, formats=formats, default=default)

    def remote_versions(self, remote: Optional[str] = None, model: Optional[str] = None) -> List[Dict[str, Any]]:
        """The versions ``remote`` holds (of ``model`` when given), with the formats this root
        has of the same weights (``local_formats``)."""
        return _remote_versions(self._wm, remote, model)

    def remotes(self) -> Dict[str, Any]:
        """The remotes of this root: ``{"remotes": {name: definition}, "default": name}``."""
        return _remotes(self._wm)

    def add_remote(self, name: str, url: str, *, endpoint: Optional[str] = None,
                   region: Optional[str] = None, profile: Optional[str] = None,
                   default: bool = False) -> None:
        """Define remote ``name`` at ``s3://BUCKET[/PREFIX]`` (``endpoint`` for Garage, MinIO
        and other S3-compatible stores). Credentials are never stored: they come from the AWS
        environment variables or ``profile`` in ``~/.aws/credentials`` when a call connects."""
        _add_remote(self._wm, name, url, endpoint=endpoint, region=region, profile=profile,
                    default=default)

    def remove_remote(self, name: str) -> None:
        """Forget remote ``name`` (its objects are not touched)."""
        _remove_remote(self._wm, name)

    def __repr__(self) -> str:
        return f"WeightManager({self.root!r})"


class ConfigManager:
    """Model configurations under ``<root>/configs/<model>/<name>.json``, validated against the
    model type's schema. Errors are :class:`tantra.ConfigError`."""

    def __init__(self, root: Optional[PathLike] = None):
        self._cm = _ConfigManager(None if root is None else os.fspath(root))

    def list(self, model: Optional[str] = None) -> List[Dict[str, Any]]:
        return self._cm.list(model)

    def get(self, model: str, name: str) -> Dict[str, Any]:
        """The configuration ``name`` of ``model``."""
        return json.loads(self._cm.show(model, name))

    def save(self, model: str, name: str, config: Dict[str, Any], *, force: bool = False) -> None:
        """Store ``config`` as ``name`` (refused if invalid, or existing without ``force``)."""
        self._cm.import_config(model, name, json.dumps(config), force=force)

    def set(self, model: str, name: str, field: str, value: Any) -> Dict[str, Any]:
        """Set one field (dotted path) and return the updated configuration."""
        return json.loads(self._cm.set(model, name, field, json.dumps(value)))

    def validate(self, model: str, name: str) -> List[Dict[str, Any]]:
        """Problems of the configuration against its schema (empty when valid)."""
        return self._cm.validate(model, name)


def load_model_weights(
    model: str,
    version: Optional[str] = None,
    format: Optional[str] = None,
    *,
    framework: str = "numpy",
    device: str = "cpu",
    root: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``WeightManager(root).load_model_weights(...)``: the hash-checked tensors of a registered
    model, e.g. ``tantra.load_model_weights("mamba", version="sample_small")``."""
    return WeightManager(root).load_model_weights(model, version, format, framework=framework, device=device)
