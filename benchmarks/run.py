"""pinhole's speed and memory on this machine: writes benchmarks/results.json and a table.

    python benchmarks/run.py [--matrix debian:6.12 ...] [--out FILE]

Host runs with -n 1, -n 2 and -n auto: wall time, cases per second, the share of wall time
spent in per-worker setup (mkfs, loop devices, mounts), per-case median and p95, the
harness's own cost per case (wall time not spent inside cases), peak memory of the run's
process tree. With --matrix, per kernel: fetch, boot and run seconds of `pinhole matrix`.
Targets (the issue's, for 2 cores): host matrix under 60 s with -n 2, setup under 10 %,
harness cost per case under 5 ms, a Debian kernel under TCG in under 5 minutes.
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

from conformance import results  # noqa: E402
from conformance.backings import BACKINGS  # noqa: E402

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
        doc = results.load(Path(tmp) / "results.json")
    ran = [c["duration_s"] for c in doc["cases"] if c["verdict"] != "skip"]
    workers = os.cpu_count() if jobs == "auto" else max(int(jobs), 1)
    inside = sum(c["duration_s"] for c in doc["cases"])
    return {
        "jobs": jobs, "workers": workers, "wall_s": round(wall, 2), "cases": len(doc["cases"]),
        "ran": len(ran), "cases_per_s": round(len(doc["cases"]) / wall, 1),
        "case_median_ms": round(statistics.median(ran) * 1000, 2),
        "case_p95_ms": round(sorted(ran)[int(0.95 * len(ran))] * 1000, 2),
        "harness_ms_per_case": round((wall * workers - inside) / len(doc["cases"]) * 1000, 2),
        "peak_rss_mib": round(peak[0] / 2**20, 1),
    }


def matrix_run(spec: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "conformance.cli", "matrix", f"--kernel={spec}",
                        f"--out={tmp}", *MATRIX_SELECTION], cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        (doc,) = [results.load(p) for p in Path(tmp).glob("*/results.json")]
    env = doc["environment"]
    return {"kernel": spec, "release": env["release"], "accelerator": env["accelerator"],
            **{f"{k}_s": v for k, v in env["seconds"].items()}, "wall_s": round(wall, 1),
            "cases": len(doc["cases"])}


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']}",
             f"setup per worker (mkfs, loop, mount): {report['setup_per_worker_s']} s",
             "jobs  wall_s  cases  cases/s  setup%  median_ms  p95_ms  harness_ms  peak_MiB"]
    for r in report["host"]:
        lines.append(f"{r['jobs']:>4}  {r['wall_s']:>6}  {r['cases']:>5}  {r['cases_per_s']:>7}  "
                     f"{r['setup_share_pct']:>6}  {r['case_median_ms']:>9}  {r['case_p95_ms']:>6}  "
                     f"{r['harness_ms_per_case']:>10}  {r['peak_rss_mib']:>8}")
    for m in report["matrix"]:
        lines.append(f"{m['kernel']} ({m['release']}, {m['accelerator']}): fetch {m['fetch_s']} s, "
                     f"boot {m['boot_s']} s, run {m['run_s']} s, {m['cases']} cases")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", action="append", default=[], metavar="SPEC")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    setup = setup_seconds()
    host = []
    for jobs in ("1", "2", "auto"):
        r = host_run(jobs)
        r["setup_share_pct"] = round(100 * setup / r["wall_s"], 1)  # workers set up in parallel
        host.append(r)
    report = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, "
                   f"{round(psutil.virtual_memory().total / 2**30)} GiB, "
                   f"kernel {platform.release()}",
        "setup_per_worker_s": round(setup, 3), "host": host,
        "matrix": [matrix_run(spec) for spec in args.matrix],
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
