"""tmpfs and hugetlbfs files on a mount of pinhole's own (a detached mount: no mount point)."""

from __future__ import annotations

import os

from .. import hugepages
from ..kernel import filesystems
from ..mounts import DetachedMount
from .base import Availability, Backing, root_or


class Tmpfs(Backing):
    name = "tmpfs"
    fstype = "tmpfs"
    options: dict[str, str | None] = {"size": "256m"}
    mount: DetachedMount | None = None

    def availability(self) -> Availability:
        if self.fstype not in filesystems():
            return Availability.no(f"kernel lacks {self.fstype} (CONFIG_{self.fstype.upper()})")
        return root_or(f"mounting {self.fstype}") or Availability.yes()

    def setup(self) -> None:
        self.mount = DetachedMount(self.fstype, options=self.options)

    def create(self, name: str) -> int:
        assert self.mount is not None
        return os.open(self.mount.path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                       0o600)

    def remove(self, name: str, fd: int) -> None:
        os.close(fd)
        assert self.mount is not None
        os.unlink(self.mount.path(name))

    def close(self) -> None:
        if self.mount:
            self.mount.close()


class Hugetlbfs(Tmpfs):
    name = "hugetlbfs"
    fstype = "hugetlbfs"
    page_size = hugepages.SIZE_KB * 1024
    hugetlb = True
    options = {"pagesize": "2M"}

    def availability(self) -> Availability:
        missing = hugepages.availability_reason()
        return Availability.no(missing) if missing else super().availability()
