"""The cgroup v2 that the run's pages are charged to, which cgroup-reclaim asks for memory back.

On a host pinhole uses the cgroup it was started in and creates nothing. In a `pinhole
matrix` VM, which pinhole owns, the guest's process moves into a cgroup of its own first
(`enter_own()`), so reclaim scans the run's pages, not every page the guest has cached, and
each xdist worker there into one of its own beside it (`enter_worker()`), so one worker's
reclaim does not take the other's pages.
"""

from __future__ import annotations

import os
from pathlib import Path

# The guest's cgroup, under the cgroup2 mount.
GUEST_GROUP = "pinhole"


def mounts() -> list[str]:
    """Where cgroup2 is mounted."""
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2:3] == ["cgroup2"]]


def memory_reclaim() -> Path | None:
    """memory.reclaim of the cgroup v2 this process runs in (which charged the case's
    pages), or None where memory is not on cgroup v2."""
    with open("/proc/self/cgroup") as f:
        groups = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")]
    for root in mounts():
        for group in groups:
            knob = Path(root + group) / "memory.reclaim"
            if knob.exists():
                return knob
    return None


def enter_own(root: Path = Path("/sys/fs/cgroup")) -> str:
    """Move this process (before it starts any thread) into ROOT/pinhole/main with the memory
    controller on, and say what was done or why not, for guest.json. Only for a VM's guest:
    reclaim asked of the guest's root cgroup scans every page the guest has cached (a hugetlb
    case's cgroup-reclaim took 950 ms under TCG there, 170-195 ms in a cgroup of its own).
    ROOT/pinhole holds no process itself, so that its workers' groups may have the memory
    controller too (cgroup v2's no-internal-process rule)."""
    if str(root) not in mounts():
        return f"stayed in its cgroup: no cgroup2 at {root}"
    try:
        if "memory" not in (root / "cgroup.controllers").read_text().split():
            return "stayed in its cgroup: no memory controller (CONFIG_MEMCG)"
        (root / "cgroup.subtree_control").write_text("+memory")
        own = root / GUEST_GROUP
        own.mkdir(exist_ok=True)
        (own / "cgroup.subtree_control").write_text("+memory")
        return _enter(own / "main")
    except OSError as e:
        return f"stayed in its cgroup: {e}"


def enter_worker(name: str, root: Path = Path("/sys/fs/cgroup")) -> str | None:
    """Move this xdist worker of a guest into ROOT/pinhole/NAME, beside the main process: in
    one cgroup, a worker's memory.reclaim unmapped the other worker's pinned file pages in
    the middle of its cell (its zeropage check then found no page in the mapping). None
    where the guest has no cgroup of its own (enter_own())."""
    own = root / GUEST_GROUP
    if not (own / "main").is_dir():
        return None
    try:
        return _enter(own / name)
    except OSError as e:
        return f"stayed in its cgroup: {e}"


def _enter(group: Path) -> str:
    group.mkdir(exist_ok=True)
    (group / "cgroup.procs").write_text(str(os.getpid()))
    return f"/{group.parent.name}/{group.name} (memory controller on)"
