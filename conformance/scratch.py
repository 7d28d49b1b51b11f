"""Where pinhole keeps what it makes: loop images, and the file O_DIRECT goes through.

Loop images go to memory (/dev/shm) unless $PINHOLE_SCRATCH says otherwise. The
filesystems on them are real; only the storage under the loop device is RAM, so an fsync
or unmount ends in the image's page cache rather than waiting on a disk (a flush of this
VM's virtio disk costs more than a whole cell).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .mounts import mount_of

ENV = "PINHOLE_SCRATCH"
MEMORY = "/dev/shm"
# Below this much free memory in /dev/shm, loop images go to disk: a worker's three block
# filesystems take about 75 MiB of it, most of it xfs's log.
MEMORY_FREE_MIN = 1 << 30


def is_tmpfs(path: str) -> bool:
    found = mount_of(Path(path))
    return found is not None and found[0] == "tmpfs"


def disk_dir() -> str:
    """A directory on a disk filesystem: $PINHOLE_SCRATCH, else /var/tmp."""
    return os.environ.get(ENV) or ("/var/tmp" if os.path.isdir("/var/tmp")
                                   else tempfile.gettempdir())


def scratch_dir() -> str:
    """Where loop images live (unnamed O_TMPFILE files): $PINHOLE_SCRATCH, else /dev/shm
    when it is a tmpfs with room, else /var/tmp."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    if (is_tmpfs(MEMORY) and os.access(MEMORY, os.W_OK)
            and shutil.disk_usage(MEMORY).free >= MEMORY_FREE_MIN):
        return MEMORY
    return disk_dir()


def scratch_problem() -> str | None:
    """Why $PINHOLE_SCRATCH cannot hold loop images (missing, not a directory, read-only),
    or None; checked before a run so a bad value is one error, not one per case."""
    where = os.environ.get(ENV)
    if not where:
        return None
    if not os.path.exists(where):
        return f"{ENV}={where}: no such directory"
    if not os.path.isdir(where):
        return f"{ENV}={where}: not a directory"
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        return f"{ENV}={where}: cannot create files there: {e.strerror}"
    return None
