"""Where a pinned range is looked at: all of it, or for a huge page three 4 KiB windows.

A 2 MiB hugetlb page is one folio: a pin holds all of it or none of it, so a pin on another
folio, or on another part of this one, differs at every window; the windows sit at different
offsets, so reads and writes through the pin exercise the mechanism's offset arithmetic inside
the folio (io_uring's coalesced buffers, rxe's page list), which one transfer from offset 0
did not. Moving the whole page through rxe was most of a hugetlb case under TCG.
"""

from __future__ import annotations

# Ranges up to this size are compared whole; only huge pages are sampled.
WHOLE_UP_TO = 64 << 10
WINDOW = 4096

Windows = tuple[tuple[int, int], ...]


def windows(length: int) -> Windows:
    """(offset, length) spans of a range of `length` bytes that the checks read and the
    pins write: the whole range, or a huge page's first, middle and last 4 KiB."""
    if length <= WHOLE_UP_TO:
        return ((0, length),)
    return ((0, WINDOW), (length // 2, WINDOW), (length - WINDOW, WINDOW))


def sample(data: bytes, length: int) -> bytes:
    """The bytes of `data`, the contents of a whole range of `length` bytes, at its windows:
    what a view of that range returns where it holds `data`."""
    spans = windows(length)
    if len(spans) == 1:
        return data
    return b"".join(data[o:o + n] for o, n in spans)
