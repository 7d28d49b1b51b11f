"""The backing interface: where the file under a pin lives, set up once per worker."""

from __future__ import annotations

import os
from typing import ClassVar

from ..model import Availability
from ..syscalls import PAGE_SIZE

__all__ = ["Availability", "Backing", "root_or"]


NOT_ROOT = "needs root: {what} (run as root)"


class Backing:
    """A kind of file: memfd, a tmpfs file, an ext4 file on a loop device, ...

    A worker calls setup() once, then create() per case; remount() drops every cached page
    of the backing (a real unmount and mount where the backing can survive one).
    """

    name: ClassVar[str]
    page_size: ClassVar[int] = PAGE_SIZE
    # Whether files on it are page cache over storage (so remount can show lost writes).
    persistent: ClassVar[bool] = False
    # Files are hugetlb: pages come from the reserved pool, one huge page per page_size.
    hugetlb: ClassVar[bool] = False
    # copy_file_range() within the filesystem shares extents (->remap_file_range), which first
    # drops the destination's cached folios.
    reflinks: ClassVar[bool] = False
    # What spec entries may name instead of listing backings (conformance/expectations.py):
    # shmem, hugetlb, dirty-tracked (page cache written back to storage: shared mappings need
    # dirty tracking, so mm/gup.c check_vma_flags() refuses long-term write pins), dax,
    # reflink (the flag above), persistent (the flag above).
    traits: ClassVar[frozenset[str]] = frozenset()

    # Kernel modules a VM loads for it, each with what shows it is built in instead.
    modules: ClassVar[dict[str, str]] = {}

    def availability(self) -> Availability:
        raise NotImplementedError

    def setup(self) -> None:
        """Per-worker preparation (mounts, loop devices); nothing by default."""

    def create(self, name: str) -> int:
        """A new empty file, opened read-write."""
        raise NotImplementedError

    def reopen(self, name: str, fd: int) -> int:
        """The file again after remount(); `fd` is the old descriptor if still open."""
        return fd

    def remove(self, name: str, fd: int) -> None:
        os.close(fd)

    def direct_write_detaches(self, state: str) -> bool:
        """Whether an O_DIRECT write takes the range's page out of the file, for a range that
        started in `state`: not for shmem, whose O_DIRECT (6.6+) is buffered."""
        return False

    def remount(self) -> bool:
        """Drop the backing's caches by unmounting and mounting it again, if it can."""
        return False

    def close(self) -> None:
        """Undo setup()."""


def root_or(what: str) -> Availability | None:
    return None if os.geteuid() == 0 else Availability.no(NOT_ROOT.format(what=what))
