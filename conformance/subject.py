"""The file range under test: a file on a backing, put in a start state, and its mapping.

The file is three backing pages long and the middle one is mapped and pinned, so mutations
that shorten the file or shift its extents (COLLAPSE_RANGE must end before EOF) have room on
either side. Views of the range (read(), the mapping, the pin) cover its windows (windows.py):
all of a normal page, three 4 KiB spans of a huge one.
"""

from __future__ import annotations

import errno
import os

from .abi import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from .backings.base import Backing
from .errors import Skip
from .patterns import fill
from .syscalls import fallocate, mmap, munmap, read_mem, touch, write_mem
from .windows import sample, windows

# Start states of the pinned range, in the order reports list them.
STATES = ("hole", "faulted-hole", "stored", "written", "unwritten", "punched")


class Subject:
    def __init__(self, backing: Backing, name: str, mapping: str) -> None:
        self.backing, self.name = backing, name
        self.page = backing.page_size
        self.offset, self.length, self.size = self.page, self.page, 3 * self.page
        self.windows = windows(self.length)
        self.flags = MAP_SHARED if mapping == "shared" else MAP_PRIVATE
        self.addr = 0
        self.fd = backing.create(name)

    def prepare(self, state: str) -> None:
        os.ftruncate(self.fd, self.size)
        if state in ("written", "punched"):
            self.write_file(fill("written", self.size), 0)
        if state == "punched":  # written, then a hole again
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, self.offset, self.length)
        if state == "unwritten":  # allocated but never written: unwritten extents
            fallocate(self.fd, 0, 0, self.size)
        self.map()
        if state == "stored":  # a write fault through the mapping under test, before the pin
            write_mem(self.addr, fill("stored", self.length))
        if state == "faulted-hole":
            touch(self.addr, self.length)

    def map(self) -> None:
        self.addr = self._mmap(self.length, self.flags, self.offset)

    def _mmap(self, length: int, flags: int, offset: int) -> int:
        """mmap of this file; a hugetlb pool that has run dry is a skip, not a kernel finding."""
        try:
            return mmap(length, PROT_READ | PROT_WRITE, flags, self.fd, offset)
        except OSError as e:
            if e.errno == errno.ENOMEM and self.backing.hugetlb:
                raise Skip("no free 2 MiB hugepage to map: raise vm.nr_hugepages") from None
            raise

    def unmap(self) -> None:
        if self.addr:
            munmap(self.addr, self.length)
            self.addr = 0

    def write_file(self, data: bytes, offset: int | None = None) -> None:
        """Write through the file, not through the mapping under test.

        hugetlbfs has no write(): there the writer is a second MAP_SHARED mapping.
        """
        offset = self.offset if offset is None else offset
        if not self.backing.hugetlb:
            if os.pwrite(self.fd, data, offset) != len(data):
                raise OSError(f"short pwrite to {self.name}")
            return
        if os.fstat(self.fd).st_size < offset + len(data):  # as write() would extend it
            os.ftruncate(self.fd, offset + len(data))
        start = offset - offset % self.page
        span = -(-(offset + len(data) - start) // self.page) * self.page
        addr = self._mmap(span, MAP_SHARED, start)
        try:
            write_mem(addr + offset - start, data)
        finally:
            munmap(addr, span)

    def sample(self, data: bytes) -> bytes:
        """What a view of the range returns where the range holds `data` (whole-range bytes)."""
        return sample(data, self.length)

    def zeros(self) -> bytes:
        """A view of the range where it holds zeros."""
        return bytes(sum(n for _, n in self.windows))

    def file_view(self, offset: int | None = None) -> bytes:
        """What read() of the pinned range (or the page at offset) returns at its windows;
        short past EOF."""
        start = self.offset if offset is None else offset
        return b"".join(os.pread(self.fd, n, start + o) for o, n in self.windows)

    def path(self) -> str:
        """A path that opens this file again (O_DIRECT needs its own open)."""
        return f"/proc/self/fd/{self.fd}"

    def mapping_view(self) -> bytes:
        return b"".join(read_mem(self.addr + o, n) for o, n in self.windows)

    def flush(self) -> str:
        """Unmap, fsync and drop the cached pages: afterwards reads come from storage, or
        from nothing (shmem). Returns what was done, for the record."""
        self.unmap()
        os.fsync(self.fd)
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return "fsync, POSIX_FADV_DONTNEED"

    def set_aside(self) -> None:
        """Close the file and keep it, for a remount of its backing (which needs every file
        closed) before reopen(); close() after reopen() removes it."""
        os.close(self.fd)
        self.fd = -1

    def reopen(self) -> None:
        self.fd = self.backing.reopen(self.name, -1)

    def close(self) -> None:
        self.unmap()
        if self.fd >= 0:
            self.backing.remove(self.name, self.fd)
            self.fd = -1
