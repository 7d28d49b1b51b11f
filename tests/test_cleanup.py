"""Nothing is left behind when a worker is killed: its loop devices detach, its mounts go,
its hugepage reservation is given back."""

import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conformance import hugepages

CHILD = """
import json, sys
from conformance import hugepages
from conformance.worker import Worker
w = Worker()
loops, fs = {}, {}
for name in ("tmpfs", "hugetlbfs", "ext4", "xfs", "btrfs"):
    b = w.backing(name)
    if getattr(b, "loop", None):
        loops[b.loop.path] = open(f"/sys/block/{b.loop.path[5:]}/loop/backing_file").read()
        fs[name] = b.loop.path[5:]
r = hugepages.Reservation(4)
print(json.dumps({"loops": loops, "fs": fs, "added": r.added}), flush=True)
sys.stdin.read()
"""


def superblocks(fs: dict[str, str]) -> list[str]:
    """The sysfs entries of the child's mounted filesystems: detached mounts are in no
    /proc/mounts, but each live superblock has one."""
    paths = [Path(f"/sys/fs/{name}/{dev}") for name, dev in fs.items() if name != "btrfs"]
    if "btrfs" in fs:
        paths += Path("/sys/fs/btrfs").glob(f"*/devices/{fs['btrfs']}")
    return [str(p) for p in paths if p.exists()]


def backing_file(dev: str) -> str | None:
    try:
        return Path(f"/sys/block/{dev[5:]}/loop/backing_file").read_text()
    except OSError:
        return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loop devices, mounts and hugepages")
def test_sigkill_leaves_nothing():
    before = int((hugepages.POOL / "nr_hugepages").read_text())
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    state = json.loads(child.stdout.readline())
    assert len(state["loops"]) == 3 and state["added"] == 4
    assert all(backing_file(d) == f for d, f in state["loops"].items())
    assert len(superblocks(state["fs"])) == 3, state["fs"]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [d for d, f in state["loops"].items() if backing_file(d) == f]
        nr = int((hugepages.POOL / "nr_hugepages").read_text())
        mounted = superblocks(state["fs"])
        if not left and nr == before and not mounted:
            break
        time.sleep(0.05)
    assert not left, f"loop devices still attached after SIGKILL: {left}"
    assert nr == before, f"vm.nr_hugepages is {nr}, was {before} before the killed reservation"
    assert not mounted, f"filesystems still mounted after SIGKILL: {mounted}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: vm.nr_hugepages")
def test_a_reservation_adds_its_pages_even_when_others_are_free():
    """Free pages may be another run's reservation: counting them would starve this run."""
    before = int((hugepages.POOL / "nr_hugepages").read_text())
    first = hugepages.Reservation(4)
    try:
        second = hugepages.Reservation(4)
        try:
            assert (first.added, second.added) == (4, 4)
            assert int((hugepages.POOL / "nr_hugepages").read_text()) == before + 8
        finally:
            second.release()
    finally:
        first.release()
    assert int((hugepages.POOL / "nr_hugepages").read_text()) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: vm.nr_hugepages")
def test_a_signalled_guardian_still_gives_the_pages_back():
    """SIGTERM to every process (pkill -f, systemd) must not kill the guardian before its
    run: it would leave vm.nr_hugepages raised (seen when a CI run was stopped so)."""
    before = int((hugepages.POOL / "nr_hugepages").read_text())
    r = hugepages.Reservation(2)
    assert r.added == 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(r._guard.pid, sig)
    time.sleep(0.2)
    assert r._guard.poll() is None, "the guardian died of a signal with the pages added"
    r.release()
    assert int((hugepages.POOL / "nr_hugepages").read_text()) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: vm.nr_hugepages")
def test_a_page_in_use_when_a_reservation_ends_is_not_left_in_the_pool():
    """A reservation that ends while one of its pages is still in use (another run's, or a
    slow worker's) makes that page surplus; the pool's nr_hugepages counts surplus pages, so a
    reservation that begins then must add to the persistent count, not to that sum, or the
    page stays in the pool after everyone is done (seen after two concurrent runs)."""
    pool = hugepages.POOL / "nr_hugepages"
    before = int(pool.read_text())
    first = hugepages.Reservation(2)
    fd = os.memfd_create("pinhole-held", os.MFD_HUGETLB | os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 2 << 20)
        with mmap.mmap(fd, 2 << 20) as held:
            held[0] = 1  # the file holds one page now
        first.release()  # ... while its reservation ends: the page is surplus
        second = hugepages.Reservation(2)
        os.close(fd)  # the page is free again
        fd = -1
        second.release()
    finally:
        if fd >= 0:
            os.close(fd)
        first.release()
    assert int(pool.read_text()) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: vm.nr_hugepages")
def test_a_guardian_whose_run_died_before_hearing_back_gives_the_pages_back():
    """A run killed while its guardian starts (a worker taking a control's pages as the run
    is SIGKILLed) never reads the count the guardian prints: the print fails (EPIPE), and
    the guardian must still give its pages back."""
    before = int((hugepages.POOL / "nr_hugepages").read_text())
    guard = subprocess.Popen([sys.executable, "-m", "conformance.hugepages", "2"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, cwd=Path(hugepages.__file__).parent.parent)
    guard.stdout.close()  # the run is gone before the guardian prints
    guard.stdin.close()
    guard.wait(10)
    assert int((hugepages.POOL / "nr_hugepages").read_text()) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: vm.nr_hugepages")
def test_a_hugetlb_trial_waits_for_the_reservation_its_controller_holds_the_pool_for():
    """xdist's workers start before their controller reserves pages (plugin.Controller), so
    a hugetlb trial could begin before them. The pool's trial lock, taken before the workers
    start and handed to the guardian, keeps it waiting until the pages are there."""
    pool = hugepages.POOL / "nr_hugepages"
    before = int(pool.read_text())
    held = hugepages.hold_pool()
    seen: list[int] = []

    def trial() -> None:
        with hugepages.PoolWatch(True):
            seen.append(int(pool.read_text()))

    t = threading.Thread(target=trial)
    t.start()
    time.sleep(0.3)
    assert not seen, "a hugetlb trial began while the controller held the pool"
    reservation = hugepages.Reservation(2, held)
    try:
        t.join(10)
        # At least: other runs (xdist workers running these tests) may add pages of their own.
        assert seen and seen[0] >= before + 2, "the trial began before the pages were added"
    finally:
        reservation.release()
