"""What runs inside a `pinhole matrix` VM: load the drivers this kernel has, note what the
guest can do, then run the cases.

Usage (by multikernel.py, in the guest): python -m conformance.guest OUT [pytest args]
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import results
from .backings import BACKINGS
from .kernelview.debuginfo import ENV as VMLINUX_ENV
from .pins import MECHANISMS

# What the backings and pin mechanisms need loaded, each with what shows it built in (a
# driver built in has no module, and no /sys/module/<name> unless it has parameters). Each
# may be built in, a module, or absent.
DEVICES = {name: shows for part in (*BACKINGS.values(), *MECHANISMS.values())
           for name, shows in part.modules.items()}
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_FILE = "guest.json"
# Sparse: only what the loop images and scratch files write takes the guest's memory.
SCRATCH_SIZE = 3 << 30
# Set in the guest only: test hooks that would harm a host (a panic) check it.
IN_GUEST = "PINHOLE_IN_GUEST"
# Test-only: the case id in whose run the guest's kernel is made to panic (sysrq c).
PANIC_IN = "PINHOLE_TEST_PANIC_IN"


def load_modules() -> dict[str, str]:
    modprobe = shutil.which("modprobe", path=GUEST_PATH) or "modprobe"
    loaded = {}
    for module in DEVICES:
        if os.path.exists(f"/sys/module/{module}") or glob.glob(DEVICES[module]):
            loaded[module] = "present"
            continue
        run = subprocess.run([modprobe, module], capture_output=True, text=True)
        loaded[module] = "ok" if run.returncode == 0 else run.stderr.strip() or "failed"
    # A built-in rxe makes no device until a link is added; adding one is the only test.
    if loaded["rdma_rxe"] not in ("ok", "present") and _add_rxe_link():
        loaded["rdma_rxe"] = "built in"
    deadline = time.monotonic() + 5
    while loaded["nd_pmem"] == "ok" and not glob.glob("/dev/pmem*") and time.monotonic() < deadline:
        time.sleep(0.1)  # the pmem namespaces appear asynchronously
    return loaded


def _add_rxe_link() -> bool:
    from .pins.rdma import LINK

    rdma = shutil.which("rdma", path=GUEST_PATH)
    add = [rdma or "rdma", "link", "add", LINK, "type", "rxe", "netdev", "lo"]
    return rdma is not None and subprocess.run(add, capture_output=True).returncode == 0


def writable_tmpfs() -> str:
    """A writable tmpfs: the guest sees the host's root read-only."""
    with open("/proc/self/mounts") as f:
        tmpfs = [line.split()[1] for line in f if line.split()[2:3] == ["tmpfs"]]
    for candidate in ("/tmp", "/run", "/dev/shm"):
        if candidate in tmpfs and os.access(candidate, os.W_OK):
            return candidate
    return "/tmp"


@contextlib.contextmanager
def scratch() -> Iterator[tuple[str, str]]:
    """Where loop images and O_DIRECT files go, and how it was made: an ext4 on a loop device
    over a sparse file in a tmpfs, since tmpfs has no O_DIRECT before 6.6. Falls back to the
    tmpfs itself when that cannot be made. Unmounted and removed at the end."""
    base = writable_tmpfs()
    image, mnt = f"{base}/pinhole-scratch.img", f"{base}/pinhole-scratch"
    tool = functools.partial(shutil.which, path=GUEST_PATH)
    try:
        with open(image, "wb") as f:
            f.truncate(SCRATCH_SIZE)
        os.makedirs(mnt, exist_ok=True)
        for cmd in ([tool("mkfs.ext4") or "mkfs.ext4", "-q", "-F", "-O", "^has_journal", image],
                    [tool("mount") or "mount", "-o", "loop", image, mnt]):
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                raise OSError(f"{' '.join(cmd[:1])}: {run.stderr.strip() or run.returncode}")
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(image)
        yield base, f"tmpfs {base} (no ext4 scratch: {e})"
        return
    try:
        yield mnt, f"ext4 on a loop device over {image}"
    finally:
        subprocess.run([tool("umount") or "umount", mnt], capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(image)


def mount_of(path: Path, mounts: str | None = None) -> tuple[str, list[str]] | None:
    """The filesystem type and options of the mount that holds path (the longest mount point
    that is a prefix of it), from /proc/self/mounts."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[int, str, list[str]] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fields[2], fields[3].split(","))
    return None if best is None else (best[1], best[2])


# 9p cache modes as /proc/mounts shows them: cache=<mode or hex flags> (6.6 on), or the bare
# mode name (before 6.6). none (0, not shown) is virtme-ng's: no guest page cache for data.
CACHE_MODES_9P = ("loose", "fscache", "mmap", "readahead", "writeback")


def progress_needs_sync(out: Path, mounts: str | None = None) -> tuple[bool, str]:
    """Whether progress.jsonl must be fsynced after every line to survive a panic of this
    kernel, and why. Not on an uncached 9p mount (virtme-ng's --rwdir): there every write(2)
    is a Twrite that reaches the host's file before it returns, so a guest panic cannot lose
    it, and an fsync only adds a 9p round trip and a flush of the host's disk, twice a case
    (benchmarks/tcg.py measures it). Anywhere else, or with any cache mode, it must."""
    found = mount_of(out, mounts)
    if found is None:
        return True, "the output directory's mount is unknown"
    fstype, options = found
    if fstype != "9p":
        return True, f"the output directory is on {fstype}"
    for opt in options:
        name, _, value = opt.partition("=")
        if (name == "cache" and value not in ("none", "0")) or name in CACHE_MODES_9P:
            return True, f"the output directory is on 9p with {opt}"
    return False, "the output directory is on uncached 9p: each write reaches the host"


def _uptime() -> float | None:
    try:
        return round(float(Path("/proc/uptime").read_text().split()[0]), 2)
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str]) -> int:
    out, pytest_args = Path(argv[0]), argv[1:]
    # progress.jsonl must survive a panic of this kernel; the caller may force fsync either way.
    forced = os.environ.get(results.SYNC_ENV)
    if forced is None:
        sync, why = progress_needs_sync(out)
    else:
        sync, why = forced not in ("", "0"), f"{results.SYNC_ENV}={forced}"
    if sync:
        os.environ[results.SYNC_ENV] = "1"
    else:
        os.environ.pop(results.SYNC_ENV, None)
    os.environ[IN_GUEST] = "1"
    # Where the guest's time goes before pytest (benchmarks/tcg.py reads it): seconds since
    # boot when this interpreter was ready, loading drivers, making the scratch filesystem.
    seconds = {"uptime_at_main": _uptime()}
    start = time.monotonic()
    modules = load_modules()
    seconds["modules"] = round(time.monotonic() - start, 2)
    start = time.monotonic()
    with scratch() as (where, how):
        seconds["scratch"] = round(time.monotonic() - start, 2)
        os.environ["PINHOLE_SCRATCH"] = where
        # Written first: its presence tells the host the guest came up, should the kernel die.
        guest = {"modules": modules, "scratch": how, "progress_fsync": sync,
                 "progress_fsync_why": why, "seconds": seconds,
                 "vmlinux": os.environ.get(VMLINUX_ENV)}  # for the kernel view, if known
        (out / GUEST_FILE).write_text(json.dumps(guest, indent=1) + "\n")
        import pytest

        root = Path(__file__).resolve().parent.parent
        # --assert=plain: the cases need no assertion rewriting, and importing it is seconds
        # under TCG.
        return pytest.main([str(root / "cases"), "-p", "no:cacheprovider", "-q", "--assert=plain",
                            f"--pinhole-out={out}", *pytest_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
