"""One writer per output: locks for build, import, evaluate and leaderboard.

Two afpbench processes writing the same output (two imports of one set into one
``--out``, two evaluations of one detector into one results folder) would mix their
partial files and swap in a set or a predictions file the other did not make. Each
writer therefore takes an exclusive, non-blocking ``fcntl.flock`` lock on a small file
beside its output, ``<out>/.<name>.afpbench.lock``, and a second writer is refused at
once with the first one's pid.

Why flock: the kernel drops the lock when its holder exits in any way, SIGKILL and
out-of-memory kills included, so a crashed run never blocks the next one (a lock file
left on disk by a killed run is simply locked again). The file is removed on a clean
release; a releaser removes it while still holding the lock, and a taker checks after
locking that the file it locked is still the one at the path, so a lock is never held
on a removed file by one process while another locks a new one.

Distributed runs (torchrun, accelerate): only the main process takes the lock, so the
ranks of one run never lock each other out; the outcome is broadcast so every rank of a
refused run stops with the same message.

Locks are advisory and local: a shared filesystem without flock support (some NFS
setups) gives no protection across machines.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from afpbench.errors import AfpbenchError

try:  # POSIX; on other platforms outputs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".afpbench.lock"
F = TypeVar("F", bound=Callable[..., Any])


class OutputBusyError(AfpbenchError):
    """Another afpbench process holds the lock of this output."""


def lock_path(folder: str | Path, name: str) -> Path:
    """The lock file of output ``name`` inside ``folder``."""
    return Path(folder) / f".{name}{LOCK_SUFFIX}"


class OutputLock:
    """An exclusive lock on one output, held from ``acquire`` to ``release``."""

    def __init__(self, path: str | Path, what: str | Path | None = None):
        self.path = Path(path)
        self.what = str(what if what is not None else self.path.parent)
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        if fcntl is None or self.fd is not None:
            return self
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise AfpbenchError(_unwritable(self.path.parent, exc)) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise
                pid = _holder_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid else "pid unknown"
                raise OutputBusyError(
                    f"another afpbench ({who}) is writing here: {self.what}; wait for it to finish or stop it, then run the command again."
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                _write_pid(fd)
                return self
            os.close(fd)  # the previous holder removed the file meanwhile: lock the new one
        raise AfpbenchError(f"Could not lock {self.path}; remove it if no afpbench is running and run again.")  # pragma: no cover

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still locked: see the module doc
        except OSError:
            pass
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder_pid(fd: int) -> int | None:
    # The holder writes its pid right after locking; give it a moment if the file is empty.
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


def _write_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds without the pid note


# -- scopes: locks released when the function that took them returns -----------------------
_local = threading.local()


def lock_scope(fn: F) -> F:
    """Release every lock taken with :func:`hold` inside ``fn`` when ``fn`` returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scopes = _local.__dict__.setdefault("scopes", [])
        scopes.append([])
        try:
            return fn(*args, **kwargs)
        finally:
            for lock in reversed(scopes.pop()):
                lock.release()

    return wrapper  # type: ignore[return-value]


def hold(path: str | Path, what: str | Path | None = None, *, main: bool = True, share: Callable[[Any], Any] | None = None) -> None:
    """Take the lock at ``path`` until the enclosing :func:`lock_scope` function ends.

    ``main`` is False on the other ranks of a distributed run: they take no lock. ``share``
    (a broadcast from the main process) tells every rank whether the main process was
    refused, so all of them stop with the same one-line error.
    """
    scopes = _local.__dict__.get("scopes")
    if not scopes:
        raise RuntimeError("hold() is only valid inside a function decorated with @lock_scope")
    error: AfpbenchError | None = None
    if main:
        lock = OutputLock(path, what)
        try:
            lock.acquire()
            scopes[-1].append(lock)
        except AfpbenchError as exc:
            error = exc
    if share is not None:
        message = share(str(error) if error else None)
        if message and error is None:
            error = OutputBusyError(message)
    if error is not None:
        raise error


# -- output folders -------------------------------------------------------------------------
def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that cannot be created or written.

    Nothing is created: the folder (or, when it does not exist yet, its nearest existing
    parent) must be a writable folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AfpbenchError(f"{option} {path} is a file, not a folder; pass a folder path (it is created if missing).")
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            raise AfpbenchError(f"{option} {path}: {probe} is a broken link; pass a folder path.")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise AfpbenchError(f"{option} {path}: {probe} is a file, not a folder; pass a folder path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AfpbenchError(_unwritable(probe, None, option))
    return path


def ensure_output_dir(path: str | Path, option: str = "--out") -> Path:
    """:func:`check_output_dir`, then create the folder."""
    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AfpbenchError(_unwritable(path, exc, option)) from exc
    return path


def _unwritable(folder: Path, exc: OSError | None, option: str = "--out") -> str:
    read_only = (exc is not None and exc.errno == errno.EROFS) or _read_only_fs(folder)
    if read_only:
        return f"{option}: {folder} is on a read-only file system; pass a folder on a writable disk."
    if exc is not None and exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{option}: {folder} or a folder above it is a file; pass a folder path."
    if exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{option}: no space left on the device of {folder}; free some space or pass a folder on another disk."
    return f"{option}: cannot write to {folder} (permission denied); fix its permissions or pass a folder you can write to."


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


__all__ = ["OutputBusyError", "OutputLock", "check_output_dir", "ensure_output_dir", "hold", "lock_path", "lock_scope"]
