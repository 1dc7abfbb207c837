"""The one atomic writer: every file this project writes goes through here.

A write goes to a temporary file in the destination's own folder (same file system, so the final
``os.replace`` is atomic), is flushed and fsynced, then renamed over the destination, and the
folder is fsynced so that the rename itself survives a power cut. A crash or ``kill -9`` at any
moment leaves either the old file or the new one, never a half-written one, and never a stray
file under the destination's name. OS errors (read-only folder, full disk, a folder where a file
should go) become one :class:`~selector.errors.InputError` line naming the path.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

from selector.core.errors import InputError, os_reason

PathLike = Union[str, "os.PathLike[str]"]


def os_error_line(path: PathLike, exc: OSError, doing: str = "cannot write") -> InputError:
    """One line for an OS error on ``path``: what we tried, the path and the system's reason."""
    return InputError(f"{path}: {doing} ({os_reason(exc)})")


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(str(folder), os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8",
                newline: Optional[str] = None, permissions: int = 0o644) -> Iterator[IO[Any]]:
    """``with atomic_open(path) as handle: ...``: the file appears complete, or not at all.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes); ``permissions`` (less the umask) are the new
    file's (``0o755`` for a script). If the block raises, the destination is left as it was and
    the temporary file is removed. A symlink at ``path`` is replaced, never written through."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r} (expected 'w' or 'wb')")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=str(path.parent))
    except OSError as exc:
        raise os_error_line(path, exc) from None
    handle: Optional[IO[Any]] = None
    try:
        if "b" in mode:
            handle = os.fdopen(descriptor, "wb")
        else:
            handle = os.fdopen(descriptor, "w", encoding=encoding, newline=newline)
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        handle = None
        os.chmod(temporary, permissions & ~_umask())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        _discard(handle, temporary)
        raise os_error_line(path, exc) from None
    except BaseException:
        _discard(handle, temporary)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _discard(handle: Optional[IO[Any]], temporary: str) -> None:
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()
    with contextlib.suppress(OSError):
        os.unlink(temporary)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, newline: Optional[str] = None,
               permissions: int = 0o644) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    with atomic_open(path, "w", newline=newline, permissions=permissions) as handle:
        handle.write(text)
    return Path(path)


def copy_file(source: PathLike, path: PathLike) -> Path:
    """Copy ``source``'s bytes to ``path`` atomically (through :func:`atomic_open`)."""
    import shutil

    try:
        reader = open(source, "rb")
    except OSError as exc:
        raise os_error_line(source, exc, "cannot read") from None
    with reader, atomic_open(path, "wb") as handle:
        shutil.copyfileobj(reader, handle, 1 << 20)
    return Path(path)


def symlink(path: PathLike, points_to: PathLike) -> Path:
    """Make ``path`` a symlink to ``points_to`` atomically: the link is made under a temporary
    name in the same folder and renamed over ``path``, so whatever ``path`` was (a file, an old
    link) is replaced in one step and never deleted first. The caller makes sure ``path`` is not
    the very file the link points to (:func:`selector.data.write_cc_sbu_align` does)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        for attempt in range(100):
            temporary = path.parent / f".{path.name}.{os.getpid()}.{attempt}.link"
            try:
                os.symlink(str(points_to), str(temporary))
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
        try:
            os.replace(str(temporary), str(path))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(str(temporary))
            raise
        _fsync_folder(path.parent)
    except OSError as exc:
        raise os_error_line(path, exc) from None
    return path


def publish_folder(staging: PathLike, out: PathLike) -> Path:
    """Put the finished folder ``staging`` in place of ``out`` (a previous version of it, or
    nothing): two renames in one parent folder, so no moment shows a mix of the old and the new
    contents, and a failure leaves the old ``out`` in place. ``staging`` must be a sibling."""
    import shutil

    staging, out = Path(staging), Path(out)
    restore_interrupted_swap(out)
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    try:
        if out.exists() or out.is_symlink():
            os.replace(out, old)
            try:
                os.replace(staging, out)
            except OSError:
                os.replace(old, out)
                raise
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):  # the new folder is in place either way
                    old.unlink()
        else:
            os.replace(staging, out)
    except OSError as exc:
        raise os_error_line(out, exc) from None
    _fsync_folder(out.parent)
    return out


def restore_interrupted_swap(out: PathLike) -> None:
    """Undo what a kill between :func:`publish_folder`'s two renames left: ``out`` moved aside
    as ``.out.PID.old`` and the new folder not yet in place. The previous version comes back,
    and staging folders (``.out.PID.new``) of killed writers are removed."""
    import shutil

    out = Path(out)
    if not out.parent.is_dir():
        return
    aside = sorted(out.parent.glob(f".{out.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if aside and not (out.exists() or out.is_symlink()):
        try:
            os.replace(aside.pop(), out)
        except OSError as exc:
            raise os_error_line(out, exc, "cannot restore the previous version of") from None
    for leftover in aside + list(out.parent.glob(f".{out.name}.*.new")):
        if f".{os.getpid()}." not in leftover.name:  # never this process's own staging
            shutil.rmtree(leftover, ignore_errors=True)
