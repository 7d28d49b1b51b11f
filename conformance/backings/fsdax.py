"""ext4 and xfs with dax=always on a pmem device: no page cache, file pages are the device's
own memory, and a hole read-faults the shared zeropage (fs/dax.c dax_load_hole()).

Each worker claims a pmem device of its own with flock(2) (the lock dies with the worker)
and makes the filesystem afresh. Every file is checked with statx(STATX_ATTR_DAX).
"""

from __future__ import annotations

import fcntl
import glob
import os
from pathlib import Path

from ..abi import STATX_ATTR_DAX
from ..errors import SetupFailed, Skip
from ..syscalls import statx_attributes
from .base import Availability, root_or
from .blockfs import BlockFs

# Start states in which a read fault maps the shared zeropage (fs/dax.c dax_fault_iter():
# IOMAP_HOLE and IOMAP_UNWRITTEN → dax_load_hole()).
ZEROPAGE_STATES = ("hole", "faulted-hole", "unwritten", "punched")
NO_PMEM = ("no fsdax-capable pmem device: boot with memmap=512M!1G (one region per dax "
           "backing) and modprobe -a nd_e820 nd_pmem, or let `pinhole matrix` do it")


def pmem_devices() -> list[str]:
    """/dev/pmemN devices whose queue supports DAX."""
    out = []
    for dev in sorted(glob.glob("/dev/pmem[0-9]*")):
        flag = Path(f"/sys/block/{os.path.basename(dev)}/queue/dax")
        if flag.exists() and flag.read_text().strip() == "1":
            out.append(dev)
    return out


class FsDax(BlockFs):
    mount_options = {"dax": "always"}
    # No page cache: check_vma_flags() refuses long-term pins before dirty tracking counts.
    traits = frozenset({"persistent", "dax"})
    # nd_e820 and nd_pmem make /dev/pmemN of the memmap= regions.
    modules = {"nd_e820": "/dev/pmem*", "nd_pmem": "/dev/pmem*"}
    _lock = -1

    def availability(self) -> Availability:
        denied = root_or(f"mounting {self.name} on a pmem device")
        if denied:
            return denied
        missing = self.missing() or (None if pmem_devices() else NO_PMEM)
        if missing:
            return Availability.no(missing)
        return Availability.yes(f"pmem: {' '.join(pmem_devices())}")

    def setup(self) -> None:
        self.source = self._claim()
        self._mkfs()
        self._mount()

    def _claim(self) -> str:
        """The first pmem device no other worker holds; the flock goes with this process."""
        for dev in pmem_devices():
            fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock = fd
            return dev
        raise Skip(f"every pmem device is taken by another worker or dax backing: {NO_PMEM}")

    def direct_write_detaches(self, state: str) -> bool:
        """No page cache: a write lands in the device's page the mapping maps, except where
        the mapping maps the zeropage, which the write replaces with a new block and unmaps
        (fs/dax.c dax_iomap_iter(): IOMAP_F_NEW → invalidate_inode_pages2_range())."""
        return state in ZEROPAGE_STATES

    def create(self, name: str) -> int:
        fd = super().create(name)
        if not statx_attributes(fd) & STATX_ATTR_DAX:
            os.close(fd)
            raise SetupFailed(f"{name} on {self.name} is not a DAX file (statx lacks "
                              "STATX_ATTR_DAX) although mounted with dax=always")
        return fd

    def close(self) -> None:
        super().close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


class Ext4Dax(FsDax):
    name = "ext4-dax"
    fstype = "ext4"
    mkfs = ["mkfs.ext4", "-q", "-F", "-b", "4096"]
    packages = ("e2fsprogs", "e2fsprogs")


class XfsDax(FsDax):
    name = "xfs-dax"
    fstype = "xfs"
    mkfs = ["mkfs.xfs", "-q", "-f", "-m", "reflink=0"]  # DAX and reflink exclude each other
    packages = ("xfsprogs", "xfsprogs")


# What this module adds to the registry (backings/__init__.py).
PROVIDES = (Ext4Dax, XfsDax)
