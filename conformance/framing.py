"""progress.jsonl's lines as they are written and read back.

Several processes append lines to one file; a line must reach the host's file whole. Every
write() is whole lines, at most one page, from a page-aligned buffer (Appender):
- over 9p, a Debian 6.12 guest (netfs) sends one O_APPEND write() as a 9p write per page of
  the caller's buffer, and another process's write lands between them: four guest processes
  appending lines of 1.3-3.9 KB broke 80 of 160 lines, 0 of 480 from a page-aligned buffer
  (2026-11-28; Debian 6.1, without netfs, 0 of 160 either way);
- through virtio ports, QEMU appended another port's line inside a 40 KB entry written in
  32 KiB pieces (port_fops_write() takes at most that a call) under a guest-wide lock, in 2
  runs of 12 of tests/test_ports.py.
A line longer than a page goes as "piece" lines, each whole, that entries() joins where the
last one lands.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
from collections.abc import Iterable, Iterator

# A page (9p's unit, above), and never more than a port takes a call (on 64 KiB pages).
MAX_WRITE = min(mmap.PAGESIZE, 32 * 1024)
PIECE = "piece"
# Of a long line, the bytes a piece carries: in base64, with its key and counts, within a page.
PIECE_BYTES = 3 * ((MAX_WRITE - 128) // 4)


class Appender:
    """Whole lines to fd (O_APPEND), a write() a page at most, from a page-aligned buffer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._page = mmap.mmap(-1, MAX_WRITE)  # mmap's memory starts a page

    def write(self, data: bytes) -> None:
        for chunk in writes(data):
            self._page[:len(chunk)] = chunk
            with memoryview(self._page) as page:
                view = page[:len(chunk)]
                while view:
                    view = view[os.write(self.fd, view):]

    def close(self) -> None:
        self._page.close()


def writes(data: bytes) -> Iterator[bytes]:
    """data (whole lines) as writes of at most MAX_WRITE bytes, each whole lines."""
    batch = b""
    for line in data.splitlines(keepends=True):
        for part in _pieces(line) if len(line) > MAX_WRITE else [line]:
            if batch and len(batch) + len(part) > MAX_WRITE:
                yield batch
                batch = b""
            batch += part
    if batch:
        yield batch


def _pieces(line: bytes) -> list[bytes]:
    """A long line as piece lines: [key, index, count, base64 of its bytes]."""
    key = os.urandom(6).hex()  # a piece's own: pids repeat from one boot to the next
    chunks = [line[i:i + PIECE_BYTES] for i in range(0, len(line), PIECE_BYTES)]
    return [json.dumps({PIECE: [key, n, len(chunks), base64.b64encode(c).decode()]}).encode()
            + b"\n" for n, c in enumerate(chunks)]


def entries(lines: Iterable[str]) -> Iterator[dict]:
    """The entries of progress.jsonl's lines, each long one where its last piece lands; a torn
    line or a line whose pieces never all came (a run that died mid-write) is left out."""
    pending: dict[str, list[bytes]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if PIECE not in entry:
            yield entry
            continue
        key, n, count, text = entry[PIECE]
        got = pending.setdefault(key, [])
        if n != len(got):
            del pending[key]
            continue
        got.append(base64.b64decode(text))
        if len(got) == count:
            try:
                yield json.loads(b"".join(pending.pop(key)))
            except ValueError:
                continue
