"""udmabuf: a dma-buf made of a memfd's folios (drivers/dma-buf/udmabuf.c), pinned with
memfd_pin_folios() on newer kernels. It pins the file range, not a user mapping: the case's
mapping only serves the mutations. The pinned folios are observed and written through an
mmap of the dma-buf, which is also where the zeropage check looks.

The memfd needs F_SEAL_SHRINK and must not have F_SEAL_WRITE; files other than memfds (and
hugetlb memfds) are refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from .. import abi
from ..model import Availability
from ..syscalls import ffi, ioctl, mmap, munmap, read_mem, write_mem
from .base import Mechanism, Pinned

DEVICE = "/dev/udmabuf"


class DmaBuf(Pinned):
    through_mapping = False

    def __init__(self, device: int, memfd: int, offset: int, length: int, file_view: int) -> None:
        self.length = length
        # The dma-buf's own mapping is VM_PFNMAP, which pagemap does not walk; the pinned
        # folios are the memfd's page cache, which a mapping of the file shows.
        self.view_addr = file_view
        create = ffi.new("struct udmabuf_create *", {"memfd": memfd, "offset": offset,
                                                     "size": length,
                                                     "flags": abi.UDMABUF_FLAGS_CLOEXEC})
        self.fd = ioctl(device, abi.UDMABUF_CREATE, create, "UDMABUF_CREATE")
        self.buf = mmap(length, abi.PROT_READ | abi.PROT_WRITE, abi.MAP_SHARED, self.fd)

    def read_at(self, offset: int, length: int) -> bytes:
        return read_mem(self.buf + offset, length)

    def write_at(self, offset: int, data: bytes) -> None:
        write_mem(self.buf + offset, data)

    def release(self) -> None:
        if self.fd >= 0:
            munmap(self.buf, self.length)
            os.close(self.fd)
            self.fd = -1


class Udmabuf(Mechanism):
    name = "udmabuf"
    access = ("rw",)
    traits = frozenset({"longterm", "file-pinner", "writable"})
    modules = {"udmabuf": "/dev/udmabuf"}
    device = -1

    def availability(self) -> Availability:
        if not os.path.exists(DEVICE):
            return Availability.no("no /dev/udmabuf: modprobe udmabuf, or a kernel with "
                                   "CONFIG_UDMABUF (Debian 6.12 has it built in, 6.1 lacks it)")
        if not os.access(DEVICE, os.R_OK | os.W_OK):
            return Availability.no(f"needs read-write access to {DEVICE} (run as root)")
        return Availability.yes()

    def setup(self) -> None:
        self.device = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)

    def pin(self, subject, access: str) -> Pinned:
        # udmabuf refuses a memfd that could shrink under it; a file that cannot take seals
        # (not a memfd) is left as it is, for udmabuf to refuse.
        with contextlib.suppress(OSError):
            fcntl.fcntl(subject.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        return DmaBuf(self.device, subject.fd, subject.offset, subject.length, subject.addr)

    def close(self) -> None:
        if self.device >= 0:
            os.close(self.device)
            self.device = -1


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (Udmabuf,)
