"""One small function per check. Each looks at a live pin and says what it saw."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import Skip
from .matrix import Case
from .pagemap import NEEDS_ROOT, PageMap
from .patterns import describe, fill
from .pins.base import Pinned
from .subject import Subject


@dataclass(frozen=True)
class Observation:
    outcome: str
    detail: str = ""
    errno: str | None = None


@dataclass
class Trial:
    case: Case
    subject: Subject
    pinned: Pinned
    pagemap: PageMap
    # The pin may legitimately stop following the file here (MAP_PRIVATE copies).
    detaching: bool


def admission(t: Trial) -> Observation:
    return Observation("pinned", f"pinned {t.subject.length} bytes")


def zeropage(t: Trial) -> Observation:
    if not t.pagemap.sees_pfns():
        raise Skip(NEEDS_ROOT)
    pages = t.pagemap.pages(t.subject.addr, t.subject.length)
    zero = [p for p in pages if p.zero_page]
    if zero:
        return Observation("disconnected", f"{len(zero)} of {len(pages)} pinned pages are the "
                           f"shared zeropage: {zero[0].describe()}")
    absent = [p for p in pages if not p.present]
    if absent:
        raise RuntimeError(f"cannot tell what is pinned: {absent[0].describe()}")
    return Observation("pinned", f"{len(pages)} pages, none the zeropage; {pages[0].describe()}")


def _pin_view(seen: bytes, new: bytes, old: bytes, detaching: bool, what: str) -> Observation:
    if seen == new:
        return Observation("coherent", f"the pin sees {what}")
    if seen == old:
        return Observation("detached" if detaching else "disconnected",
                           f"the pin still holds its old data ({describe(old)}), not {what}")
    return Observation("disconnected", f"the pin holds {describe(seen)}, neither its old data "
                       f"nor {what}")


def file_to_pin(t: Trial) -> Observation:
    """Data written to the file with write() after the pin must be what the pin sees."""
    old = t.pinned.read()
    new = fill("file", t.subject.length)
    t.subject.write_file(new)
    if t.subject.file_view() != new:
        seen = describe(t.subject.file_view())
        return Observation("lost-write", f"read() after write() returns {seen}")
    return _pin_view(t.pinned.read(), new, old, t.detaching, "what write() put in the file")


def pin_to_file(t: Trial) -> Observation:
    """Data written into the pinned pages must be what read() and the mapping see, and still
    be in the file after unpin, fsync, cache drop and remount (or, where the pin is a private
    copy, must never reach the file)."""
    s = t.subject
    before = s.file_view()
    data = fill("pin", s.length)
    t.pinned.write(data)
    if t.pinned.read() != data:
        return Observation("disconnected", "the pinned pages lose what was written into them")
    mapped, cached = s.mapping_view(), s.file_view()
    t.pinned.release()
    how = s.persist()
    stored = s.file_view()
    if mapped != data:
        return Observation("disconnected", f"the mapping shows {describe(mapped)}, not the data "
                           "written into its pinned page")
    if t.detaching:
        if data in (cached, stored):
            return Observation("resurrected", f"data written through the private pin reached the "
                               f"file ({'read()' if cached == data else 'after ' + how})")
        if before != cached or before != stored:
            return Observation("disconnected", f"the file changed to {describe(stored)}")
        return Observation("detached", f"the file kept {describe(before)} after {how}")
    if cached != data:
        return Observation("disconnected", f"read() returns {describe(cached)}, not the data "
                           "written into the pinned page")
    if stored != data:
        return Observation("lost-write", f"after unpin, {how} the file holds {describe(stored)}")
    return Observation("coherent", f"read(), the mapping and the file after {how} hold it")


CHECKS: dict[str, Callable[[Trial], Observation]] = {
    "admission": admission,
    "zeropage": zeropage,
    "file-to-pin": file_to_pin,
    "pin-to-file": pin_to_file,
}
