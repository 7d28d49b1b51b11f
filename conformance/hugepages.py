"""Reserving 2 MiB hugepages for a run, and giving them back even if the run is killed.

The reservation is made by a guardian process in its own session. It raises
vm.nr_hugepages, then waits for its stdin to close: when the run ends normally or dies, it
lowers the count by what it added. It ignores SIGTERM, SIGINT and SIGHUP, which would kill it
with the pages added; its run's end (even by SIGKILL) still closes its stdin.
Read-modify-write of the sysctl happens under flock so parallel runs do not lose each
other's changes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

SIZE_KB = 2048
POOL = Path(f"/sys/kernel/mm/hugepages/hugepages-{SIZE_KB}kB")


MISSING = ("needs free 2 MiB hugepages: run as root so pinhole reserves them, "
           "or sysctl vm.nr_hugepages=16")


def free() -> int:
    try:
        return int((POOL / "free_hugepages").read_text())
    except OSError:
        return 0


def accounting_problem() -> str | None:
    """What the 2 MiB pool's counters say that a correct kernel never does, or None. A
    reservation count above the pool's size (persistent and surplus pages) is one that went
    below zero: mm/hugetlb.c's resv_huge_pages is unsigned, and only a VM_BUG_ON guards it
    (alloc_hugetlb_folio_reserve(); /proc/meminfo's HugePages_Rsvd shows the same count)."""
    try:
        resv, total, surplus = (_count(POOL / name) for name in
                                ("resv_hugepages", "nr_hugepages", "surplus_hugepages"))
    except OSError:
        return None
    if resv <= total + surplus:
        return None
    wrapped = f" ({resv - 2**64}: it went below zero)" if resv >= 2**63 else ""
    return (f"hugetlb accounting: {POOL.name}/resv_hugepages is {resv}{wrapped}, more than "
            f"the pool's {total + surplus} pages")


def _count(path: Path) -> int:
    """A counter of the pool, read again through a descriptor kept open: at every hugetlb
    trial, opening three files by path cost 20 times the reads (1.4 s of a TCG guest's run)."""
    return int(os.pread(_opened(path), 32, 0))


@functools.cache
def _opened(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


class PoolWatch:
    """For the whole of a trial on a hugetlb backing, from the file's first page to its
    removal. The pool's counters are the machine's, and another worker's or run's hugetlb
    trial may show them wrong at any step: at its pin, or while it tears down a pin that broke
    them (seen on Debian 6.12 with two workers: a udmabuf cell's -1 read by an io_uring
    cell's check). So watched trials hold an flock on resv_hugepages and run one at a time,
    and check() right after the pin blames a wrong count on it only if the count was right
    when the trial began; one wrong already (left by something else) is blamed on none."""

    def __init__(self, active: bool) -> None:
        self.active, self.before, self._fd = active, None, -1

    def __enter__(self) -> PoolWatch:
        if self.active:
            try:
                self._fd = os.open(POOL / "resv_hugepages", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return self  # no pool: nothing to watch
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self.before = accounting_problem()
        return self

    def check(self) -> str | None:
        """What the counters show now that a correct kernel never does, if this trial did it."""
        return accounting_problem() if self._fd >= 0 and self.before is None else None

    def __exit__(self, *_: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # and with it the flock
            self._fd = -1


def _persistent() -> int:
    """The pool's persistent pages: what a write to nr_hugepages sets. Reading nr_hugepages
    gives them plus the surplus ones (mm/hugetlb.c nr_hugepages_show_common() shows
    h->nr_huge_pages), which a lowered count leaves in use until they are freed; read until
    no surplus page was freed in between."""
    while True:
        surplus = _count(POOL / "surplus_hugepages")
        total = _count(POOL / "nr_hugepages")
        if _count(POOL / "surplus_hugepages") == surplus:
            return total - surplus


def _adjust(delta: int) -> int:
    """Change the persistent pages by delta under a lock; returns how much they changed.
    Added to nr_hugepages as read, the delta would make a lowered reservation's pages that are
    still in use persistent again, and leave them in the pool for good."""
    with open(POOL / "nr_hugepages", "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        before = _persistent()
        f.write(str(max(0, before + delta)))
        f.flush()
        return _persistent() - before


def availability_reason() -> str | None:
    """None when hugetlb cases can run: pages are free or pinhole may reserve them."""
    if not POOL.exists():
        return "kernel lacks 2 MiB hugetlb pages (CONFIG_HUGETLBFS)"
    if free() >= 2 or os.geteuid() == 0:
        return None
    return MISSING


class Reservation:
    """`wanted` more hugepages in the pool for as long as this object lives.

    Always added, never `wanted - free()`: free pages may be another run's reservation, which
    that run uses and later takes back, so counting them starves this run (false ENOSPC).
    """

    def __init__(self, wanted: int, held: int | None = None) -> None:
        """held: a descriptor of the pool's trial lock (hold_pool()), taken over: it is
        released once the pages are added, so no hugetlb trial begins before them, and the
        caller need not wait for them itself (the guardian's Python start was 2.4 s of a TCG
        guest's). Without it, this returns once they are."""
        self._added: int | None = 0
        self._guard: subprocess.Popen[bytes] | None = None
        try:
            if wanted <= 0 or os.geteuid() != 0 or not POOL.exists():
                return
            # -S: the guardian needs the standard library only, and site's .pth files cost a
            # second of a TCG guest's start (a run starts one, and each huge-page control).
            self._guard = subprocess.Popen(
                [sys.executable, "-S", "-m", "conformance.hugepages", str(wanted),
                 str(-1 if held is None else held)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
                pass_fds=() if held is None else (held,),
            )
        finally:
            if held is not None:
                os.close(held)  # the guardian's copy holds the lock now, if there is one
        self._added = None
        if held is None:
            self._added = self._read_added()

    @property
    def added(self) -> int:
        """How many pages the guardian added, once it has."""
        if self._added is None:
            self._added = self._read_added()
        return self._added

    def _read_added(self) -> int:
        assert self._guard is not None and self._guard.stdout is not None
        return int(self._guard.stdout.readline() or 0)

    def release(self) -> None:
        if self._guard is not None:
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard.wait()
            self._guard = None


def hold_pool() -> int | None:
    """The pool's trial lock (PoolWatch's), taken for a reservation to come: a controller
    takes it before xdist starts its workers, and Reservation(held=) lets it go once the
    pages are there. None where there is no pool to watch."""
    try:
        fd = os.open(POOL / "resv_hugepages", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _guard(missing: int, held: int) -> None:
    # Only the end of the run ends the guardian: `pkill -f`, a session's SIGHUP or systemd's
    # SIGTERM to every process would otherwise kill it with the pages still added.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    added = _adjust(missing)
    try:  # from here on, whatever happens, the pages go back
        if held >= 0:
            os.close(held)  # the pool's trial lock: hugetlb trials may begin
        print(added, flush=True)
        sys.stdin.buffer.read()  # returns at EOF: the run ended or was killed
    except OSError:
        pass  # EPIPE: the run died before it read the count; EBADF: no lock came
    finally:
        if added:
            _adjust(-added)


if __name__ == "__main__":
    _guard(int(sys.argv[1]), int(sys.argv[2]))
