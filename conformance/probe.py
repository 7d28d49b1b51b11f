"""What this kernel and machine can test, with the reason for every "no"."""

from __future__ import annotations

import os
import resource
import shutil

from . import hugepages, running_kernel, uring
from .abi import IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED
from .availability import availability
from .backings import BACKINGS
from .pagemap import NEEDS_ROOT
from .pins import MECHANISMS

TOOLS = ("mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "vng", "qemu-system-x86_64", "rdma")


def _limit(value: int) -> str | int:
    return "unlimited" if value == resource.RLIM_INFINITY else value


def io_uring_state() -> dict[str, object]:
    ok, why = uring.availability()
    state: dict[str, object] = {"available": ok, "reason": why,
                                "io_uring_disabled": _read(uring.DISABLED_SYSCTL)}
    if ok:
        ring = uring.Ring(1)
        try:
            ops = ring.supported_ops()
        finally:
            ring.close()
        state["probe_ops"] = None if ops is None else len(ops)
        state["fixed_rw"] = ops is None or {IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED} <= ops
    return state


def _read(path: os.PathLike) -> str | None:
    try:
        return open(path).read().strip()
    except OSError:
        return None


def probe() -> dict[str, object]:
    k = running_kernel.running()
    cfg = running_kernel.config()
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    root = os.geteuid() == 0
    kpage = os.access("/proc/kpageflags", os.R_OK) and root

    def part(dimension: str, name: str) -> dict[str, object]:
        a = availability(dimension, name)
        return {"available": a.ok, "reason": a.reason}

    return {
        "kernel": {**k.as_dict(), "config": cfg.source or "not found (no /proc/config.gz or "
                   "/boot/config-RELEASE)"},
        "root": root,
        "io_uring": io_uring_state(),
        "memlock": {"soft": _limit(soft), "hard": _limit(hard),
                    "note": "not charged: CAP_IPC_LOCK" if root else
                    "registered buffers count against it: ulimit -l to raise"},
        "kpageflags": {"available": kpage, "reason": "readable" if kpage else NEEDS_ROOT},
        "hugepages": {"size_kb": hugepages.SIZE_KB, "free": hugepages.free(),
                      "reserve": "pinhole reserves what it needs for the run" if root else
                      hugepages.MISSING},
        "backings": {b: part("backing", b) for b in BACKINGS},
        "pins": {p: part("pin", p) for p in MECHANISMS},
        "tools": {t: shutil.which(t) for t in TOOLS},
    }


def render(p: dict) -> str:
    """The probe as a table a person reads."""
    k = p["kernel"]
    rows = [("kernel", f"{k['release']} {k['machine']}", k["version"]),
            ("kernel config", "", k["config"]),
            ("root", "yes" if p["root"] else "no", "" if p["root"] else "most backings need root"),
            ("io_uring", _yes(p["io_uring"]["available"]), p["io_uring"]["reason"]),
            ("memlock", f"{p['memlock']['soft']}", p["memlock"]["note"]),
            ("kpageflags", _yes(p["kpageflags"]["available"]), p["kpageflags"]["reason"]),
            ("hugepages", f"{p['hugepages']['free']} free", p["hugepages"]["reserve"])]
    rows += [(f"backing {n}", _yes(v["available"]), v["reason"]) for n, v in p["backings"].items()]
    rows += [(f"pin {n}", _yes(v["available"]), v["reason"]) for n, v in p["pins"].items()]
    rows += [(f"tool {n}", _yes(bool(v)), v or "not found") for n, v in p["tools"].items()]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"
