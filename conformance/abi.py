"""The one place that declares the kernel ABI pinhole uses: C structs for cffi and constants.

Everything is cffi ABI mode (dlopen of libc), so installing pinhole needs no compiler.
Values are those of the asm-generic ABI used by x86-64 and arm64; each block names the
uapi header it comes from.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import cffi

from .cache import cache_root

CDEF = """
    /* libc */
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
    int munmap(void *addr, size_t length);
    int madvise(void *addr, size_t length, int advice);
    int fallocate(int fd, int mode, long offset, long len);
    int msync(void *addr, size_t length, int flags);
    int mlockall(int flags);
    long syscall(long number, ...);
    int ioctl(int fd, unsigned long request, ...);

    /* include/uapi/linux/uio.h */
    struct iovec { void *iov_base; size_t iov_len; };
    ssize_t vmsplice(int fd, const struct iovec *iov, size_t nr_segs, unsigned int flags);
    ssize_t tee(int fd_in, int fd_out, size_t len, unsigned int flags);

    /* include/uapi/linux/io_uring.h */
    struct io_sqring_offsets {
        uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
        uint64_t user_addr;
    };
    struct io_cqring_offsets {
        uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
        uint64_t user_addr;
    };
    struct io_uring_params {
        uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
        uint32_t resv[3];
        struct io_sqring_offsets sq_off;
        struct io_cqring_offsets cq_off;
    };
    struct io_uring_sqe {          /* 64 bytes; unions flattened to their first member */
        uint8_t opcode, flags;
        uint16_t ioprio;
        int32_t fd;
        uint64_t off;
        uint64_t addr;
        uint32_t len;
        uint32_t rw_flags;
        uint64_t user_data;
        uint16_t buf_index, personality;
        int32_t splice_fd_in;
        uint64_t pad2[2];
    };
    struct io_uring_cqe { uint64_t user_data; int32_t res; uint32_t flags; };
    struct io_uring_probe_op { uint8_t op, resv; uint16_t flags; uint32_t resv2; };
    struct io_uring_probe {
        uint8_t last_op, ops_len;
        uint16_t resv;
        uint32_t resv2[3];
        struct io_uring_probe_op ops[256];
    };

    /* include/uapi/linux/stat.h: the head of struct statx (256 bytes in all) */
    struct statx {
        uint32_t stx_mask, stx_blksize;
        uint64_t stx_attributes;
        uint32_t stx_nlink, stx_uid, stx_gid;
        uint16_t stx_mode, spare0;
        uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
        uint8_t rest[192];
    };
    int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf);

    /* include/uapi/linux/fs.h */
    struct file_clone_range { int64_t src_fd; uint64_t src_offset, src_length, dest_offset; };

    /* mm/gup_test.h (not uapi: the kernel's test interface) */
    struct pin_longterm_test { uint64_t addr, size; uint32_t flags; };

    /* include/uapi/linux/udmabuf.h */
    struct udmabuf_create { uint32_t memfd, flags; uint64_t offset, size; };

    /* include/uapi/linux/loop.h */
    struct loop_info64 {
        uint64_t lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit;
        uint32_t lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags;
        uint8_t lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32];
        uint64_t lo_init[2];
    };
    struct loop_config {
        uint32_t fd, block_size;
        struct loop_info64 info;
        uint64_t reserved[8];
    };

    /* include/uapi/linux/dm-ioctl.h */
    struct dm_ioctl {
        uint32_t version[3];
        uint32_t data_size, data_start, target_count;
        int32_t open_count;
        uint32_t flags, event_nr, padding;
        uint64_t dev;
        char name[128];
        char uuid[129];
        char data[7];
    };
    struct dm_target_spec {
        uint64_t sector_start, length;
        int32_t status;
        uint32_t next;
        char target_type[16];
    };
    struct dm_target_versions { uint32_t next; uint32_t version[3]; char name[]; };
"""
# What names the declarations above: an out-of-line module made from other ones is not used.
CDEF_KEY = hashlib.sha256(f"{cffi.__version__}\n{CDEF}".encode()).hexdigest()[:16]
# CDEF in cffi's out-of-line ABI mode: in a VM's imports (conformance/bundle.py), and on a host
# in the cache, where the first process that parsed CDEF leaves it for the next ones.
OUT_OF_LINE = "_pinhole_abi"


def _ffi() -> cffi.FFI:
    """CDEF's FFI from an OUT_OF_LINE module made from these declarations, else parsed with
    pycparser: 30-40 ms of every pinhole process's start on a host, a second under TCG."""
    cached = _cached()
    for load in (lambda: __import__(OUT_OF_LINE), lambda: _load(cached)):
        try:
            made = load()
            if made.CDEF_KEY == CDEF_KEY:
                return made.ffi
        except Exception:  # noqa: BLE001 - none, stale or broken: CDEF is parsed instead
            pass
    parsed = cffi.FFI()
    parsed.cdef(CDEF)
    if cached is not None:
        with contextlib.suppress(OSError):  # a read-only cache: the next process parses too
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            tmp.write_text(out_of_line_source())
            os.replace(tmp, cached)
    return parsed


def _cached() -> Path | None:
    try:
        return cache_root() / "abi" / f"{OUT_OF_LINE}.py"
    except (RuntimeError, KeyError):  # no home directory to find
        return None


def _load(path: Path | None) -> ModuleType:
    spec = importlib.util.spec_from_file_location(OUT_OF_LINE, path) if path else None
    if spec is None or spec.loader is None or not path.exists():
        raise ImportError(OUT_OF_LINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def out_of_line_source() -> str:
    """The OUT_OF_LINE module's source: cffi's out-of-line ABI mode (no compiler), with
    CDEF_KEY."""
    import tempfile

    builder = cffi.FFI()
    builder.cdef(CDEF)
    builder.set_source(OUT_OF_LINE, None, compiler_verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{OUT_OF_LINE}.py")
        builder.emit_python_code(path)
        with open(path) as f:
            return f"{f.read()}\nCDEF_KEY = {CDEF_KEY!r}\n"


ffi = _ffi()
libc = ffi.dlopen(None)
# cffi lays a struct out on its first use, and an interrupt there (a timeout) leaves it "of
# unknown size" for the rest of the process: lay every one out now.
for _struct in ffi.list_types()[1]:
    ffi.sizeof(f"struct {_struct}")

# include/uapi/asm-generic/unistd.h: numbers shared by every architecture since 5.1
SYS_io_uring_setup = 425
SYS_io_uring_enter = 426
SYS_io_uring_register = 427
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432

# include/uapi/asm-generic/mman-common.h, mman.h
PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MAP_POPULATE = 0x8000
MAP_FAILED = 2**64 - 1
MADV_DONTNEED = 4
MADV_REMOVE = 9
MADV_DONTFORK = 10
MADV_HUGEPAGE = 14
MADV_COLD = 20
MADV_PAGEOUT = 21
MS_SYNC = 4
MCL_CURRENT = 1

# include/uapi/linux/stat.h, fcntl.h
STATX_ATTR_DAX = 0x00200000
AT_EMPTY_PATH = 0x1000

# include/uapi/linux/fs.h
FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)

# include/uapi/linux/falloc.h
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20

# include/uapi/linux/memfd.h
MFD_CLOEXEC = 0x1
MFD_ALLOW_SEALING = 0x2
MFD_HUGETLB = 0x4
MFD_HUGE_SHIFT = 26

# include/uapi/linux/io_uring.h
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_ENTER_GETEVENTS = 1 << 0
IORING_OP_READ_FIXED = 4
IORING_OP_WRITE_FIXED = 5
IORING_REGISTER_BUFFERS = 0
IORING_UNREGISTER_BUFFERS = 1
IORING_REGISTER_PROBE = 8
IO_URING_OP_SUPPORTED = 1 << 0

# mm/gup_test.h
PIN_LONGTERM_TEST_START = 0x40186707  # _IOW('g', 7, struct pin_longterm_test)
PIN_LONGTERM_TEST_STOP = 0x6708  # _IO('g', 8)
PIN_LONGTERM_TEST_READ = 0x40086709  # _IOW('g', 9, __u64)
PIN_LONGTERM_TEST_FLAG_USE_WRITE = 1

# include/uapi/linux/udmabuf.h
UDMABUF_CREATE = 0x40187542  # _IOW('u', 0x42, struct udmabuf_create)
UDMABUF_FLAGS_CLOEXEC = 0x01

# include/uapi/linux/loop.h
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4

# include/uapi/linux/dm-ioctl.h: _IOWR(0xfd, nr, struct dm_ioctl)
DM_VERSION_MAJOR = 4
DM_DEV_CREATE = 0xC138FD03
DM_DEV_REMOVE = 0xC138FD04
DM_DEV_SUSPEND = 0xC138FD06
DM_TABLE_LOAD = 0xC138FD09
DM_LIST_VERSIONS = 0xC138FD0D
DM_SUSPEND_FLAG = 1 << 1
DM_DEFERRED_REMOVE = 1 << 17

# include/uapi/linux/mount.h
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1

# include/uapi/linux/kernel-page-flags.h
KPF_NOPAGE = 20
KPF_THP = 22
KPF_ZERO_PAGE = 24
