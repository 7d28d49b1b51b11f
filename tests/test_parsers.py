"""Parsers of kernel interfaces, on recorded data."""

import fcntl
import os
import struct

import pytest

from conformance import kmsg, pagemap, running_kernel
from conformance.patterns import describe, fill
from conformance.syscalls import PAGE_SIZE


def test_kernel_versions():
    assert running_kernel.parse_version("6.12.43+deb13-amd64") == (6, 12, 43)
    assert running_kernel.parse_version("6.5-rc1") == (6, 5, 0)
    assert running_kernel.parse_version("6.18.44-fc-v669") == (6, 18, 44)
    with pytest.raises(ValueError):
        running_kernel.parse_version("linux")


def test_kernel_config():
    text = "# CONFIG_GUP_TEST is not set\nCONFIG_UDMABUF=y\nCONFIG_RDMA_RXE=m\n"
    cfg = running_kernel.KernelConfig("/boot/config-x", running_kernel.parse_config(text))
    assert cfg.state("CONFIG_UDMABUF") == "y"
    assert cfg.state("CONFIG_RDMA_RXE") == "m"
    assert cfg.state("CONFIG_GUP_TEST") == "n"
    assert running_kernel.KernelConfig("").state("CONFIG_UDMABUF") is None


def test_pagemap_entries():
    present_zero = (1 << 63) | 0x3B34
    page = pagemap.decode(0x1000, present_zero, 1 << 24)
    assert page.present and page.pfn == 0x3B34 and page.zero_page and not page.thp
    huge_zero = pagemap.decode(0x2000, (1 << 63) | (1 << 61) | 0x12F800, (1 << 24) | (1 << 22))
    assert huge_zero.zero_page and huge_zero.thp and huge_zero.file
    hidden = pagemap.decode(0x3000, (1 << 63) | (1 << 56), None)  # non-root: PFN zeroed
    assert hidden.present and hidden.pfn == 0 and not hidden.zero_page and hidden.exclusive
    swapped = pagemap.decode(0x4000, (1 << 63) | (1 << 62) | 0x55, None)
    assert not swapped.present and swapped.pfn == 0


def test_pagemap_reads_the_entries_of_the_range(tmp_path):
    """pages() reads one little-endian 8-byte entry per page at 8 * (addr / PAGE_SIZE), from
    a recorded pagemap: the wrong offset, width or byte order picks other entries."""
    entries = [0, (1 << 63) | 0x111, (1 << 63) | (1 << 61) | 0x222, (1 << 62) | 0x33]
    recorded = tmp_path / "pagemap"
    recorded.write_bytes(b"".join(struct.pack("<Q", e) for e in entries))
    pm = pagemap.PageMap.__new__(pagemap.PageMap)
    pm._pagemap, pm._kpageflags = os.open(recorded, os.O_RDONLY), None
    try:
        pages = pm.pages(PAGE_SIZE + 1, 2 * PAGE_SIZE)
    finally:
        pm.close()
    assert [(p.vaddr, p.present, p.pfn, p.file) for p in pages] == [
        (PAGE_SIZE, True, 0x111, False), (2 * PAGE_SIZE, True, 0x222, True)]


SPLAT = """\
------------[ cut here ]------------
WARNING: CPU: 1 PID: 4242 at mm/gup.c:123 try_grab_folio+0x1/0x2
Modules linked in:
CPU: 1 PID: 4242 Comm: python3 Not tainted 6.18.0 #1
RIP: 0010:try_grab_folio+0x1/0x2""".splitlines()


def test_kmsg_findings_are_attributed_to_the_right_process():
    assert kmsg.findings(SPLAT, {4242}) == [SPLAT[1]]
    assert kmsg.findings(SPLAT, {1}) == []  # another worker's splat
    plain = ["Page cache invalidation failure on direct I/O.  Possible data corruption"]
    assert kmsg.findings(plain, {1}) == plain  # no PID line: cannot exclude it
    assert kmsg.findings(["ext4 filesystem being mounted"], {1}) == []


def test_kmsg_records_and_taint():
    assert kmsg.parse_record(b"4,1234,5678,-;WARNING: x\n SUBSYSTEM=mem") == (0, "WARNING: x")
    user = kmsg.parse_record(b"12,1235,5679,-;WARNING: from journald")
    assert user == (1, "WARNING: from journald")
    assert kmsg.decode_taint(0) == "G"
    assert kmsg.decode_taint((1 << 9) | (1 << 7)) == "DW"
    s = kmsg.Slice([], [], 1 << 12, (1 << 12) | (1 << 9))
    assert s.new_taint == "W"


def test_patterns_name_their_data():
    assert describe(bytes(64)) == "zeros"
    assert describe(fill("pin", 4096)) == 'pattern "pin"'
    assert fill("a", 100) != fill("b", 100)
    assert "mixed" in describe(fill("pin", 64) + bytes(64))


@pytest.mark.parametrize("resv,total,surplus,problem", [
    (0, 8, 0, None),
    (8, 8, 0, None),
    (3, 2, 1, None),  # reservations backed by surplus pages (nr_overcommit_hugepages)
    (9, 8, 0, "resv_hugepages is 9, more than the pool's 8 pages"),
    # Debian 6.12.118 after a udmabuf pin of a faulted MAP_PRIVATE hugetlb memfd hole:
    (2**64 - 1, 8, 0, "resv_hugepages is 18446744073709551615 (-1: it went below zero)"),
])
def test_hugetlb_accounting_problems(tmp_path, monkeypatch, resv, total, surplus, problem):
    from conformance import hugepages

    for name, value in (("resv_hugepages", resv), ("nr_hugepages", total),
                        ("surplus_hugepages", surplus)):
        (tmp_path / name).write_text(f"{value}\n")
    monkeypatch.setattr(hugepages, "POOL", tmp_path)
    found = hugepages.accounting_problem()
    assert found == problem if problem is None else problem in found


def fake_pool(tmp_path, monkeypatch, resv: int):
    from conformance import hugepages

    for name, value in (("resv_hugepages", resv), ("nr_hugepages", 8),
                        ("surplus_hugepages", 0)):
        (tmp_path / name).write_text(f"{value}\n")
    monkeypatch.setattr(hugepages, "POOL", tmp_path)
    return hugepages


@pytest.mark.parametrize("before,after,blamed", [
    (0, 2**64 - 1, True),  # the count went wrong in this trial: its problem
    (2**64 - 1, 2**64 - 1, False),  # wrong before it began: left by something else
    (0, 1, False),
])
def test_a_hugetlb_count_is_blamed_on_the_trial_only_if_it_went_wrong_in_it(
        tmp_path, monkeypatch, before, after, blamed):
    hugepages = fake_pool(tmp_path, monkeypatch, before)
    with hugepages.PoolWatch(True) as pool:
        (tmp_path / "resv_hugepages").write_text(f"{after}\n")  # what the pin did
        # No other watched trial (another worker's, another run's) runs meanwhile.
        other = os.open(tmp_path / "resv_hugepages", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        assert bool(pool.check()) == blamed
    with hugepages.PoolWatch(False) as idle:  # a backing without hugetlb pages
        assert idle.check() is None


def test_a_noted_kernel_state_problem_is_judged_like_a_bad_log_line():
    from conformance.dimensions import Case
    from conformance.expectations import Spec
    from conformance.model import Observation
    from conformance.verdict import judge

    monitor = kmsg.Monitor()
    monitor.begin("udmabuf.memfd-hugetlb.private.rw.faulted-hole.none")
    monitor.note("hugetlb accounting: resv_hugepages is 18446744073709551615")
    log = monitor.end()
    monitor.close()
    assert log.bad == ["pinhole: hugetlb accounting: resv_hugepages is 18446744073709551615"]
    case = Case.from_id("udmabuf.memfd-hugetlb.private.rw.faulted-hole.none.admission")
    r = judge(case, Observation("pinned", "pinned 2097152 bytes"),
              Spec.load().expect(case, (6, 12, 0)), log)
    assert (r.verdict, r.outcome) == ("fail", "kernel-warning")
    assert "resv_hugepages is 18446744073709551615" in r.detail and "pinned 2097152" in r.detail
