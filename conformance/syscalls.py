"""Thin wrappers over the libc calls and raw syscalls that Python's os module lacks.

Every failure raises OSError whose message starts with the call and the errno name
(``io_uring_register(BUFFERS): EFAULT (Bad address)``), so a verdict can quote it as is.
Calls that os already offers exactly (pread, pwrite, ftruncate, posix_fadvise,
memfd_create, fsync) are used from os directly.
"""

from __future__ import annotations

import errno as _errno
import os

from .abi import (
    MAP_ANONYMOUS,
    MAP_FAILED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    ffi,
    libc,
)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# Where two names share a value, the one the kernel source uses.
KERNEL_NAMES = {_errno.EOPNOTSUPP: "EOPNOTSUPP", _errno.EAGAIN: "EAGAIN"}


def errno_name(code: int) -> str:
    return KERNEL_NAMES.get(code) or _errno.errorcode.get(code, f"E{code}")


def fail(call: str, code: int | None = None) -> OSError:
    """The OSError for a failed call, with the errno name up front."""
    code = ffi.errno if code is None else code
    return OSError(code, f"{call}: {errno_name(code)} ({os.strerror(code)})")


def check(ret: int, call: str) -> int:
    if ret < 0:
        raise fail(call)
    return ret


def mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    addr = libc.mmap(ffi.NULL, length, prot, flags, fd, offset)
    if int(ffi.cast("uintptr_t", addr)) == MAP_FAILED:
        raise fail("mmap")
    return int(ffi.cast("uintptr_t", addr))


def munmap(addr: int, length: int) -> None:
    check(libc.munmap(ffi.cast("void *", addr), length), "munmap")


def madvise(addr: int, length: int, advice: int) -> None:
    check(libc.madvise(ffi.cast("void *", addr), length, advice), f"madvise({advice})")


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Retried on EINTR, as os retries its calls (PEP 475): hugetlbfs stops allocating at
    any signal (fs/hugetlbfs/inode.c hugetlbfs_fallocate()), and repeating it is harmless."""
    while libc.fallocate(fd, mode, offset, length) < 0:
        if ffi.errno != _errno.EINTR:
            raise fail(f"fallocate(mode={mode:#x})")


def msync(addr: int, length: int, flags: int) -> None:
    check(libc.msync(ffi.cast("void *", addr), length, flags), "msync")


def syscall(number: int, *args: object, name: str) -> int:
    cargs = [a if isinstance(a, ffi.CData) else ffi.cast("long", a) for a in args]
    return check(libc.syscall(number, *cargs), name)


def ioctl(fd: int, request: int, arg: object, name: str) -> int:
    carg = arg if isinstance(arg, ffi.CData) else ffi.cast("unsigned long", arg)
    return check(libc.ioctl(fd, request, carg), name)


def vmsplice(pipe_fd: int, addr: int, length: int, flags: int = 0) -> int:
    iov = ffi.new("struct iovec *", {"iov_base": ffi.cast("void *", addr), "iov_len": length})
    return check(libc.vmsplice(pipe_fd, iov, 1, flags), "vmsplice")


def statx_attributes(fd: int) -> int:
    """stx_attributes of an open file (STATX_ATTR_DAX and friends)."""
    from .abi import AT_EMPTY_PATH

    buf = ffi.new("struct statx *")
    check(libc.statx(fd, b"", AT_EMPTY_PATH, 0, buf), "statx")
    return buf.stx_attributes


def tee(fd_in: int, fd_out: int, length: int) -> int:
    return check(libc.tee(fd_in, fd_out, length, 0), "tee")


def mem_view(addr: int, length: int) -> memoryview:
    """This process's memory at addr, without a copy (for I/O from and into a mapping)."""
    return memoryview(ffi.buffer(ffi.cast("char *", addr), length))


def read_mem(addr: int, length: int) -> bytes:
    """Read through a mapping (this faults pages in, like any user access)."""
    return bytes(mem_view(addr, length))


def touch(addr: int, length: int) -> None:
    """Read a byte of every base page through a mapping, a read fault on each, in one C loop
    (a strided copy): a call a page cost 512 for a 2 MiB page."""
    mem_view(addr, length)[::PAGE_SIZE].tobytes()


def write_mem(addr: int, data: bytes) -> None:
    ffi.memmove(ffi.cast("char *", addr), data, len(data))


class AlignedBuffer:
    """Page-aligned anonymous memory, for O_DIRECT I/O and io_uring observation buffers."""

    def __init__(self, length: int) -> None:
        self.length = -(-length // PAGE_SIZE) * PAGE_SIZE
        self.addr = mmap(self.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)

    def view(self) -> memoryview:
        return mem_view(self.addr, self.length)

    def close(self) -> None:
        if self.addr:
            munmap(self.addr, self.length)
            self.addr = 0

    def __enter__(self) -> AlignedBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
