"""A huge page is looked at in three 4 KiB windows (conformance/windows.py): what the views,
the pins and the reports make of them, and on the running kernel that a pin reads and writes
exactly those windows of a hugetlb page."""

import os

import pytest

from conformance import hugepages
from conformance.availability import missing
from conformance.patterns import describe, fill
from conformance.subject import Subject
from conformance.windows import WINDOW, sample, windows

HUGE = 2 << 20


def test_a_normal_page_is_looked_at_whole():
    assert windows(4096) == ((0, 4096),)
    assert windows(64 << 10) == ((0, 64 << 10),)
    data = fill("x", 4096)
    assert sample(data, 4096) is data


def test_a_huge_page_is_looked_at_first_middle_and_last():
    assert windows(HUGE) == ((0, WINDOW), (HUGE // 2, WINDOW), (HUGE - WINDOW, WINDOW))
    whole = fill("file", HUGE)
    seen = sample(whole, HUGE)
    assert seen == whole[:WINDOW] + whole[HUGE // 2:HUGE // 2 + WINDOW] + whole[-WINDOW:]
    assert describe(seen) == 'pattern "file"'


def test_a_window_that_differs_is_seen_and_named():
    seen = sample(fill("file", HUGE), HUGE)
    assert describe(seen[:WINDOW] + bytes(WINDOW) + seen[2 * WINDOW:]) == \
        'mixed data: pattern "file", zeros'
    # The same tag one subpage further on (a pin on the wrong part of the folio) differs.
    shifted = sample(fill("file", HUGE + WINDOW)[WINDOW:], HUGE)
    assert shifted != seen


def test_a_pin_reads_and_writes_only_the_windows_of_a_huge_page(pinhole_worker):
    if os.geteuid() != 0:
        pytest.skip("needs root: reserving hugepages (run as root)")
    why = missing("io_uring", "memfd-hugetlb")
    if why:
        pytest.skip(why)
    reservation = hugepages.Reservation(4)  # the file is three huge pages
    subject = Subject(pinhole_worker.backing("memfd-hugetlb"), pinhole_worker.file_name(),
                      "shared")
    try:
        subject.prepare("written")
        before = fill("written", subject.size)[HUGE:2 * HUGE]
        pinned = pinhole_worker.mechanism("io_uring").pin(subject, "rw")
        try:
            assert pinned.read() == subject.file_view() == sample(before, HUGE)
            pinned.write(fill("pin", HUGE))
            after = os.pread(subject.fd, HUGE, subject.offset)
        finally:
            pinned.release()
        assert subject.file_view() == sample(fill("pin", HUGE), HUGE)
        for o, n in windows(HUGE):
            assert after[o:o + n] == fill("pin", HUGE)[o:o + n]
        assert after[WINDOW:HUGE // 2] == before[WINDOW:HUGE // 2]  # untouched between
    finally:
        subject.close()
        reservation.release()
