"""Every way the pinned file range can change after the pin, one small function each.

A mutation returns its Effect: what read() of the pinned range must return afterwards, and
whether the operation itself takes the page out of the file (truncate, punch hole, ...), in
which case a pin that keeps its old page is `detached` rather than `disconnected`. A
mutation the kernel refuses (EOPNOTSUPP, EINVAL, ...) raises OSError and the case's outcome
is `unsupported` with that errno, checked against the spec like any other outcome.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import abi, cgroups
from .errors import Skip
from .model import Baseline, Effect, Trial
from .patterns import fill
from .subject import Subject
from .syscalls import AlignedBuffer, fallocate, ffi, ioctl, madvise, msync, write_mem

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _data(t: Trial) -> bytes:
    """The whole range's new data; its Effect holds t.subject.sample() of it."""
    return fill("mutation", t.subject.length)


def _shared(t: Trial) -> bool:
    return t.case.mapping == "shared"


def none(t: Trial, base: Baseline) -> Effect:
    return Effect(base.file)


def pwrite(t: Trial, base: Baseline) -> Effect:
    data = _data(t)
    os.pwrite(t.subject.fd, data, t.subject.offset)  # hugetlbfs has no write(): EINVAL
    return Effect(t.subject.sample(data))


def store(t: Trial, base: Baseline) -> Effect:
    """A CPU store through the mapping under test. In MAP_PRIVATE it lands in whatever the
    mapping maps: the pinned exclusive copy for a long-term pin (a write pin broke COW, a
    R/O one was unshared: mm/gup.c gup_must_unshare()), a new COW copy for a mere reference."""
    data = _data(t)
    write_mem(t.subject.addr, data)
    seen = t.subject.sample(data)
    if _shared(t):
        return Effect(seen, pin=seen)
    return Effect(base.file, pin=seen if t.holds_private_copy else None)


def pin_write(t: Trial, base: Baseline) -> Effect:
    """Through a MAP_PRIVATE mapping's pin the data lands in the private copy; a file
    pinner's lands in the file."""
    data = _data(t)
    t.pinned.write(data)
    seen = t.subject.sample(data)
    return Effect(base.file if t.private_copy else seen, pin=seen)


def truncate_down(t: Trial, base: Baseline) -> Effect:
    os.ftruncate(t.subject.fd, t.subject.offset)
    return Effect(b"", detaches=True)


def truncate_down_up(t: Trial, base: Baseline) -> Effect:
    os.ftruncate(t.subject.fd, t.subject.offset)
    os.ftruncate(t.subject.fd, t.subject.size)
    return Effect(t.subject.zeros(), detaches=True)


def _fallocate(mode: int) -> Callable:
    def apply(t: Trial, base: Baseline) -> Effect:
        fallocate(t.subject.fd, mode, t.subject.offset, t.subject.length)
        return Effect(t.subject.zeros(), detaches=True)
    return apply


def madv_remove(t: Trial, base: Baseline) -> Effect:
    madvise(t.subject.addr, t.subject.length, abi.MADV_REMOVE)  # MAP_PRIVATE: refused
    return Effect(t.subject.zeros(), detaches=True)


def collapse_range(t: Trial, base: Baseline) -> Effect:
    moved_in = t.subject.file_view(t.subject.offset + t.subject.length)  # the page after
    fallocate(t.subject.fd, abi.FALLOC_FL_COLLAPSE_RANGE, t.subject.offset, t.subject.length)
    return Effect(moved_in, detaches=True)


def fallocate_range(t: Trial, base: Baseline) -> Effect:
    fallocate(t.subject.fd, 0, t.subject.offset, t.subject.length)
    return Effect(base.file)


def _madvise(advice: int) -> Callable:
    def apply(t: Trial, base: Baseline) -> Effect:
        madvise(t.subject.addr, t.subject.length, advice)
        return Effect(base.file)
    return apply


def madv_dontneed(t: Trial, base: Baseline) -> Effect:
    """Zaps the mapping: MAP_SHARED refaults the same page-cache folio, MAP_PRIVATE loses the
    pinned copy and refaults the file's page."""
    madvise(t.subject.addr, t.subject.length, abi.MADV_DONTNEED)
    return Effect(base.file, detaches=not _shared(t))


def fadvise_dontneed(t: Trial, base: Baseline) -> Effect:
    os.posix_fadvise(t.subject.fd, t.subject.offset, t.subject.length, os.POSIX_FADV_DONTNEED)
    return Effect(base.file)


def drop_caches(t: Trial, base: Baseline) -> Effect:
    if os.geteuid() != 0:
        raise Skip("needs root: writing /proc/sys/vm/drop_caches (run as root)")
    DROP_CACHES.write_text("1")  # page cache only: the pinned folio must survive it
    return Effect(base.file)


def cgroup_reclaim(t: Trial, base: Baseline) -> Effect:
    """Proactive reclaim of the run's own cgroup (cgroups.py): pinned folios must survive it
    like any reclaim."""
    knob = cgroups.memory_reclaim()
    if knob is None:
        raise Skip("needs memory.reclaim in this process's cgroup v2 (5.19+, CONFIG_MEMCG): "
                   "run it in a cgroup2 group with the memory controller on (systemd: boot "
                   "with systemd.unified_cgroup_hierarchy=1)")
    try:
        knob.write_text(str(4 * t.subject.size))
    except OSError as e:
        if e.errno != errno.EAGAIN:  # EAGAIN: less was reclaimable than asked, which is fine
            raise
    return Effect(base.file)


def _direct_fd(t: Trial) -> int:
    return os.open(t.subject.path(), os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)


def odirect_write(t: Trial, base: Baseline) -> Effect:
    """Whether this takes the range's page out of the file is the backing's to say
    (Backing.direct_write_detaches(): page-cache invalidation, or fsdax's zeropage replaced)."""
    data = _data(t)
    fd = _direct_fd(t)
    try:
        with AlignedBuffer(len(data)) as buf:
            buf.view()[:len(data)] = data
            os.pwritev(fd, [buf.view()[:len(data)]], t.subject.offset)
    finally:
        os.close(fd)
    return Effect(t.subject.sample(data),
                  detaches=t.subject.backing.direct_write_detaches(t.case.state))


def odirect_read(t: Trial, base: Baseline) -> Effect:
    fd = _direct_fd(t)
    try:
        with AlignedBuffer(t.subject.length) as buf:
            done = os.preadv(fd, [buf.view()], t.subject.offset)
            direct = bytes(buf.view()[:done])
    finally:
        os.close(fd)
    return Effect(base.file, direct=t.subject.sample(direct))


def fsync_msync(t: Trial, base: Baseline) -> Effect:
    msync(t.subject.addr, t.subject.length, abi.MS_SYNC)
    os.fsync(t.subject.fd)
    return Effect(base.file)


def _source(t: Trial, data: bytes) -> int:
    """A second file on the same backing holding `data` at the pinned offset."""
    src = Subject(t.subject.backing, t.worker.file_name(), "shared")
    t.cleanup.append(src.close)
    os.ftruncate(src.fd, t.subject.size)
    src.write_file(data)
    return src.fd


def copy_file_range(t: Trial, base: Baseline) -> Effect:
    """Within one xfs or btrfs this is a reflink: the range's old folios leave the cache.
    Elsewhere it copies into the file's own pages (fs/read_write.c vfs_copy_file_range())."""
    data = _data(t)
    src = _source(t, data)
    os.copy_file_range(src, t.subject.fd, len(data), t.subject.offset, t.subject.offset)
    return Effect(t.subject.sample(data), detaches=t.subject.backing.reflinks)


def reflink(t: Trial, base: Baseline) -> Effect:
    """FICLONERANGE shares the source's extents: the range's old pages leave the file."""
    data = _data(t)
    src = _source(t, data)
    clone = ffi.new("struct file_clone_range *", {
        "src_fd": src, "src_offset": t.subject.offset, "src_length": len(data),
        "dest_offset": t.subject.offset})
    ioctl(t.subject.fd, abi.FICLONERANGE, clone, "FICLONERANGE")
    return Effect(t.subject.sample(data), detaches=True)


def fork_write(t: Trial, base: Baseline) -> Effect:
    """A child stores through its copy of the mapping; fork copies pinned anonymous pages
    for the child (mm/memory.c copy_present_page()), so MAP_PRIVATE children never touch
    the parent's pinned page."""
    data = _data(t)
    kept = None if _shared(t) else t.pinned.read()  # what the pin must go on holding
    pid = os.fork()
    if pid == 0:
        try:
            write_mem(t.subject.addr, data)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status):
        raise OSError(f"the child storing through the mapping died: status {status:#x}")
    seen = t.subject.sample(data)
    return Effect(seen, pin=seen) if kept is None else Effect(base.file, pin=kept)


def munmap_mmap(t: Trial, base: Baseline) -> Effect:
    """The pin outlives its mapping; a new MAP_PRIVATE mapping maps the file, not the copy."""
    t.subject.unmap()
    t.subject.map()
    return Effect(base.file, detaches=not _shared(t))


@dataclass(frozen=True)
class Mutation:
    name: str
    apply: Callable[..., Effect]
    family: str  # how reports group mutations
    # Static facts the spec matches on: "detaches" (always takes the page out of the file;
    # Effect.detaches adds the mapping- and backing-dependent cases), "fallocates" (a mode of
    # fallocate()), "reclaim" (asks the kernel to drop the page), "writes" (new data), "cleans"
    # (writes the dirty page back).
    traits: frozenset[str] = frozenset()


def _m(name: str, apply: Callable[..., Effect], family: str, *traits: str) -> Mutation:
    return Mutation(name, apply, family, frozenset(traits))


_KEEP = abi.FALLOC_FL_KEEP_SIZE
MUTATIONS: dict[str, Mutation] = {m.name: m for m in (
    _m("none", none, "baseline"),
    _m("pwrite", pwrite, "data", "writes"),
    _m("store", store, "data", "writes"),
    _m("pin-write", pin_write, "data", "writes"),
    _m("truncate-down", truncate_down, "size", "detaches"),
    _m("truncate-down-up", truncate_down_up, "size", "detaches"),
    _m("punch-hole", _fallocate(abi.FALLOC_FL_PUNCH_HOLE | _KEEP), "size", "detaches",
       "fallocates"),
    _m("madv-remove", madv_remove, "size", "detaches"),
    _m("zero-range", _fallocate(abi.FALLOC_FL_ZERO_RANGE | _KEEP), "size", "detaches",
       "fallocates"),
    _m("collapse-range", collapse_range, "size", "detaches", "fallocates"),
    _m("insert-range", _fallocate(abi.FALLOC_FL_INSERT_RANGE), "size", "detaches",
       "fallocates"),
    _m("fallocate", fallocate_range, "size", "fallocates"),
    _m("madv-dontneed", madv_dontneed, "reclaim"),
    _m("madv-pageout", _madvise(abi.MADV_PAGEOUT), "reclaim", "reclaim"),
    _m("madv-cold", _madvise(abi.MADV_COLD), "reclaim", "reclaim"),
    _m("fadvise-dontneed", fadvise_dontneed, "reclaim", "reclaim"),
    _m("drop-caches", drop_caches, "reclaim", "reclaim"),
    _m("cgroup-reclaim", cgroup_reclaim, "reclaim", "reclaim"),
    _m("odirect-write", odirect_write, "io", "writes"),
    _m("odirect-read", odirect_read, "io"),
    _m("fsync-msync", fsync_msync, "io", "cleans"),
    _m("copy-file-range", copy_file_range, "io", "writes"),
    _m("reflink", reflink, "io", "writes", "detaches"),
    _m("fork-write", fork_write, "process", "writes"),
    _m("munmap-mmap", munmap_mmap, "process"),
)}
