"""A minimal io_uring from raw syscalls: one SQE at a time, fixed buffers, opcode probe.

No liburing: the kernel ABI is small and pinhole needs only synchronous submit-and-wait.
Works from 5.10 on; features are read from io_uring_params, never assumed.
"""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

from . import abi
from .abi import ffi
from .syscalls import errno_name, fail, mmap, munmap, syscall

DISABLED_SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")


def disabled_reason() -> str | None:
    """Why io_uring_setup would be refused by policy, or None (kernel.io_uring_disabled, 6.6+)."""
    try:
        value = int(DISABLED_SYSCTL.read_text())
    except (OSError, ValueError):
        return None
    if value == 2:
        return "io_uring is disabled: sysctl kernel.io_uring_disabled=2 (set it to 0)"
    if value == 1 and os.geteuid() != 0:
        return ("io_uring is limited to root and kernel.io_uring_group: "
                "sysctl kernel.io_uring_disabled=1")
    return None


class Ring:
    """An io_uring instance with its three ring mappings."""

    def __init__(self, entries: int = 4) -> None:
        params = ffi.new("struct io_uring_params *")
        try:
            self.fd = syscall(abi.SYS_io_uring_setup, entries, params, name="io_uring_setup")
        except OSError as e:
            hint = disabled_reason()
            raise OSError(e.errno, f"{e.strerror}; {hint}" if hint else e.strerror) from None
        self.params = params
        sq, cq = params.sq_off, params.cq_off
        sq_size = sq.array + params.sq_entries * 4
        cq_size = cq.cqes + params.cq_entries * ffi.sizeof("struct io_uring_cqe")
        self._maps = []
        if params.features & abi.IORING_FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
            self._sq = self._cq = self._map(sq_size, abi.IORING_OFF_SQ_RING)
        else:  # before 5.4 the CQ ring has its own mapping
            self._sq = self._map(sq_size, abi.IORING_OFF_SQ_RING)
            self._cq = self._map(cq_size, abi.IORING_OFF_CQ_RING)
        sqes = self._map(params.sq_entries * ffi.sizeof("struct io_uring_sqe"), abi.IORING_OFF_SQES)
        self._sqes = ffi.cast("struct io_uring_sqe *", sqes)
        self._sq_tail = self._u32(self._sq, sq.tail)
        self._sq_mask = self._u32(self._sq, sq.ring_mask)[0]
        self._sq_array = self._u32(self._sq, sq.array)
        self._cq_head = self._u32(self._cq, cq.head)
        self._cq_tail = self._u32(self._cq, cq.tail)
        self._cq_mask = self._u32(self._cq, cq.ring_mask)[0]
        self._cqes = ffi.cast("struct io_uring_cqe *", self._cq + cq.cqes)
        self.has_buffers = False

    def _map(self, size: int, offset: int) -> int:
        addr = mmap(size, abi.PROT_READ | abi.PROT_WRITE, abi.MAP_SHARED | abi.MAP_POPULATE,
                    self.fd, offset)
        self._maps.append((addr, size))
        return addr

    @staticmethod
    def _u32(base: int, offset: int):
        return ffi.cast("uint32_t *", base + offset)

    def _register(self, opcode: int, arg: object, nr: int, what: str) -> int:
        return syscall(abi.SYS_io_uring_register, self.fd, opcode, arg, nr,
                       name=f"io_uring_register({what})")

    def register_buffer(self, addr: int, length: int) -> None:
        """Register one fixed buffer (index 0): a FOLL_WRITE|FOLL_LONGTERM pin of its pages."""
        iov = ffi.new("struct iovec *", {"iov_base": ffi.cast("void *", addr), "iov_len": length})
        self._register(abi.IORING_REGISTER_BUFFERS, iov, 1, "REGISTER_BUFFERS")
        self.has_buffers = True

    def unregister_buffers(self) -> None:
        if self.has_buffers:
            self._register(abi.IORING_UNREGISTER_BUFFERS, ffi.NULL, 0, "UNREGISTER_BUFFERS")
            self.has_buffers = False

    def supported_ops(self) -> set[int] | None:
        """Opcodes the kernel supports, or None where IORING_REGISTER_PROBE is missing (< 5.6)."""
        probe = ffi.new("struct io_uring_probe *")
        try:
            self._register(abi.IORING_REGISTER_PROBE, probe, 256, "REGISTER_PROBE")
        except OSError as e:
            if e.errno == errno.EINVAL:
                return None
            raise
        return {probe.ops[i].op for i in range(probe.ops_len)
                if probe.ops[i].flags & abi.IO_URING_OP_SUPPORTED}

    def submit_wait(self, opcode: int, fd: int, addr: int, length: int, offset: int,
                    buf_index: int = 0) -> int:
        """Submit one SQE and wait for its completion; returns res (>= 0) or raises OSError."""
        tail = self._sq_tail[0]
        index = tail & self._sq_mask
        sqe = self._sqes[index]
        ffi.memmove(ffi.addressof(sqe), b"\0" * ffi.sizeof(sqe), ffi.sizeof(sqe))
        sqe.opcode, sqe.fd, sqe.addr, sqe.len, sqe.off = opcode, fd, addr, length, offset
        sqe.buf_index, sqe.user_data = buf_index, tail
        self._sq_array[index] = index
        self._sq_tail[0] = tail + 1  # the syscall below orders this store for the kernel
        # Until its own completion is in the ring: a signal or a ptrace stop ends the wait
        # early (io_uring_enter() then returns what it submitted, or EINTR), and a completion
        # left behind would be read as the next operation's.
        to_submit = 1
        while self._cq_head[0] == self._cq_tail[0]:
            try:
                to_submit -= syscall(abi.SYS_io_uring_enter, self.fd, to_submit, 1,
                                     abi.IORING_ENTER_GETEVENTS, ffi.NULL, 0,
                                     name="io_uring_enter")
            except InterruptedError:
                continue
        head = self._cq_head[0]
        cqe = self._cqes[head & self._cq_mask]
        res, user_data = cqe.res, cqe.user_data
        self._cq_head[0] = head + 1
        if user_data != tail:
            raise OSError(errno.EIO, f"io_uring: the completion of operation {user_data}, "
                          f"not of {tail}")
        if res < 0:
            raise fail(f"io_uring op {opcode}", -res)
        return res

    def read_fixed(self, fd: int, addr: int, length: int, offset: int = 0) -> int:
        """File → fixed buffer: the kernel writes into the pinned pages."""
        return self.submit_wait(abi.IORING_OP_READ_FIXED, fd, addr, length, offset)

    def write_fixed(self, fd: int, addr: int, length: int, offset: int = 0) -> int:
        """Fixed buffer → file: the kernel reads the pinned pages, not the user mapping."""
        return self.submit_wait(abi.IORING_OP_WRITE_FIXED, fd, addr, length, offset)

    def close(self) -> None:
        if self.fd < 0:
            return
        self.unregister_buffers()
        for addr, size in self._maps:
            munmap(addr, size)
        self._maps = []
        os.close(self.fd)
        self.fd = -1



def setup_failure(e: OSError) -> str:
    """Why io_uring_setup failed, and what to do about it."""
    if e.errno == errno.ENOSYS:
        return "kernel built without CONFIG_IO_URING"
    if e.errno == errno.ENOMEM and os.geteuid() != 0:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return (f"io_uring_setup: ENOMEM: RLIMIT_MEMLOCK ({soft} bytes) is too low for the "
                f"rings: ulimit -l {soft // 1024 + 64} or more (or run as root)")
    return f"io_uring_setup failed: {errno_name(e.errno)}: {e.strerror}"


def availability(entries: int = 4) -> tuple[bool, str]:
    """Whether a ring of `entries` can be set up here, and why not."""
    try:
        Ring(entries).close()
    except OSError as e:
        return False, setup_failure(e)
    return True, "io_uring_setup works"
