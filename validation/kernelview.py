"""The kernel view (check `kernel-view`, issue 13) against user space, on real kernels in VMs.

    python validation/kernelview.py [--only base,01,05] [--source debian-src:6.12]
                                    [--kernel debian:6.12] [--timeout S]

For each kernel (the pinhole build of --source, its mutants 01 and 05, and any --kernel, e.g.
a Debian kernel whose -dbg package has been fetched): boot it, and in the guest run each
selected cell as one trial (prepare, pin, mutate once), then the kernel view, then the
user-space checks `zeropage` and `file-to-pin` on the same trial. The kernel view must name
the pinned zeropage on mutant 01 and orphaned folios on mutant 05 (its positive controls), and
agree with user space on the stock kernels wherever both ran. Writes the `kernel_view` block
of validation/results.json: per kernel the outcomes, the agreement rate, the disagreements,
the seconds drgn took to load and per case.

The check runs as pinhole wires it (conformance/checks.py: right after the mutation, a
look-only check); this driver only times each call.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "validation" / "results.json"
MUTANTS = ROOT / "validation" / "mutants"
CHECKS = ("kernel-view", "zeropage", "file-to-pin")
# The cells each kernel runs: (pin, backing, mapping, access, state, mutation), each a list.
# Stock kernels: every pin the kernel view reads, over shmem and a page-cache filesystem,
# both mappings, the hole and written states, and mutations that keep, replace, evict or
# detach the folio. The mutants: their own cells (the patch's Select line).
STOCK = [
    (["io_uring", "udmabuf", "gup_test", "rdma", "vmsplice"], ["memfd", "tmpfs", "ext4"],
     ["shared", "private"], ["ro", "rw"], ["hole", "written"],
     ["none", "pwrite", "punch-hole", "truncate-down", "fadvise-dontneed"]),
    (["io_uring", "gup_test", "vmsplice"], ["hugetlbfs"], ["shared"], ["ro", "rw"], ["hole"],
     ["none", "punch-hole"]),
    # fsdax maps the shared zeropage for a hole (fs/dax.c dax_load_hole()) and vmsplice's
    # plain reference takes it: a positive control of `zeropage` on a stock kernel.
    (["vmsplice"], ["ext4-dax", "xfs-dax"], ["shared"], ["ro"], ["hole", "written"],
     ["none", "pwrite"]),
]
MUTANT_CELLS = {
    "01": [(["gup_test", "rdma", "vmsplice"], ["memfd", "tmpfs"], ["shared"], ["ro"],
            ["hole", "faulted-hole"], ["none", "pwrite"])],
    "05": [(["gup_test", "rdma", "vmsplice"], ["ext4", "xfs"], ["shared"], ["ro"],
            ["hole", "written"], ["fadvise-dontneed", "drop-caches"])],
}
# What the kernel view must name on each mutant's cells, and where: its positive control.
CONTROLS = {"01": ("zeropage", {"mutation": "none"}),
            "05": ("orphan", {})}
# User-space outcomes and the kernel-view outcomes that say the same thing. A pin that follows
# the file holds the file's folio; a detached one holds a folio the file no longer has (or a
# private copy); a disconnected one holds anything but the file's folio.
AGREE = {
    "file-to-pin": {"coherent": {"same-folio"},
                    "detached": {"orphan", "other-folio", "private-copy"},
                    "disconnected": {"zeropage", "orphan", "other-folio", "private-copy"}},
    "zeropage": {"pinned": {"same-folio", "orphan", "other-folio", "private-copy"},
                 "disconnected": {"zeropage"}},
}


def expand(spec: list[tuple[list[str], ...]]) -> list[tuple[str, ...]]:
    """The cells of a selection, each pin with the access modes it has."""
    from conformance.pins import MECHANISMS

    return [cell for dims in spec for cell in itertools.product(*dims)
            if cell[3] in MECHANISMS[cell[0]].access]


# --- in the guest ---------------------------------------------------------------------------

def guest(out: Path, cells: list[tuple[str, ...]]) -> None:
    """Each cell as one trial with the kernel view wired in as the lead will wire it."""
    from conformance import checks, hugepages, kernelview, runner
    from conformance import guest as g
    from conformance.model import Case
    from conformance.worker import Worker

    timings: list[float] = []

    def timed(trial, base, effect):  # noqa: ANN001, ANN202 - the check signature
        start = time.monotonic()
        try:
            return kernelview.kernel_view(trial, base, effect)
        finally:
            timings.append(time.monotonic() - start)

    checks.CHECKS["kernel-view"] = timed  # the wired check (checks.kernel_view), timed
    modules = g.finish_modules(g.start_modules())
    available = kernelview.availability()
    records = []
    os.environ["PINHOLE_SCRATCH"] = g.writable_tmpfs()
    reservation = hugepages.Reservation(4)
    worker = Worker()
    try:
        for cell in cells:
            case = Case(*cell, "kernel-view")
            seen: dict = {}
            start = time.monotonic()
            try:
                runner.trial(case, list(CHECKS), worker, seen)
            except Exception as e:  # noqa: BLE001 - a part that cannot run here
                seen = dict.fromkeys(CHECKS, e)
            rec = {"cell": ".".join(cell), "seconds": round(time.monotonic() - start, 3)}
            for check, obs in seen.items():
                rec[check] = ({"error": f"{type(obs).__name__}: {obs}"}
                              if isinstance(obs, Exception) else
                              {"outcome": obs.outcome, "detail": obs.detail})
            records.append(rec)
            print(rec["cell"], {k: v.get("outcome", v.get("error", ""))[:120]
                                for k, v in rec.items() if isinstance(v, dict)}, flush=True)
    finally:
        worker.close()
        reservation.release()
    # The first call pays for importing drgn and indexing vmlinux (load_s); the rest is the
    # per-case cost.
    view_s = round(statistics.median(timings[1:]), 4) if len(timings) > 1 else None
    (out / "kernelview.json").write_text(json.dumps({
        "release": os.uname().release, "modules": modules,
        "availability": {"ok": available.ok, "reason": available.reason},
        "load_s": kernelview.load_seconds, "view_s": view_s, "records": records}, indent=1))


# --- on the host ----------------------------------------------------------------------------

def boot(kernel_spec: str, patches: list[Path], cells: list[tuple[str, ...]],
         timeout: float) -> dict:
    from conformance import debian, kbuild, kernelview, multikernel, vm

    t0 = time.monotonic()
    if kernel_spec.startswith(kbuild.PREFIX):
        kbuild.build(kernel_spec, patches)
        kernel = kbuild.resolve(kernel_spec, patches)
    else:
        kernel = debian.resolve(kernel_spec)
    build_s = round(time.monotonic() - t0, 1)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in kernelview.guest_env(kernel).items())
    with tempfile.TemporaryDirectory(prefix="kernelview-", dir="/tmp") as tmp:
        out = Path(tmp)
        os.chmod(out, 0o777)
        argv = [sys.executable, str(Path(__file__).resolve()), "--guest", str(out),
                *(".".join(c) for c in cells)]
        command = f"cd {shlex.quote(str(ROOT))} && PYTHONDONTWRITEBYTECODE=1 {env} " \
                  f"exec {shlex.join(argv)}"
        t1 = time.monotonic()
        res = vm.boot_and_run(kernel, command, timeout=timeout, rwdirs=[out],
                              append=multikernel.PMEM_APPEND, memory=multikernel.GUEST_MEMORY)
        doc = (json.loads((out / "kernelview.json").read_text())
               if (out / "kernelview.json").is_file() else
               {"records": [], "error": f"vm {res.outcome}: {res.stdout[-2000:]}"})
    doc.update(kernel=kernel_spec, patches=[p.name for p in patches], build_s=build_s,
               vm_s=round(time.monotonic() - t1, 1), vm=res.outcome)
    return doc


def agreement(records: list[dict]) -> dict:
    """Where both the kernel view and a user-space check gave an outcome: how often they
    say the same thing, and every cell where they do not."""
    both, agree, differ = 0, 0, []
    for rec in records:
        kv = rec.get("kernel-view", {}).get("outcome")
        if kv is None:
            continue
        for check, table in AGREE.items():
            if check == "zeropage" and not rec["cell"].endswith(".none"):
                continue  # the zeropage check looks at the page table, right only before a change
            us = rec.get(check, {}).get("outcome")
            if us not in table:
                continue
            both += 1
            if kv in table[us]:
                agree += 1
            else:
                differ.append({"cell": rec["cell"], "check": check, "user_space": us,
                               "kernel_view": kv, "detail": rec["kernel-view"]["detail"],
                               "user_space_detail": rec[check].get("detail", "")})
    return {"compared": both, "agreed": agree,
            "rate": round(agree / both, 4) if both else None, "disagreements": differ}


def control(name: str, records: list[dict]) -> dict:
    """Whether the kernel view named the mutant's hazard in the cells where it must."""
    want, where = CONTROLS[name]
    cells = [r for r in records
             if all(r["cell"].split(".")[5] == v for k, v in where.items() if k == "mutation")]
    named = [r["cell"] for r in cells if r.get("kernel-view", {}).get("outcome") == want]
    return {"wants": want, "cells": len(cells), "named": len(named), "killed": bool(named),
            "first": named[0] if named else None}


def summarize(doc: dict, name: str) -> dict:
    recs = doc["records"]
    outcomes: dict[str, int] = {}
    for r in recs:
        o = r.get("kernel-view", {}).get("outcome") or "error/skip"
        outcomes[o] = outcomes.get(o, 0) + 1
    row = {"kernel": doc["kernel"], "patches": doc["patches"], "release": doc.get("release"),
           "availability": doc.get("availability"), "vm": doc["vm"], "cells": len(recs),
           "kernel_view_outcomes": outcomes, "agreement": agreement(recs),
           "drgn_load_s": doc.get("load_s"), "kernel_view_s_median": doc.get("view_s"),
           "build_s": doc["build_s"], "vm_s": doc["vm_s"],
           "trial_s_median": statistics.median([r["seconds"] for r in recs]) if recs else None}
    if name in CONTROLS:
        row["control"] = control(name, recs)
    if doc.get("error"):
        row["error"] = doc["error"]
    return row


def save(rows: dict[str, dict], raw: dict[str, dict]) -> None:
    doc = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    block = doc.setdefault("kernel_view", {})
    block.setdefault("kernels", {}).update(rows)
    stock = [r["agreement"] for k, r in block["kernels"].items() if k not in CONTROLS]
    compared = sum(a["compared"] for a in stock)
    block["agreement_rate_stock"] = (round(sum(a["agreed"] for a in stock) / compared, 4)
                                     if compared else None)
    block["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    detail = ROOT / "validation" / "kernelview-records.json"
    old = json.loads(detail.read_text()) if detail.is_file() else {}
    old.update(raw)
    detail.write_text(json.dumps(old, indent=1) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--guest"]:
        guest(Path(argv[1]), [tuple(c.split(".")) for c in argv[2:]])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="base,01,05", help="base and mutant numbers")
    ap.add_argument("--source", default="debian-src:6.12")
    ap.add_argument("--kernel", action="append", default=[], help="e.g. debian:6.12")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--cells", help="comma-separated cells instead of each kernel's own; "
                    "the results are printed, not saved")
    args = ap.parse_args(argv)
    rows, raw = {}, {}
    runs = [(n, args.source, [] if n == "base" else sorted(MUTANTS.glob(f"{n}-*.patch")))
            for n in args.only.split(",") if n]
    runs += [(k, k, []) for k in args.kernel]
    for name, spec, patches in runs:
        cells = ([tuple(c.split(".")) for c in args.cells.split(",")] if args.cells
                 else expand(MUTANT_CELLS.get(name, STOCK)))
        print(f"kernelview: {name} ({spec}{' + ' + patches[0].name if patches else ''}): "
              f"{len(cells)} cells", flush=True)
        doc = boot(spec, patches, cells, args.timeout)
        rows[name], raw[name] = summarize(doc, name), doc
        print(json.dumps(rows[name], indent=1)[:3000], flush=True)
        if args.cells:
            print(json.dumps(doc["records"], indent=1))
        else:
            save({name: rows[name]}, {name: doc})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
