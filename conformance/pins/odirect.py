"""O_DIRECT I/O from and into the mapping: a short-term FOLL_PIN, taken again for every I/O,
as a control for the long-term pins. Observing is an O_DIRECT write of the range to a
scratch file ('ro' is that alone); writing is an O_DIRECT read into the range ('rw').

Because the pin is retaken each time it follows the mapping as it is at that moment: it
can never hold a detached page, and a range past EOF faults (EFAULT) rather than be read.
"""

from __future__ import annotations

import os

from ..backings.blockfs import scratch_dir
from ..errors import PinRefused
from ..loop import unnamed_file
from ..model import Availability
from .base import Mechanism, Pinned


def scratch_pair(where: str) -> tuple[int, int]:
    """An unnamed file in `where`, opened buffered and O_DIRECT (the kernel keeps the two
    coherent); OSError where the filesystem refuses O_DIRECT."""
    buffered = unnamed_file(where)
    try:
        return buffered, os.open(f"/proc/self/fd/{buffered}",
                                 os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        os.close(buffered)
        raise


class DirectIO(Pinned):
    longterm = False
    def __init__(self, scratch: tuple[int, int], addr: int, length: int) -> None:
        (self.buffered, self.direct), self.addr = scratch, addr
        self.length, self.view_addr = length, addr

    def _range(self) -> memoryview:
        from ..syscalls import ffi

        return memoryview(ffi.buffer(ffi.cast("char *", self.addr), self.length))

    def read(self) -> bytes:
        try:
            done = os.pwritev(self.direct, [self._range()], 0)  # the kernel pins and reads it
        except OSError as e:
            raise PinRefused(e.errno, f"O_DIRECT write from the range: {e.strerror}") from None
        return os.pread(self.buffered, done, 0)

    def write(self, data: bytes) -> None:
        os.pwrite(self.buffered, data, 0)
        try:
            os.preadv(self.direct, [self._range()[:len(data)]], 0)  # pins and writes it
        except OSError as e:
            raise PinRefused(e.errno, f"O_DIRECT read into the range: {e.strerror}") from None

    def release(self) -> None:
        """Nothing outlives an I/O."""


class ODirect(Mechanism):
    name = "odirect"
    access = ("ro", "rw")
    traits = frozenset({"writable"})
    scratch: tuple[int, int] | None = None

    def availability(self) -> Availability:
        try:
            for fd in scratch_pair(scratch_dir()):
                os.close(fd)
        except OSError as e:
            return Availability.no(f"O_DIRECT refused in {scratch_dir()} ({e.strerror}): set "
                                   "PINHOLE_SCRATCH to a directory on ext4, xfs or btrfs")
        return Availability.yes(f"scratch file in {scratch_dir()}")

    def setup(self) -> None:
        self.scratch = scratch_pair(scratch_dir())

    def pin(self, subject, access: str) -> Pinned:
        return DirectIO(self.scratch, subject.addr, subject.length)

    def close(self) -> None:
        for fd in self.scratch or ():
            os.close(fd)
        self.scratch = None


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (ODirect,)
