"""Atomic file writes and checked safetensors/JSON loading."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and parents); raise InputError naming it when that is not possible."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder '{p}': {exc.strerror or exc}; choose a writable path") from exc
    if not os.access(p, os.W_OK):
        raise InputError(f"output folder '{p}' is not writable; choose a writable path or fix its permissions")
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` through a temp file in the same folder and an atomic rename."""
    p = Path(path)
    ensure_dir(p.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically. Metadata values must be strings."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, data)


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; corrupt or truncated files raise InputError naming the file."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputError(f"file '{p}' does not exist")
    try:
        out: dict[str, torch.Tensor] = {}
        with safe_open(str(p), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except Exception as exc:  # safetensors raises several types for damaged files
        raise InputError(
            f"'{p}' is not a readable safetensors file (corrupt or truncated: {exc}); delete it and regenerate it"
        ) from exc
    return out, meta


def check_tensors(path: str | os.PathLike) -> None:
    """Check that a safetensors file is complete (header and data extent) without reading its tensors."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            f.keys()
    except Exception as exc:
        raise InputError(
            f"'{p}' is not a readable safetensors file (corrupt or truncated: {exc}); delete it and regenerate it"
        ) from exc


def remove_stale_temps(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Delete temp files that `atomic_write_bytes` left behind for files named `name` (a glob) when a
    process was killed mid-write (they are never mistaken for real files: `.NAME.XXXX.tmp`)."""
    removed = []
    for t in Path(folder).glob(f".{name}.*.tmp"):
        try:
            t.unlink()
            removed.append(t)
        except OSError:
            pass
    return removed


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising InputError for missing or malformed files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file '{p}' does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"'{p}' is not valid JSON ({exc}); delete it and regenerate it") from exc
