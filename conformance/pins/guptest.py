"""The kernel's own long-term pin test (mm/gup_test.c, CONFIG_GUP_TEST, debugfs gup_test):
PIN_LONGTERM_TEST_START pins with FOLL_LONGTERM (plus FOLL_WRITE for 'rw'), and
PIN_LONGTERM_TEST_READ copies the pinned pages out. Nothing writes through it.

It holds one pin set for the whole system, so cases take an exclusive flock on the debugfs
file while pinned: xdist workers queue for it.
"""

from __future__ import annotations

import fcntl
import os

from .. import abi
from ..errors import Skip
from ..model import Availability
from ..syscalls import AlignedBuffer, ffi, ioctl
from .base import Mechanism, Pinned

DEBUGFS = "/sys/kernel/debug/gup_test"


class GupTestPin(Pinned):
    def __init__(self, fd: int, addr: int, length: int, access: str) -> None:
        self.fd, self.length, self.view_addr = fd, length, addr
        fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel keeps a single pin set
        flags = abi.PIN_LONGTERM_TEST_FLAG_USE_WRITE if access == "rw" else 0
        args = ffi.new("struct pin_longterm_test *", {"addr": addr, "size": length,
                                                      "flags": flags})
        try:
            ioctl(fd, abi.PIN_LONGTERM_TEST_START, args, "PIN_LONGTERM_TEST_START")
        except OSError:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        self.live = True

    def read(self) -> bytes:
        with AlignedBuffer(self.length) as buf:
            target = ffi.new("uint64_t *", buf.addr)
            ioctl(self.fd, abi.PIN_LONGTERM_TEST_READ, target, "PIN_LONGTERM_TEST_READ")
            return self.sampled(bytes(buf.view()[:self.length]))  # it copies out all

    def write(self, data: bytes) -> None:
        raise NotImplementedError("gup_test cannot write through its pins")

    def release(self) -> None:
        if self.live:
            ioctl(self.fd, abi.PIN_LONGTERM_TEST_STOP, 0, "PIN_LONGTERM_TEST_STOP")
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.live = False


class GupTest(Mechanism):
    name = "gup_test"
    access = ("ro", "rw")
    writable = False
    traits = frozenset({"longterm"})
    fd = -1

    def availability(self) -> Availability:
        if not os.path.exists(DEBUGFS):
            return Availability.no(f"no {DEBUGFS}: needs a kernel built with CONFIG_GUP_TEST=y "
                                   "(Debian's are not) and debugfs mounted")
        return Availability.yes()

    def setup(self) -> None:
        self.fd = os.open(DEBUGFS, os.O_RDWR | os.O_CLOEXEC)
        # A gup_test older than the PIN_LONGTERM_TEST ioctls answers them with EINVAL.
        # STOP is harmless under the flock: no other worker holds a pin set meanwhile.
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            ioctl(self.fd, abi.PIN_LONGTERM_TEST_STOP, 0, "PIN_LONGTERM_TEST_STOP")
        except OSError as e:
            raise Skip(f"this kernel's gup_test has no PIN_LONGTERM_TEST_START ({e.strerror}): "
                       "needs a kernel whose mm/gup_test.c has pin_longterm_test_start()") from None
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def pin(self, subject, access: str) -> Pinned:
        return GupTestPin(self.fd, subject.addr, subject.length, access)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (GupTest,)
