"""The pin interface: a mechanism pins a user range; the pin reads and writes the pinned pages
without going through the user mapping, so what it sees is what the device would see."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar

from ..model import Availability
from ..windows import Windows, sample, windows

if TYPE_CHECKING:
    from ..subject import Subject


def whole(done: int, wanted: int, what: str) -> None:
    """A short transfer (a signal, a fault part way) is the harness's error, never data for a
    verdict: compared as it is, it would read as a pin that lost data."""
    if done != wanted:
        raise OSError(errno.EIO, f"{what} moved {done} of {wanted} bytes")


class Pinned:
    """One live pin of a range."""

    length: int
    # Where the pinned pages are mapped for the zeropage check: the user mapping for pins
    # taken through it; for a file pinner, a mapping of the file whose folios it pins.
    view_addr: int
    # Taken through the user mapping, so the mapping maps the pinned page, MAP_PRIVATE
    # included; a file pinner's MAP_PRIVATE mapping may map a COW copy instead.
    through_mapping = True
    # A FOLL_PIN | FOLL_LONGTERM pin: in a COW mapping it holds an exclusive copy that later
    # stores through the mapping reach. Plain references and per-I/O pins are not.
    longterm = True

    @property
    def windows(self) -> Windows:
        return windows(self.length)

    def read(self) -> bytes:
        """What the pinned pages hold at the range's windows, read by the kernel or device,
        not by the CPU mapping."""
        return b"".join(self.read_at(o, n) for o, n in self.windows)

    def write(self, data: bytes) -> None:
        """Store the range's windows of `data` (whole-range bytes) into the pinned pages the
        way the device would (DMA, fixed-buffer read)."""
        for o, n in self.windows:
            self.write_at(o, data[o:o + n])

    def read_at(self, offset: int, length: int) -> bytes:
        """length bytes of the pinned pages from offset into the range."""
        raise NotImplementedError

    def write_at(self, offset: int, data: bytes) -> None:
        """data into the pinned pages from offset into the range."""
        raise NotImplementedError

    def sampled(self, whole_range: bytes) -> bytes:
        """A read of the whole range, cut to its windows (a pin that can only read it all)."""
        return sample(whole_range, self.length)

    def release(self) -> None:
        """Unpin; safe to call twice."""
        raise NotImplementedError


class Mechanism:
    """A pin mechanism, set up once per worker: io_uring, udmabuf, rdma, ..."""

    name: ClassVar[str]
    # Access modes it can pin with: 'ro' (FOLL_LONGTERM without FOLL_WRITE) and/or 'rw'.
    access: ClassVar[tuple[str, ...]]
    # Kernel modules a VM loads for it, each with what shows it is built in instead (a
    # driver built in has no module to load).
    modules: ClassVar[dict[str, str]] = {}
    # Whether data can be written through its pins (gup_test only reads them).
    writable: ClassVar[bool] = True
    # What spec entries may name instead of listing pins (conformance/expectations.py):
    # longterm (FOLL_LONGTERM), file-pinner (pins the file's folios, not a mapping), writable
    # (the flag above).
    traits: ClassVar[frozenset[str]] = frozenset()

    def availability(self) -> Availability:
        raise NotImplementedError

    def setup(self) -> None:
        """Per-worker preparation; nothing by default."""

    def pin(self, subject: Subject, access: str) -> Pinned:
        """Pin the subject's range (its mapping, or its file for file pinners); raises
        OSError with the kernel's errno on refusal."""
        raise NotImplementedError

    def close(self) -> None:
        """Undo setup()."""
