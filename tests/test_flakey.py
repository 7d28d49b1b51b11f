"""The data-loss control's failing disk (conformance/flakey.py) leaves no device behind, closed
or killed. It needs device-mapper's flakey target, which this machine's host kernel lacks; run
it on a Debian kernel in a VM with
`pinhole matrix --kernel debian:6.12 --out DIR -k flakey tests/test_flakey.py`."""

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import flakey

ROOT = Path(__file__).resolve().parent.parent
AVAILABLE = flakey.availability()

pytestmark = pytest.mark.skipif(not AVAILABLE.ok, reason=AVAILABLE.reason)


def dm_names() -> list[str]:
    names = []
    for path in glob.glob("/sys/block/dm-*/dm/name"):
        with contextlib.suppress(OSError):  # EINVAL: on its way out
            names.append(Path(path).read_text().strip())
    return names


def gone(name: str, loop: str, limit: float = 10.0) -> bool:
    """Whether the kernel removed the dm device and detached the loop device under it (the
    last close queues both: dm's deferred remove, and loop's autoclear)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if name not in dm_names() and not Path(f"/sys/block/{Path(loop).name}/loop").exists():
            return True
        time.sleep(0.1)
    return False


def test_a_closed_device_is_removed() -> None:
    backing = flakey.FlakeyExt4()
    backing.setup()
    name, loop = backing.flakey.name, backing.loop.path
    backing.flakey.drop_writes()
    backing.close()
    assert gone(name, loop)


def test_a_killed_process_leaves_no_device() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; from conformance import flakey\n"
         "b = flakey.FlakeyExt4(); b.setup(); print(b.flakey.name, b.loop.path, flush=True)\n"
         "time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    name, loop = child.stdout.readline().split()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert gone(name, loop)


def stored(backing: flakey.FlakeyExt4, data: bytes) -> bytes:
    """Write data over file "f", then read the file back from the disk."""
    fd = backing.reopen("f", -1)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    backing.remount()
    fd = backing.reopen("f", -1)
    try:
        return os.pread(fd, len(data), 0)
    finally:
        os.close(fd)


def test_the_disk_stores_writes_until_it_drops_them() -> None:
    """What the control stands on: the same write reaches the disk before drop_writes(), and
    not after."""
    backing = flakey.FlakeyExt4()
    backing.setup()
    try:
        os.close(backing.create("f"))
        assert stored(backing, b"1" * 4096) == b"1" * 4096
        backing.flakey.drop_writes()
        assert stored(backing, b"2" * 4096) == b"1" * 4096
    finally:
        backing.close()
