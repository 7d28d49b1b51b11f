"""Positive controls: real situations on the running kernel in which each detector must
report the problem. A detector that never fires would make every pass meaningless.

Each control is parametrized by its id (control.<detector>.<variant>): the plugin records it
in results.json and every report like a case, and a failed control fails the run."""

import os
from pathlib import Path

import pytest

from conformance import abi, checks, flakey, hugepages
from conformance.model import Baseline, Case, Effect, Observation, Trial
from conformance.pagemap import NEEDS_ROOT
from conformance.subject import Subject
from conformance.syscalls import PAGE_SIZE, madvise, mmap, munmap, read_mem

THP = Path("/sys/kernel/mm/transparent_hugepage")
HPAGE = 2 << 20


@pytest.fixture
def pagemap(pinhole_worker):
    if not pinhole_worker.pagemap.sees_pfns():
        pytest.skip(NEEDS_ROOT)
    return pinhole_worker.pagemap


@pytest.mark.parametrize("control", ["control.zeropage.anon"])
def test_zeropage_detector_sees_the_shared_zeropage(pagemap, control):
    """A read fault on private anonymous memory maps the shared zeropage (mm/memory.c
    do_anonymous_page()): the detector must say so."""
    addr = mmap(PAGE_SIZE, abi.PROT_READ, abi.MAP_PRIVATE | abi.MAP_ANONYMOUS)
    try:
        read_mem(addr, 1)
        page = pagemap.pages(addr, PAGE_SIZE)[0]
        assert page.zero_page, page.describe()
    finally:
        munmap(addr, PAGE_SIZE)


@pytest.mark.parametrize("control", ["control.zeropage.thp"])
def test_zeropage_detector_sees_the_huge_zero_folio(pagemap, control):
    """With THP, a read fault on an aligned 2 MiB anonymous range maps the huge zero folio
    (mm/huge_memory.c do_huge_pmd_anonymous_page()); kpageflags marks it ZERO_PAGE and THP."""
    enabled = (THP / "enabled").read_text() if THP.exists() else "[never]"
    if "[never]" in enabled or (THP / "use_zero_page").read_text().strip() != "1":
        pytest.skip("needs THP with the huge zero page: echo madvise > "
                    f"{THP}/enabled; echo 1 > {THP}/use_zero_page")
    base = mmap(2 * HPAGE, abi.PROT_READ, abi.MAP_PRIVATE | abi.MAP_ANONYMOUS)
    try:
        aligned = -(-base // HPAGE) * HPAGE
        madvise(aligned, HPAGE, abi.MADV_HUGEPAGE)
        read_mem(aligned, 1)
        page = pagemap.pages(aligned, PAGE_SIZE)[0]
        assert page.zero_page and page.thp, page.describe()
    finally:
        munmap(base, 2 * HPAGE)


@pytest.mark.parametrize("control", ["control.coherence.file-to-pin",
                                     "control.coherence.pin-to-file"])
def test_coherence_detector_reports_a_disconnected_pin(pinhole_worker, control):
    """An io_uring pin of a MAP_PRIVATE memfd page holds a private copy. Told the mapping is
    shared, so that coherence is expected, both coherence checks must report the pin as
    disconnected."""
    seen = told_shared(pinhole_worker, "memfd", control.rsplit(".", 1)[1])
    assert seen.outcome == "disconnected", seen


@pytest.mark.parametrize("control", ["control.coherence.file-to-pin-huge",
                                     "control.coherence.pin-to-file-huge"])
def test_coherence_detector_reports_a_disconnected_pin_of_a_huge_page(pinhole_worker, control):
    """The same on a 2 MiB hugetlb memfd page, which the checks look at in three 4 KiB
    windows (conformance/windows.py): the pin's private huge copy must show in them."""
    if os.geteuid() != 0:
        pytest.skip("needs root: reserving hugepages (run as root)")
    reservation = hugepages.Reservation(4)  # the file is three huge pages
    try:
        check = control.rsplit(".", 1)[1].removesuffix("-huge")
        seen = told_shared(pinhole_worker, "memfd-hugetlb", check)
    finally:
        reservation.release()
    assert seen.outcome == "disconnected", seen


def told_shared(worker, backing: str, check: str) -> Observation:
    """What `check` makes of an io_uring pin of a MAP_PRIVATE hole of `backing` (a private
    copy) when told the mapping is shared."""
    told = Case("io_uring", backing, "shared", "rw", "hole", "none", check)
    subject = Subject(worker.backing(backing), worker.file_name(), "private")
    try:
        subject.prepare("hole")
        pinned = worker.mechanism("io_uring").pin(subject, "rw")
        try:
            trial = Trial(told, subject, pinned, worker)
            base = Baseline(subject.file_view())
            return checks.CHECKS[check](trial, base, Effect(base.file))
        finally:
            pinned.release()
    finally:
        subject.close()


@pytest.mark.parametrize("control", ["control.lost-write.drop-writes"])
def test_data_loss_detector_reports_a_write_the_disk_dropped(pinhole_worker, control):
    """A disk that completes writes without storing them (device-mapper flakey's
    drop_writes, drivers/md/dm-flakey.c) under ext4: data an O_DIRECT read puts into a shared
    mapping's page reaches the page cache and never the disk, so once pin-to-file reads the
    file back from storage (unmount and mount) it must report the write as lost."""
    available = flakey.availability()
    if not available.ok:
        pytest.skip(available.reason)
    backing = flakey.FlakeyExt4()
    backing.setup()
    subject = Subject(backing, pinhole_worker.file_name(), "shared")
    try:
        subject.prepare("written")
        backing.flakey.drop_writes()  # after the freeze has stored the file as prepared
        told = Case("odirect", "ext4", "shared", "rw", "written", "none", "pin-to-file")
        pinned = pinhole_worker.mechanism("odirect").pin(subject, "rw")
        trial = Trial(told, subject, pinned, pinhole_worker)
        base = Baseline(subject.file_view())
        seen = checks.pin_to_file(trial, base, Effect(base.file))
        if isinstance(seen, checks.Stored):  # as the runner settles it: remount, read back
            backing.remount()
            seen = seen.reread()
    finally:
        subject.close()
        backing.close()
    assert seen.outcome == "lost-write", seen


@pytest.mark.parametrize("control", ["control.kernel-log.drop-caches"])
def test_kernel_log_monitor_sees_what_the_kernel_says(pinhole_worker, control):
    """The monitor must catch the kernel's own lines logged during a case and only those:
    drop_caches makes the kernel log "<comm> (<pid>): drop_caches: 1" (fs/drop_caches.c),
    while a line user space writes to /dev/kmsg, even "WARNING:", is not the kernel's.
    (Which lines count as bad is tested on recorded splats in tests/test_parsers.py: no
    safe way exists to make a kernel warn on demand.)"""
    monitor = pinhole_worker.monitor
    if not monitor.available:
        pytest.skip("needs root: /dev/kmsg and drop_caches are root-only (run as root)")
    monitor.begin("control.kernel-log")
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write("WARNING: pinhole control: user space, not the kernel\n")
    Path("/proc/sys/vm/drop_caches").write_text("1")
    log = monitor.end()
    assert f"({os.getpid()}): drop_caches: 1" in "\n".join(log.lines), log.lines
    assert not log.bad and "pinhole control" not in "\n".join(log.lines)
