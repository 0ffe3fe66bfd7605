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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise write_error(p, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise write_error(p, exc) from exc
        raise


def write_error(path: Path, exc: OSError) -> InputError:
    """A one-line error for a failed write, naming the file (a full disk: free space, the rerun resumes)."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"cannot write '{path}': no space left on the device ({exc.strerror}); free some space and run "
                          "the same command again: it resumes from what was saved (the file was not changed)")
    return InputError(f"cannot write '{path}': {exc.strerror or exc}; the file was not changed, fix the cause and rerun")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _sorted_header(data: bytes) -> bytes:
    """safetensors writes its metadata in hash-map order, which changes from process to process; rewrite the header
    with sorted metadata (same length, same offsets) so identical content gives identical bytes."""
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8:8 + n])
    meta = head.pop("__metadata__", None)
    out = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | dict(sorted(head.items()))
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > n:  # cannot happen for a reordering; keep the original rather than corrupt the file
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n:]


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically and byte-reproducibly. Metadata values must be strings."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, _sorted_header(data))


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


# -- output folders: one kind of artifact each, one writer at a time -------------------------------------------------
ARTIFACTS = {"teacher": "a teacher set", "train": "a training run", "discretization": "a saved discretization",
             "samples": "samples"}


def artifact_kinds(folder: str | os.PathLike) -> set[str]:
    """What indis artifacts a folder already holds, recognised by their files."""
    p = Path(folder)
    found = set()
    if (p / "manifest.json").is_file():
        found.add("teacher")
    if (p / "train_state.safetensors").is_file() or (p / "history.json").is_file() or (p / "starts").is_dir():
        found.add("train")
    if (p / "config.json").is_file() and any((p / w).is_file() for w in ("model.safetensors", "weights.safetensors")):
        found.add("discretization")
    if (p / "samples.safetensors").is_file():
        found.add("samples")
    return found


def claim_output(folder: str | os.PathLike, kind: str, flag: str = "--out", create: bool = True) -> Path:
    """Create `folder` for an artifact of `kind` (or, with create=False, only check it: the job creates it once its
    inputs are checked), refusing one that holds another kind of indis artifact (a training run written into a
    teacher set's folder would make both unreadable) or that is a file."""
    p = Path(folder)
    other = artifact_kinds(p) - {kind} if p.exists() else set()
    if other:
        what = ", ".join(ARTIFACTS[k] for k in sorted(other))
        raise InputError(f"{flag} '{folder}' already holds {what}; write {ARTIFACTS[kind]} to another folder")
    if not create:
        if p.exists() and not p.is_dir():
            raise InputError(f"{flag} '{folder}' is a file; choose a writable path for the output folder")
        return p
    return ensure_dir(folder)


class FolderLock:
    """An exclusive lock on an output folder for the lifetime of a job: a second indis process writing to the same
    folder is refused at once (with the holder's pid) instead of silently overwriting the first one's results."""

    def __init__(self, folder: str | os.PathLike, what: str = "job"):
        self.path, self.what, self._fd = Path(folder) / ".indis.lock", what, None

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return self
        ensure_dir(self.path.parent)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InputError(f"'{self.path.parent}' is in use by another indis {self.what} (pid {holder}); wait for it "
                                 "to finish or choose another output folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # still the lock file others see (the previous holder may have removed it meanwhile)
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            import fcntl

            try:
                self.path.unlink()  # leave no trace in the output folder; waiting processes re-check the inode
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
