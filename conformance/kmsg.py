"""Kernel health around a case, as fstests and LTP check it: a log marker, the log lines
after it, and any new taint.

Cases run in parallel workers, so a splat whose "PID:"/"Comm:" line names another process
is not blamed on this worker's case.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

KMSG = "/dev/kmsg"
TAINTED = Path("/proc/sys/kernel/tainted")

# Messages that make a case fail unless the spec expects them (fstests' _check_dmesg list,
# plus the mm and direct-I/O messages this suite is about).
BAD = re.compile(
    r"kernel BUG at|WARNING:|BUG:|Oops|general protection fault|possible recursive locking"
    r"|possible circular locking|suspicious RCU usage|UBSAN:|Bad page|"
    r"Page cache invalidation failure"
)
PID_LINE = re.compile(r"\bPID: (\d+)\b")
KERNEL_FACILITY = 0

# kernel/panic.c taint_flags, in bit order.
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"


def decode_taint(value: int) -> str:
    """Taint bits as the kernel prints them: 'G' for none, otherwise the letters set."""
    letters = "".join(c for i, c in enumerate(TAINT_LETTERS) if value >> i & 1)
    return letters or "G"


def read_taint(fd: int | None) -> int:
    """/proc/sys/kernel/tainted through an fd kept open (it is read twice a cell); 0 when
    it could not be opened."""
    try:
        return int(os.pread(fd, 64, 0)) if fd is not None else 0
    except (OSError, ValueError):
        return 0


def parse_record(raw: bytes) -> tuple[int, str]:
    """A /dev/kmsg record 'prio,seq,usec,flags;text\\n KEY=val' → (facility, text).

    Facility 0 is the kernel's own: user space writing to /dev/kmsg always gets another
    (kernel/printk/printk.c devkmsg_write() forces LOG_USER), so journald's lines never count.
    """
    head, _, rest = raw.decode(errors="replace").partition(";")
    prio = int(head.split(",", 1)[0] or 0)
    return prio >> 3, rest.split("\n", 1)[0]


def findings(lines: list[str], own_pids: set[int]) -> list[str]:
    """The bad lines in a log slice, skipping splats that name a process other than ours."""
    bad: list[str] = []
    for i, line in enumerate(lines):
        if not BAD.search(line):
            continue
        window = lines[i:i + 6]
        pids = {int(m[1]) for w in window for m in [PID_LINE.search(w)] if m}
        if pids and not pids & own_pids:
            continue
        bad.append(line)
    return bad


@dataclass
class Slice:
    """What the kernel said and how its taint changed while a case ran."""

    lines: list[str]
    bad: list[str]
    taint_before: int
    taint_after: int

    @property
    def new_taint(self) -> str:
        added = self.taint_after & ~self.taint_before
        return decode_taint(added) if added else ""

    def then(self, later: Slice) -> Slice:
        """This slice and a later one as one: a case that ran in both."""
        return Slice(self.lines + later.lines, self.bad + later.bad, self.taint_before,
                     later.taint_after)

    def excerpt(self, limit: int = 16384) -> str:
        text = "\n".join(self.lines)
        return text[-limit:]


class Monitor:
    """Marks the kernel log at the start of a case and collects what follows."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(KMSG, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._fd = None  # not root: no marker, and no log to check
        try:
            self._tainted: int | None = os.open(TAINTED, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._tainted = None
        self._taint = 0
        self._notes: list[str] = []

    @property
    def available(self) -> bool:
        return self._fd is not None

    def begin(self, case_id: str) -> None:
        self._taint = read_taint(self._tainted)
        self._notes = []
        if self._fd is None:
            return
        os.lseek(self._fd, 0, os.SEEK_END)
        # At KERN_DEBUG: in dmesg for whoever reads it, kept off a (slow, serial) console.
        os.write(self._fd, f"<7>pinhole: begin {case_id}\n".encode())

    def end(self) -> Slice:
        body = []
        while self._fd is not None:
            try:
                facility, text = parse_record(os.read(self._fd, 8192))
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten by newer records: keep reading
                    continue
                break  # EAGAIN: nothing more
            if facility == KERNEL_FACILITY:
                body.append(text)
        notes = [f"pinhole: {n}" for n in self._notes]
        # This process's threads, listed only when there is a line to blame: most cells log
        # nothing, and listing /proc/self/task costs an open, reads and a close each time.
        own = {os.getpid(), *map(int, os.listdir("/proc/self/task"))} if body else set()
        bad = findings(body, own)
        return Slice(body + notes, bad + notes, self._taint, read_taint(self._tainted))

    def note(self, problem: str) -> None:
        """A problem pinhole saw in the kernel's own state while the case ran (its counters,
        not its log): judged like a bad line of the log."""
        self._notes.append(problem)

    def close(self) -> None:
        for fd in (self._fd, self._tainted):
            if fd is not None:
                os.close(fd)
        self._fd = self._tainted = None
