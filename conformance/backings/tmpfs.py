"""tmpfs and hugetlbfs files on a mount of pinhole's own (a detached mount: no mount point).

Without root, tmpfs files are unnamed (O_TMPFILE) files in /dev/shm instead: they vanish
with their last descriptor, so nothing is left there either.
"""

from __future__ import annotations

import os

from .. import hugepages
from ..mounts import DetachedMount, kernel_has
from ..running_kernel import filesystems
from .base import Availability, Backing, root_or

SHM = "/dev/shm"


def shm_is_tmpfs() -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1:3] == [SHM, "tmpfs"] for line in f) and os.access(SHM, os.W_OK)


class Tmpfs(Backing):
    name = "tmpfs"
    traits = frozenset({"shmem"})
    fstype = "tmpfs"
    options: dict[str, str | None] = {"size": "256m"}
    mount: DetachedMount | None = None

    def availability(self) -> Availability:
        if self.fstype not in filesystems() and not kernel_has(self.fstype):
            return Availability.no(f"kernel lacks {self.fstype} (CONFIG_{self.fstype.upper()})")
        if os.geteuid() != 0 and self.fstype == "tmpfs" and shm_is_tmpfs():
            return Availability.yes(f"not root: unnamed files in {SHM}")
        return root_or(f"mounting {self.fstype}") or Availability.yes()

    def setup(self) -> None:
        if os.geteuid() == 0:
            self.mount = DetachedMount(self.fstype, options=self.options)

    def create(self, name: str) -> int:
        if self.mount is None:
            return os.open(SHM, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        return os.open(self.mount.path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                       0o600)

    def remove(self, name: str, fd: int) -> None:
        os.close(fd)
        if self.mount is not None:
            os.unlink(self.mount.path(name))

    def close(self) -> None:
        if self.mount:
            self.mount.close()


class Hugetlbfs(Tmpfs):
    name = "hugetlbfs"
    traits = frozenset({"hugetlb"})
    fstype = "hugetlbfs"
    page_size = hugepages.SIZE_KB * 1024
    hugetlb = True
    options = {"pagesize": "2M"}

    def availability(self) -> Availability:
        missing = hugepages.availability_reason()
        return Availability.no(missing) if missing else super().availability()


# What this module adds to the registry (backings/__init__.py).
PROVIDES = (Tmpfs, Hugetlbfs)
