"""io_uring registered (fixed) buffers: IORING_REGISTER_BUFFERS pins with
FOLL_WRITE | FOLL_LONGTERM (io_uring/rsrc.c io_pin_pages()), so it is always an 'rw' pin.

The pinned pages are observed with IORING_OP_WRITE_FIXED (buffer → a channel memfd) and
changed with IORING_OP_READ_FIXED (channel → buffer): the kernel copies through its own
mapping of the pinned pages, never through the user mapping. A memfd rather than a pipe
moves a whole 2 MiB huge page in one operation.
"""

from __future__ import annotations

import errno
import os
import resource

from .. import uring
from ..errors import Skip
from ..model import Availability
from .base import Mechanism, Pinned, whole

RING_ENTRIES = 4  # one operation at a time needs no more


def memlock_skip(length: int) -> Skip | None:
    """ENOMEM from registration is RLIMIT_MEMLOCK when the ring is charged (no CAP_IPC_LOCK)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() == 0 or soft == resource.RLIM_INFINITY:
        return None
    return Skip(f"RLIMIT_MEMLOCK is {soft} bytes, too low to register a {length}-byte buffer: "
                f"ulimit -l {(soft + length) // 1024 + 64} or more (or run as root)")


class FixedBuffer(Pinned):
    def __init__(self, mech: IoUring, addr: int, length: int) -> None:
        self.mech, self.addr, self.length = mech, addr, length
        self.view_addr = addr
        try:
            mech.ring.register_buffer(addr, length)
        except OSError as e:
            skip = memlock_skip(length) if e.errno == errno.ENOMEM else None
            if skip:
                raise skip from None
            raise
        self.live = True

    def read_at(self, offset: int, length: int) -> bytes:
        ring, channel = self.mech.ring, self.mech.channel
        whole(ring.write_fixed(channel, self.addr + offset, length, offset), length,
              "WRITE_FIXED")
        return os.pread(channel, length, offset)

    def write_at(self, offset: int, data: bytes) -> None:
        ring, channel = self.mech.ring, self.mech.channel
        os.pwrite(channel, data, offset)
        whole(ring.read_fixed(channel, self.addr + offset, len(data), offset), len(data),
              "READ_FIXED")

    def release(self) -> None:
        if self.live:
            self.mech.ring.unregister_buffers()
            self.live = False


class IoUring(Mechanism):
    name = "io_uring"
    access = ("rw",)
    traits = frozenset({"longterm", "writable"})
    ring: uring.Ring | None = None
    channel = -1

    def availability(self) -> Availability:
        ok, why = uring.availability(RING_ENTRIES)
        return Availability(ok, why)

    def setup(self) -> None:
        try:
            self.ring = uring.Ring(RING_ENTRIES)
        except OSError as e:
            raise Skip(uring.setup_failure(e)) from None
        self.channel = os.memfd_create("pinhole-io_uring-channel", os.MFD_CLOEXEC)

    def pin(self, subject, access: str) -> Pinned:
        return FixedBuffer(self, subject.addr, subject.length)

    def close(self) -> None:
        if self.ring:
            self.ring.close()
        if self.channel >= 0:
            os.close(self.channel)


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (IoUring,)
