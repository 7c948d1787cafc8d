"""Files shared by processes: writing one so that readers never see half of it (the
inventory editor's and the sandbox's one way to replace a file), and holding a lock file
(the sandbox's changes, its root file system's build, a cluster's cloud commands)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` in one step (a temporary file beside it, renamed over
    it). Line endings are written as given; ``mode`` None keeps the file's own mode (a new
    file gets 0644)."""
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    temporary = path.with_name(f".{path.name}.clusterai-tmp")
    try:
        temporary.write_text(text, newline="")
        temporary.chmod(mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class Locked(Exception):
    """``locked(wait=False)`` found the lock held; ``holder`` is what its holder wrote."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder) while the block runs;
    the kernel drops it when the process ends, however it ends. With ``wait`` False, a
    lock another process holds raises ``Locked`` at once. The holder's pid is written in
    the file, for the message of the one that finds it held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            raise Locked(handle.read().strip() or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
