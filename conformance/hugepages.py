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
        resv, total, surplus = (int((POOL / name).read_text()) for name in
                                ("resv_hugepages", "nr_hugepages", "surplus_hugepages"))
    except OSError:
        return None
    if resv <= total + surplus:
        return None
    wrapped = f" ({resv - 2**64}: it went below zero)" if resv >= 2**63 else ""
    return (f"hugetlb accounting: {POOL.name}/resv_hugepages is {resv}{wrapped}, more than "
            f"the pool's {total + surplus} pages")


def _adjust(delta: int) -> int:
    """Change nr_hugepages by delta under a lock; returns how much it really changed."""
    with open(POOL / "nr_hugepages", "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        before = int(f.read())
        f.seek(0)
        f.write(str(max(0, before + delta)))
        f.flush()
        f.seek(0)
        return int(f.read()) - before


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

    def __init__(self, wanted: int) -> None:
        self.added = 0
        self._guard: subprocess.Popen[bytes] | None = None
        if wanted <= 0 or os.geteuid() != 0 or not POOL.exists():
            return
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "conformance.hugepages", str(wanted)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._guard.stdout is not None
        self.added = int(self._guard.stdout.readline() or 0)

    def release(self) -> None:
        if self._guard is not None:
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard.wait()
            self._guard = None


def _guard(missing: int) -> None:
    # Only the end of the run ends the guardian: `pkill -f`, a session's SIGHUP or systemd's
    # SIGTERM to every process would otherwise kill it with the pages still added.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    added = _adjust(missing)
    print(added, flush=True)
    sys.stdin.buffer.read()  # returns at EOF: the run ended or was killed
    if added:
        _adjust(-added)


if __name__ == "__main__":
    _guard(int(sys.argv[1]))
