"""One process per run folder: an advisory lock (``flock`` on ``<folder>/.lock``).

Two resumes of one run, or two seeds training the same cached teacher, would otherwise write the
same checkpoints and metrics and both exit 0. The lock is held while a process trains into a
folder: a second process either waits for it (a shared teacher cache: afterwards it reuses what
the first trained) or stops with a message naming the holder. Locks are per process and
re-entrant in it (a stage inside a locked run folder), taken by the first DDP process only (the
others are its workers), and released by the operating system when a process dies, so a killed
run never leaves a stale lock. Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from distill.errors import RecipeError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_held: set[Path] = set()  # folders this process holds


def _is_worker() -> bool:
    """A DDP process other than the first (its launcher holds the locks)."""
    return any(os.environ.get(key, "0") != "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block. Held by another process: ``wait`` blocks
    until it is released (saying so once), else ``RecipeError`` names the holder."""
    folder = Path(folder).absolute()
    if fcntl is None or _is_worker() or folder in _held:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise RecipeError(
                    f"{folder} is in use by {holder}: two processes writing one run folder would "
                    "mix their checkpoints and metrics. Wait for it to finish, or give this run "
                    "another name= or output_dir=") from None
            print(f"{folder} is in use by {holder}; waiting for it to finish", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        _held.add(folder)
        try:
            yield
        finally:
            _held.discard(folder)
            fcntl.flock(handle, fcntl.LOCK_UN)
