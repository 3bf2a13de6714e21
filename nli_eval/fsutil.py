"""Safe file names and atomic writes: nothing half-written, nothing outside the output directory."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import OutputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_len: int = 80) -> str:
    """A file-name-safe slug that never escapes its directory (no separators, no leading dots).

    A name that had to change (or be shortened) gets a digest of the original, so two different
    names never share a file.
    """
    slug = _UNSAFE.sub("_", name.replace("/", "__")).strip("._") or "unnamed"
    if slug != name or len(slug) > max_len:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        slug = f"{slug[: max(1, max_len - 9)]}-{digest}"
    return slug


def user_path(text: str) -> Path:
    """A path a user typed, with ~ expanded; an unknown ~user, or a ~ name holding a NUL byte, stays
    as typed, as a shell leaves it (and the caller finds no such file)."""
    try:
        return Path(text).expanduser()
    except (RuntimeError, ValueError):
        return Path(text)


def _checked(probe: Callable[[], bool]) -> bool:
    # Names a user typed may be too long or hold a NUL byte: such a path is simply not there.
    try:
        return probe()
    except (OSError, ValueError):
        return False


def is_file(path: Path) -> bool:
    return _checked(path.is_file)


def is_dir(path: Path) -> bool:
    return _checked(path.is_dir)


def exists(path: Path) -> bool:
    return _checked(path.exists)


def inside(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    root_r, path_r = root.resolve(), path.resolve()
    if root_r != path_r and root_r not in path_r.parents:
        raise OutputError(f"refusing to write {path}: outside the output directory {root}")
    return path


def _explain(exc: OSError, path: Path) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"no space left on the device writing {path}; free space and rerun (finished work is cached)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"permission denied writing {path}; choose another --output-dir")
    return OutputError(f"cannot write {path} ({exc.strerror or exc})")


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file beside the target, fsync, then rename over it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _explain(exc, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # Ctrl-C included: never leave the temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _explain(exc, path) from None
        raise


def append_durable(path: Path, text: str) -> None:
    """Append whole lines and fsync; a reader ignores a torn last line.

    A line torn by a killed run or a full disk is closed first, so the new lines never glue onto it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    text = "\n" + text
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _explain(exc, path) from None


TEMP_PATTERN = ".*.tmp"  # what atomic_write leaves behind only when the process is killed mid-write


def remove_stale_temps(root: Path, *subdirs: str) -> int:
    """Delete temporary files a killed run left in root (and the named subfolders); call under the lock."""
    removed = 0
    folders = [root] + [root / d for d in subdirs]
    for folder in folders:
        if not folder.is_dir():
            continue
        pattern = "**/" + TEMP_PATTERN if folder != root else TEMP_PATTERN
        for path in folder.glob(pattern):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed += 1
    return removed


@contextlib.contextmanager
def directory_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on an output directory, so two runs cannot write it at once."""
    import fcntl

    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = (root / ".lock").open("a+")
    except OSError as exc:
        raise _explain(exc, root / ".lock") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another nli-eval run is writing {root}; wait for it or use another --output-dir") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()
