"""Files that survive kills and concurrent processes: atomic writes, and locks that die with their holder.

A write goes to a temp file with a unique name beside the target (so two processes writing the same path never
share one), is synced to disk, then renamed over the target, and the rename itself is synced. A lock is an
flock on a file: the kernel releases it when its process ends, however it ends, so a killed run never leaves
a stale lock behind.
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], None]) -> Path:
    """Call write_fn(file) on a fresh temp file beside path, then rename it over path; returns the path.

    Creates the parent directories. On any error (KeyboardInterrupt included) the temp file is removed and
    the previous file at path, if any, is left whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """value as standard JSON: a NaN or an infinity raises ValueError rather than write a non-standard
    literal."""
    text = json.dumps(value, indent=2, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """np.savez of the arrays, written atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file at path for the duration of the block, or raise LockHeld at once.

    The file records who holds it (process id, host, start time), which the LockHeld message repeats. It is
    left in place afterwards: removing it would let a third process lock a new file while a second still
    holds the old one.

    Args:
        what: what the lock protects, for the message ("workdir runs/x (train)").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 1000).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LockHeld(f"{what} is in use by {holder} (lock {path}): wait for it to end or choose another "
                       "workdir") from None
    try:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}, started {started}".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
