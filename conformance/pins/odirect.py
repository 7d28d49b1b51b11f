"""O_DIRECT I/O from and into the mapping: a short-term FOLL_PIN, taken again for every I/O,
as a control for the long-term pins. Observing is an O_DIRECT write of the range to a
scratch device ('ro' is that alone); writing is an O_DIRECT read into the range ('rw').
The scratch's side of each I/O is O_DIRECT too, through a bounce buffer: a buffered read
after a direct write refills the page cache the write invalidated (1.9 ms for 2 MiB, 0.4
direct).

The scratch is a small loop device of the worker's own over an image in memory, written
raw (block/fops.c blkdev_direct_IO() pins the pages as any filesystem's direct I/O does),
so an I/O costs no disk; without root, a file in $PINHOLE_SCRATCH or /var/tmp.

Because the pin is retaken each time it follows the mapping as it is at that moment: it
can never hold a detached page, and a range past EOF faults (EFAULT) rather than be read.
"""

from __future__ import annotations

import os

from ..errors import PinRefused
from ..loop import LoopDevice, unnamed_file
from ..model import Availability
from ..scratch import disk_dir, is_tmpfs, scratch_dir
from ..syscalls import AlignedBuffer, mem_view
from .base import Mechanism, Pinned, whole

# Room for a 2 MiB huge page and more.
DEVICE_SIZE = 4 << 20


def reopen_direct(fd: int) -> int:
    """An O_DIRECT open of fd's file, fd closed; OSError where O_DIRECT is refused."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    finally:
        os.close(fd)


def root_scratch() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/loop-control")


class DirectIO(Pinned):
    longterm = False

    def __init__(self, scratch: int, bounce: AlignedBuffer, addr: int, length: int) -> None:
        self.scratch, self.bounce, self.addr = scratch, bounce, addr
        self.length, self.view_addr = length, addr

    def take(self, offset: int = 0, length: int | None = None) -> None:
        """The pin itself: an O_DIRECT write of the range (or part of it) to the scratch, for
        which the kernel pins (GUP) and reads it."""
        length = self.length if length is None else length
        try:
            done = os.pwritev(self.scratch, [mem_view(self.addr + offset, length)], offset)
        except OSError as e:
            raise PinRefused(e.errno, f"O_DIRECT write from the range: {e.strerror}") from None
        whole(done, length, "O_DIRECT write from the range")

    def read_at(self, offset: int, length: int) -> bytes:
        self.take(offset, length)
        back = self.bounce.view()[offset:offset + length]
        whole(os.preadv(self.scratch, [back], offset), length, "O_DIRECT read of the scratch")
        return bytes(back)

    def write_at(self, offset: int, data: bytes) -> None:
        out = self.bounce.view()[offset:offset + len(data)]
        out[:] = data
        whole(os.pwritev(self.scratch, [out], offset), len(data),
              "O_DIRECT write to the scratch")
        try:  # pins the range's part, writes it
            done = os.preadv(self.scratch, [mem_view(self.addr + offset, len(data))], offset)
        except OSError as e:
            raise PinRefused(e.errno, f"O_DIRECT read into the range: {e.strerror}") from None
        whole(done, len(data), "O_DIRECT read into the range")

    def release(self) -> None:
        """Nothing outlives an I/O."""


class ODirect(Mechanism):
    name = "odirect"
    access = ("ro", "rw")
    traits = frozenset({"writable"})
    scratch: int | None = None
    bounce: AlignedBuffer | None = None
    device: LoopDevice | None = None

    def availability(self) -> Availability:
        if root_scratch():
            return Availability.yes(f"a loop device over an image in {scratch_dir()}")
        where = disk_dir()
        # tmpfs takes O_DIRECT from 6.6 but copies the data, pinning nothing (e88e0d366f9c).
        why = "tmpfs copies O_DIRECT I/O" if is_tmpfs(where) else None
        if not why:
            try:
                os.close(reopen_direct(unnamed_file(where)))
            except OSError as e:
                why = f"O_DIRECT refused ({e.strerror})"
        if why:
            return Availability.no(f"{why} in {where}: run as root (a loop device), or set "
                                   "PINHOLE_SCRATCH to a directory on ext4, xfs or btrfs")
        return Availability.yes(f"scratch file in {where}")

    def setup(self) -> None:
        self.bounce = AlignedBuffer(DEVICE_SIZE)
        if root_scratch():
            self.device = LoopDevice(DEVICE_SIZE, scratch_dir())
            self.scratch = reopen_direct(os.open(self.device.path, os.O_RDWR | os.O_CLOEXEC))
        else:
            self.scratch = reopen_direct(unnamed_file(disk_dir()))

    def pin(self, subject, access: str) -> Pinned:
        """Taken as every later look takes it (DirectIO.take()): an O_DIRECT write from the
        range, whose GUP faults the range in as a long-term pin's would (the zeropage check
        reads the page table as the pin left it)."""
        pinned = DirectIO(self.scratch, self.bounce, subject.addr, subject.length)
        pinned.take()
        return pinned

    def close(self) -> None:
        if self.scratch is not None:
            os.close(self.scratch)
        self.scratch = None
        if self.bounce:
            self.bounce.close()
            self.bounce = None
        if self.device:
            self.device.close()
            self.device = None


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (ODirect,)
