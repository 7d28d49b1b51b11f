"""Where pinhole keeps what it fetches, builds and derives: $XDG_CACHE_HOME/pinhole, or
~/.cache/pinhole."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pinhole"
