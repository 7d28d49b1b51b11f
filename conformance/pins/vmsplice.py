"""vmsplice(2) into a pipe: the pipe keeps references to the user pages until it is read.

Not a FOLL_LONGTERM pin: GUP without FOLL_PIN, so nothing is unshared and fsdax is not
refused, which makes it the way to see what happens to an unpinned long-lived reference to
a hole page. Read-only: the pages are observed by tee()ing the pipe into a second pipe and
reading that, so the references stay in place.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..model import Availability
from ..syscalls import tee, vmsplice
from .base import Mechanism, Pinned, whole

PIPE_MAX = Path("/proc/sys/fs/pipe-max-size")


def pipe_size() -> int:
    """The largest pipe anyone may make (raising it needs CAP_SYS_RESOURCE)."""
    try:
        return int(PIPE_MAX.read_text())
    except (OSError, ValueError):
        return 1 << 16


def pipe_of(size: int) -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
    return r, w


class SplicedPages(Pinned):
    """The range spliced into as many pipes as fs.pipe-max-size needs (a 2 MiB huge page
    takes two with the default 1 MiB)."""

    longterm = False
    def __init__(self, addr: int, length: int) -> None:
        self.length, self.chunk = length, min(length, pipe_size())
        self.view_addr = addr
        self.pipes: list[tuple[int, int]] = []
        try:
            for start in range(0, length, self.chunk):
                r, w = pipe_of(self.chunk)
                self.pipes.append((r, w))
                done = 0
                while done < self.chunk:
                    done += vmsplice(w, addr + start + done, self.chunk - done)
        except OSError:
            self.release()
            raise

    def read(self) -> bytes:
        """A pipe is read from its start: all of it, cut to the range's windows."""
        return self.sampled(b"".join(self._peek(r) for r, _ in self.pipes))

    def _peek(self, source: int) -> bytes:
        """What one pipe holds, through tee() into a scratch pipe: the references stay."""
        r, w = pipe_of(self.chunk)
        try:
            copied = tee(source, w, self.chunk)
            whole(copied, self.chunk, "tee() of the pipe")
            data = b""
            while len(data) < copied:
                data += os.read(r, copied - len(data))
            return data
        finally:
            os.close(r)
            os.close(w)

    def write(self, data: bytes) -> None:
        raise NotImplementedError("pages spliced into a pipe are read-only to the reader")

    def release(self) -> None:
        for r, w in self.pipes:
            os.close(r)
            os.close(w)
        self.pipes = []


class Vmsplice(Mechanism):
    name = "vmsplice"
    access = ("ro",)
    writable = False

    def availability(self) -> Availability:
        return Availability.yes("vmsplice(2) and tee(2) are always there")

    def pin(self, subject, access: str) -> Pinned:
        return SplicedPages(subject.addr, subject.length)


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (Vmsplice,)
