"""Recognisable data: every pattern names its tag, so a mismatch says whose data was seen."""

from __future__ import annotations

import re
from functools import lru_cache

TAG = re.compile(rb"<([a-z0-9-]+):[0-9a-f]{8}>")


@lru_cache(maxsize=64)  # a handful of tags and two page sizes: build each pattern once
def fill(tag: str, length: int) -> bytes:
    """length bytes of '<tag:offset>' records; different tags never compare equal."""
    out = bytearray()
    while len(out) < length:
        out += f"<{tag}:{len(out):08x}>".encode()
    return bytes(out[:length])


def describe(data: bytes) -> str:
    """'zeros', 'pattern "pin"', or a short note on mixed content."""
    if not data:
        return "nothing (past EOF)"
    if not data.strip(b"\0"):
        return "zeros"
    tags = sorted({m.decode() for m in TAG.findall(data)})
    if len(tags) == 1 and 0 not in data:
        return f'pattern "{tags[0]}"'
    zeros = data.count(0) * 100 // max(len(data), 1)
    return f"mixed data (tags {', '.join(tags) or 'none'}, {zeros}% zero bytes)"
