"""pinhole's speed and memory on this machine: writes benchmarks/results.json and a table.

    python benchmarks/run.py [--matrix debian:6.12 ...] [--jobs 1,2] [--rounds 3] [--out FILE]

- host: the full matrix with -n 1 and -n 2 (or --jobs), in rounds that alternate their
  order, each row the run of median wall time: wall time, cases per second, the speedup
  from 1 to 2 workers (the ratio of the medians, and each round's; and of pytest's session
  alone, without the command's start, record and reports around it), per-case median and
  p95, the harness's own cost (wall time not spent inside cells), peak memory of the run's
  process tree, and the size of what the run wrote;
- breakdown: where a cell's time goes (prepare, pin, mutation, each check, judging, the
  kernel-log monitor, closing), measured in-process over a sample of the cells this machine
  runs, with the share of each;
- anchor: benchmarks/anchor.c, the syscalls of the cell vmsplice.memfd.shared.ro.written.pwrite
  in a C loop, against pinhole's time a case on the vmsplice memfd cells in the -n 1 run;
- kernel_view: what the kernel view costs (benchmarks/kernelview.py's measure());
- with --matrix, per kernel: fetch, boot and run seconds of `pinhole matrix` on the CI
  selection (benchmarks/tcg.py takes the guest apart).
Targets (the issue's, for 2 cores): host matrix in 20 s or less with -n 2, at least 1.7x
from 1 to 2 workers, a case within 10x of the anchor, reports of a full run 10 MB or less,
a Debian kernel's CI selection under TCG in 90 s or less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import kernelview  # noqa: E402
from conformance import hugepages, results, runner  # noqa: E402
from conformance.availability import missing  # noqa: E402
from conformance.backings import BACKINGS  # noqa: E402
from conformance.checks import CHECKS  # noqa: E402
from conformance.dimensions import cells  # noqa: E402
from conformance.expectations import Spec  # noqa: E402
from conformance.kmsg import Monitor  # noqa: E402
from conformance.model import grouped  # noqa: E402
from conformance.pins import MECHANISMS  # noqa: E402
from conformance.subject import Subject  # noqa: E402
from conformance.worker import Worker  # noqa: E402

MATRIX_SELECTION = ["--state=hole,written",
                    "--mutation=none,pwrite,store,pin-write,punch-hole,truncate-down,"
                    "odirect-write,fork-write"]


def peak_rss(proc: psutil.Process, stop: threading.Event, peak: list[int]) -> None:
    """Sample the summed RSS of a process tree until stop is set."""
    while not stop.is_set():
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)


def setup_seconds() -> float:
    """What one worker spends making and mounting its filesystems, measured directly."""
    total = 0.0
    for cls in BACKINGS.values():
        backing = cls()
        if not backing.availability().ok:
            continue
        start = time.monotonic()
        backing.setup()
        total += time.monotonic() - start
        backing.close()
    return total


def warm_up() -> None:
    """An untimed small run after the cache drop, so that the first timed run (-n 1) does not
    read the interpreter, the modules and mkfs from disk alone. (It did not explain -n 1's
    slowness on 2026-11-27: 60.5 s without it, 63.2 s with it; see the README, "Timings".)"""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "conformance.cli", "run", f"--out={tmp}", "-q",
                        "--pin=vmsplice,io_uring", "--backing=memfd,ext4,xfs,btrfs"], cwd=ROOT,
                       stdout=subprocess.DEVNULL)


def host_run(jobs: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "conformance.cli", "run", f"--out={tmp}",
                                 "-n", jobs, "-q"], cwd=ROOT, stdout=subprocess.DEVNULL)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=peak_rss, args=(psutil.Process(proc.pid), stop, peak))
        sampler.start()
        proc.wait()
        wall = time.monotonic() - start
        stop.set()
        sampler.join()
        doc = results.load(Path(tmp) / results.FILE)
        sizes = {p.name: p.stat().st_size for p in Path(tmp).iterdir() if p.is_file()}
    ran = [c["duration_s"] for c in doc["cases"] if c["verdict"] != "skip"]
    like_anchor = [c["duration_s"] for c in doc["cases"]
                   if c["id"].startswith("vmsplice.memfd.") and c["verdict"] != "skip"]
    workers = os.cpu_count() if jobs == "auto" else max(int(jobs), 1)
    inside = sum(c["duration_s"] for c in doc["cases"])
    return {
        "jobs": jobs, "workers": workers, "wall_s": round(wall, 2), "cases": len(doc["cases"]),
        # pytest's session (workers' start and the cells) and what no worker shares: the
        # command's start, the record, the reports.
        "session_s": round(doc["finished"] - doc["started"], 2),
        "outside_session_s": round(wall - (doc["finished"] - doc["started"]), 2),
        "ran": len(ran), "cases_per_s": round(len(doc["cases"]) / wall, 1),
        "case_median_ms": round(statistics.median(ran) * 1000, 2),
        "case_p95_ms": round(sorted(ran)[int(0.95 * len(ran))] * 1000, 2),
        "harness_ms_per_case": round((wall * workers - inside) / len(doc["cases"]) * 1000, 2),
        "peak_rss_mib": round(peak[0] / 2**20, 1),
        "vmsplice_memfd_case_ms": round(statistics.median(like_anchor) * 1000, 3)
        if like_anchor else None,
        "output_mb": round(sum(sizes.values()) / 1e6, 2), "output": sizes,
    }


def matrix_run(spec: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "conformance.cli", "matrix", f"--kernel={spec}",
                        f"--out={tmp}", *MATRIX_SELECTION], cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        (doc,) = [results.load(p) for p in Path(tmp).glob(f"*/{results.FILE}")]
    env = doc["environment"]
    return {"kernel": spec, "release": env["release"], "accelerator": env["accelerator"],
            **{f"{k}_s": v for k, v in env["seconds"].items()}, "wall_s": round(wall, 1),
            "cases": len(doc["cases"])}


PHASES = {"prepare": (Subject, "prepare"), "close": (Subject, "close"),
          "mutate": (runner, "mutate"), "judge": (runner, "judge"),
          "kernel-log": (Monitor, "end"),
          # pin-to-file's remount, once a group
          "settle": (runner, "settle")}


def breakdown(every: int = 7) -> dict:
    """Where a cell's time goes: the cells of every `every`-th group this machine can run, in
    this process, each group's pin-to-file files remounted once at its end as in a run, with
    the runner's phases timed (the pin of each mechanism, each check by name, the remount)."""
    spent: dict[str, float] = {}

    by_mutation: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                took = time.perf_counter() - t
                spent[name] = spent.get(name, 0.0) + took
                if name == "mutate":  # mutate(trial, base): which mutation costs what
                    m = a[0].case.mutation
                    by_mutation[m] = by_mutation.get(m, 0.0) + took
        return wrapper

    saved = []
    targets = [*((owner, attr, name) for name, (owner, attr) in PHASES.items()),
               *((cls, "pin", "pin") for cls in MECHANISMS.values())]
    for owner, attr, name in targets:
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    checks = dict(CHECKS)
    CHECKS.update({k: timed(k, f) for k, f in checks.items()})
    groups = grouped([c for c in cells() if not missing(c.first.pin, c.first.backing)])[::every]
    runnable = [cell for group in groups for cell in group.cells]
    reservation = hugepages.Reservation(8)
    worker, spec, total = Worker(), Spec.load(), 0.0
    try:
        for group in groups:
            t = time.perf_counter()
            for cell in group.cells:
                runner.run_cell(cell, worker, spec)
            runner.settle(worker, spec)
            total += time.perf_counter() - t
    finally:
        worker.close()
        reservation.release()
        CHECKS.update(checks)
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
    spent["other"] = total - sum(spent.values())
    return {"cells": len(runnable), "cases": sum(len(c.cases) for c in runnable),
            "seconds": round(total, 3),
            "share_pct": {k: round(100 * v / total, 1)
                          for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
            "mutation_share_pct": {k: round(100 * v / total, 1) for k, v in
                                   sorted(by_mutation.items(), key=lambda kv: -kv[1])[:8]}}


def anchor(n: int = 3000) -> dict | None:
    """The C loop's time an iteration, built here with the system's cc."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "anchor"
        built = subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "benchmarks" / "anchor.c")],
                               capture_output=True)
        if built.returncode:
            return None
        ns = int(subprocess.run([str(exe), str(n)], capture_output=True, text=True,
                                check=True).stdout)
    return {"cell": "vmsplice.memfd.shared.ro.written.pwrite", "iterations": n,
            "ms_per_cell": round(ns / 1e6, 4)}


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']}",
             f"setup per worker (mkfs, loop, mount): {report['setup_per_worker_s']} s",
             "jobs  wall_s  cases  cases/s  setup%  median_ms  p95_ms  harness_ms  peak_MiB"]
    for r in report["host"]:
        lines.append(f"{r['jobs']:>4}  {r['wall_s']:>6}  {r['cases']:>5}  {r['cases_per_s']:>7}  "
                     f"{r['setup_share_pct']:>6}  {r['case_median_ms']:>9}  {r['case_p95_ms']:>6}  "
                     f"{r['harness_ms_per_case']:>10}  {r['peak_rss_mib']:>8}")
    if len(report["host"]) > 1:
        one, two = report["host"][:2]
        rounds = ", ".join(f"{a / b:.2f}x" for a, b in zip(one["walls_s"], two["walls_s"],
                                                             strict=True))
        lines.append(f"speedup from -n {one['jobs']} to -n {two['jobs']}: "
                     f"{one['wall_s'] / two['wall_s']:.2f}x, of the median runs (rounds: "
                     f"{rounds}; the session alone {one['session_s'] / two['session_s']:.2f}x; "
                     f"outside it {one['outside_session_s']} and {two['outside_session_s']} s)")
    for r in report["host"]:
        lines.append(f"-n {r['jobs']}: wrote {r['output_mb']} MB")
    b = report["breakdown"]
    lines.append(f"breakdown of {b['cells']} cells ({b['cases']} cases, {b['seconds']} s): "
                 + ", ".join(f"{k} {v}%" for k, v in b["share_pct"].items()))
    a = report["anchor"]
    if a:
        mine = report["host"][0]["vmsplice_memfd_case_ms"]
        lines.append(f"anchor (C, {a['cell']}): {a['ms_per_cell']} ms a cell; pinhole "
                     f"{mine} ms a case on vmsplice memfd cells"
                     + (f" ({mine / a['ms_per_cell']:.1f}x)" if mine else ""))
    for m in report["matrix"]:
        lines.append(f"{m['kernel']} ({m['release']}, {m['accelerator']}): fetch {m['fetch_s']} s, "
                     f"boot {m['boot_s']} s, run {m['run_s']} s, {m['cases']} cases")
    return "\n".join(lines)


def kernel_view(previous: Path) -> dict:
    """kernelview.measure() of this machine; where none of its kernel builds is here (a fresh
    machine), the previous results' figures, marked with their date, rather than none."""
    measured = kernelview.measure()
    built = [b for b in measured["build"].values() if isinstance(b, dict) and b.get("built")]
    if built or not previous.exists():
        return measured
    doc = json.loads(previous.read_text())
    kept = doc.get("kernel_view")
    return {**kept, "measured": kept.get("measured") or doc.get("date")} if kept else measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", action="append", default=[], metavar="SPEC")
    parser.add_argument("--jobs", default="1,2", help="the host runs' -n values (default 1,2)")
    # One run each gave 1.53-1.79x on this kind of machine, whose neighbours come and go.
    parser.add_argument("--rounds", type=int, default=3,
                        help="host runs of each -n, interleaved; the median counts (default 3)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    # A fresh machine's caches: a development VM's inode cache (kernel source trees) makes
    # every drop_caches of the drop-caches cells walk hundreds of thousands of inodes.
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")
    warm_up()
    setup = setup_seconds()
    load_before = os.getloadavg()
    order = args.jobs.split(",")
    runs: dict[str, list[dict]] = {jobs: [] for jobs in order}
    for n in range(max(args.rounds, 1)):
        for jobs in order if n % 2 == 0 else order[::-1]:  # drift falls on both alike
            runs[jobs].append(host_run(jobs))
    host = []
    for jobs in order:
        walls = [r["wall_s"] for r in runs[jobs]]
        r = sorted(runs[jobs], key=lambda r: r["wall_s"])[len(walls) // 2]
        r["walls_s"] = walls
        r["setup_share_pct"] = round(100 * setup / r["wall_s"], 1)  # workers set up in parallel
        host.append(r)
    report = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, "
                   f"{round(psutil.virtual_memory().total / 2**30)} GiB, "
                   f"kernel {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after_host": [round(x, 2) for x in os.getloadavg()]},
        "setup_per_worker_s": round(setup, 3), "host": host,
        "breakdown": breakdown(), "anchor": anchor(),
        "kernel_view": kernel_view(Path(args.out)),
        "matrix": [matrix_run(spec) for spec in args.matrix],
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
