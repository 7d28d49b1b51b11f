"""matrix.html of a full-size run in a real browser (Debian's chromium, headless): filtered to
failures, the failing rows are on the first screen, where unfiltered they sit far below."""

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from test_reports import full_size

from conformance.reports import html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREEN = (1280, 1000)
# .v-fail's background in matrix.html.
RED = (0xEF, 0x53, 0x50)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium")


def chromium(page: Path, fragment: str, tmp: Path, *how: str) -> str:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
                           f"--window-size={SCREEN[0]},{SCREEN[1]}", *how,
                           page.as_uri() + fragment],
                          check=True, capture_output=True, text=True, timeout=180).stdout


def screenshot(page: Path, fragment: str, tmp: Path) -> bytes:
    shot = tmp / f"shot{fragment.replace('#', '-')}.png"
    chromium(page, fragment, tmp, f"--screenshot={shot}")
    return shot.read_bytes()


def rows_of(png: bytes) -> tuple[int, list[bytes]]:
    """An 8-bit RGB or RGBA PNG (what chromium writes) as its channel count and its rows."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", b""
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        body = png[at + 8:at + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and not interlace
    n = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * n + 1
    rows, above = [], bytearray(width * n)
    for y in range(height):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        for i in range(len(line)):  # PNG's filters: none, sub, up, average, Paeth
            a = line[i - n] if i >= n else 0
            b, c = above[i], above[i - n] if i >= n else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        above = line
    return n, rows


def red_bands(png: bytes) -> int:
    """How many separate horizontal bands of failing-red the screen shows: each failing row of
    the matrix is one (the grey borders part them), the legend and the filter one or two."""
    n, rows = rows_of(png)
    red = [any(all(abs(row[x + k] - RED[k]) <= 8 for k in range(3))
               for x in range(0, len(row), n)) for row in rows]
    return sum(1 for y, r in enumerate(red) if r and (y == 0 or not red[y - 1]))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("browser")
    path = tmp / "matrix.html"
    path.write_text(html.render([full_size()]))
    return path, tmp


def test_filtered_to_failures_the_failing_rows_are_on_the_first_screen(page):
    path, tmp = page
    assert red_bands(screenshot(path, "#failures", tmp)) >= 10


def test_unfiltered_they_are_below_it(page):
    path, tmp = page
    # Only the legend's and the filter's swatches: io_uring's failing rows are screens down.
    assert red_bands(screenshot(path, "", tmp)) <= 3


def test_filtered_to_failures_pins_without_any_are_gone_whole(page):
    path, tmp = page
    dom = chromium(path, "#failures", tmp, "--dump-dom")
    shown = re.findall(r'<section class="pin" data-pin="([\w-]+)">', dom)
    hidden = re.findall(r'<section class="pin" data-pin="([\w-]+)" hidden="">', dom)
    assert shown == ["io_uring", "vmsplice", "odirect"]
    assert hidden == ["udmabuf", "rdma", "gup_test", "control"]
    # Every row left has a failing cell; none of the others is left.
    rows = re.findall(r"<tr data-backing[^>]*>.*?</tr>", dom)
    assert rows and all(("v-fail" in r or "v-error" in r)
                        == ("hidden" not in r[:r.index(">")]) for r in rows)


def test_a_case_in_the_address_opens_its_checks(page):
    path, tmp = page
    case = "io_uring.ext4.shared.rw.written.truncate-down.file-to-pin"
    dom = chromium(path, f"#case={case}", tmp, "--dump-dom")
    panel = re.search(r'<div id="panel">(.*?)</div>', dom, re.S)
    assert panel, "the panel is open"
    assert f"<h3>{case}</h3>" in panel.group(1)
    assert "<dt>outcome</dt><dd>stale-cache</dd>" in panel.group(1)
