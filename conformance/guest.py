"""What runs inside a `pinhole matrix` VM: load the drivers this kernel has, note what the
guest can do, then run the cases.

Usage (by kernel_matrix.py, in the guest): python -m conformance.guest OUT [pytest args]
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import results

# loop for the block backings; nd_e820 + nd_pmem turn memmap= regions into /dev/pmemN;
# rdma_rxe and udmabuf for those pin mechanisms. Each may be built in, a module, or absent.
MODULES = ("loop", "nd_e820", "nd_pmem", "rdma_rxe", "udmabuf")
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_FILE = "guest.json"
# A driver built in (=y) has no module to load, and no /sys/module/<name> unless it has
# parameters: what it makes shows that it is there.
DEVICES = {"loop": "/dev/loop-control", "nd_e820": "/dev/pmem*", "nd_pmem": "/dev/pmem*",
           "rdma_rxe": "/sys/class/infiniband/*", "udmabuf": "/dev/udmabuf"}


def load_modules() -> dict[str, str]:
    modprobe = shutil.which("modprobe", path=GUEST_PATH) or "modprobe"
    loaded = {}
    for module in MODULES:
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


def scratch() -> str:
    """Loop images go to a writable tmpfs: the guest sees the host's root read-only."""
    with open("/proc/self/mounts") as f:
        tmpfs = [line.split()[1] for line in f if line.split()[2:3] == ["tmpfs"]]
    for candidate in ("/tmp", "/run", "/dev/shm"):
        if candidate in tmpfs and os.access(candidate, os.W_OK):
            return candidate
    return "/tmp"


def main(argv: list[str]) -> int:
    out, pytest_args = Path(argv[0]), argv[1:]
    os.environ["PINHOLE_SCRATCH"] = scratch()
    os.environ[results.SYNC_ENV] = "1"  # progress must survive a panic of this kernel
    modules = load_modules()
    # Written first: its presence tells the host the guest came up, should the kernel die.
    (out / GUEST_FILE).write_text(json.dumps({"modules": modules}, indent=1) + "\n")
    import pytest

    root = Path(__file__).resolve().parent.parent
    return pytest.main([str(root / "cases"), "-p", "no:cacheprovider", "-q",
                        f"--pinhole-out={out}", *pytest_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
