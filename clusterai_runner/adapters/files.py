"""Writing a file so that readers never see half of it: the inventory editor's and the
sandbox's one way to replace a file."""

from __future__ import annotations

import os
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
