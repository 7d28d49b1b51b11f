"""Where a case's time goes in a `pinhole matrix` VM, and what boot options and VM shapes buy.

    python benchmarks/tcg.py [--kernel debian:6.12] [--arm NAME ...] [--rounds N]
                             [--accel tcg] [--perf] [--out FILE] [-- SELECTION]

Each arm is a way to boot and run the guest: boot options appended to pinhole's own, the
number of vCPUs, and extra pytest arguments (e.g. -n 2). The arms run interleaved, round
after round (A B C A B C ...), so that a machine shared with other work loads every arm alike;
compare arms only within one run. Load averages are recorded before and after every VM.

In each VM, one after another:
  micro    a small C program: a syscall, a page fault (4 KiB and THP), mmap+touch+munmap,
           fork+wait, a 4 KiB pwrite, write+fsync on the 9p output directory, a CPU loop;
  python   with --probes (first round only): interpreter start (-S, plain),
           `import conformance.plugin`, pytest's collection of the selection, how many
           imported modules have no bytecode, and mkfs.ext4 of a 64 MiB image;
  run      the selection, as pinhole matrix runs it (python -m conformance.guest); its
           results.json.gz gives the time inside cases and the harness's time around them.
With --perf, the run is sampled with perf (cpu-clock, all CPUs) where the guest has perf, and
the report gives shares by DSO (kernel, python, libc, ...) and the top kernel symbols.

Arms (--arm, repeatable; default: default fast): a name from ARMS below ("default" is the
kernel's own behaviour, "fast" pinhole's TCG boot options and CPU model), or append:OPTS for
any boot options, comma-separated (append:nokaslr,audit=0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import bundle  # noqa: E402
from conformance.cache import cache_root  # noqa: E402

# The CI selection's state and mutation dimensions, over two pins and two backings: about 200
# cases, a couple of minutes a VM under TCG.
QUICK = ["--pin=io_uring,vmsplice", "--backing=memfd,ext4", "--state=hole,written",
         "--mutation=none,pwrite,store,pin-write,punch-hole,truncate-down,odirect-write,"
         "fork-write"]

ARMS: dict[str, dict] = {
    "default": {"append": []},
    "fast": {"append": [], "fast": True},  # pinhole's own TCG boot options and CPU model
    "mitigations=off": {"append": ["mitigations=off"]},
    "no-init-on": {"append": ["init_on_alloc=0", "init_on_free=0"]},
    "no5lvl": {"append": ["no5lvl"]},
    "nokaslr": {"append": ["nokaslr"]},
    "kstack-off": {"append": ["randomize_kstack_offset=off"]},
    "audit=0": {"append": ["audit=0"]},
    "no-lsm": {"append": ["lsm=", "selinux=0", "apparmor=0"]},
    "shuffle-off": {"append": ["page_alloc.shuffle=0"]},
    "thp-never": {"append": ["transparent_hugepage=madvise"]},
    "cpus1": {"append": [], "cpus": 1},
    "cpus2-n2": {"append": [], "cpus": 2, "pytest": ["-n", "2"]},
    # The guest's pytest on one of the two vCPUs (its threads too).
    "taskset0": {"append": [], "prefix": ["taskset", "-c", "0"]},
    # progress.jsonl fsynced after every line (pinhole's behaviour before), or never.
    "sync": {"append": [], "env": {"PINHOLE_SYNC_PROGRESS": "1"}},
    "nosync": {"append": [], "env": {"PINHOLE_SYNC_PROGRESS": "0"}},
    # Bytecode for every module, compiled on the host into a prefix (the guest's root is
    # read-only and the project's own modules have none when PYTHONDONTWRITEBYTECODE is set).
    "pycache": {"append": [], "pycache": True},
    "profile": {"append": [], "profile": True},
    # The guest's imports over 9p, without pinhole matrix's zip and tar.
    "imports-9p": {"append": [], "fast": True, "bundle": False},
}

MICRO_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/syscall.h>
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    double t; int i, n; size_t o, sz = 32 << 20; char *p;
    printf("{");
    n = 20000; t = now(); for (i = 0; i < n; i++) syscall(SYS_getppid);
    printf("\"syscall_us\": %.3f, ", (now() - t) / n * 1e6);
    n = 2000; t = now();
    for (i = 0; i < n; i++) {
        p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 1; munmap(p, 4096);
    }
    printf("\"mmap_touch_munmap_us\": %.3f, ", (now() - t) / n * 1e6);
    p = mmap(0, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(p, sz, MADV_NOHUGEPAGE); t = now();
    for (o = 0; o < sz; o += 4096) p[o] = 1;
    printf("\"fault_4k_us\": %.3f, ", (now() - t) / (sz / 4096) * 1e6); munmap(p, sz);
    p = mmap(0, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(p, sz, MADV_HUGEPAGE); t = now();
    for (o = 0; o < sz; o += 4096) p[o] = 1;
    printf("\"fault_thp_us_per_4k\": %.3f, ", (now() - t) / (sz / 4096) * 1e6);
    t = now(); for (o = 0; o < sz; o += 64) p[o]++;
    printf("\"touch_32MiB_ms\": %.3f, ", (now() - t) * 1e3); munmap(p, sz);
    n = 100; t = now();
    for (i = 0; i < n; i++) { pid_t c = fork(); if (!c) _exit(0); waitpid(c, 0, 0); }
    printf("\"fork_wait_us\": %.3f, ", (now() - t) / n * 1e6);
    { int fd = memfd_create("x", 0); char b[4096]; memset(b, 1, sizeof b); n = 5000; t = now();
      for (i = 0; i < n; i++) pwrite(fd, b, 4096, (i % 256) * 4096);
      printf("\"pwrite4k_memfd_us\": %.3f, ", (now() - t) / n * 1e6); close(fd); }
    { char path[4096]; snprintf(path, sizeof path, "%s/micro.fsync", dir);
      int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644); n = 50; t = now();
      for (i = 0; i < n; i++) { write(fd, "0123456789012345678901234567890123456789\n", 41);
                                fsync(fd); }
      printf("\"write_fsync_9p_us\": %.3f, ", (now() - t) / n * 1e6); t = now();
      for (i = 0; i < n; i++) write(fd, "0123456789012345678901234567890123456789\n", 41);
      printf("\"write_9p_us\": %.3f, ", (now() - t) / n * 1e6); close(fd); unlink(path); }
    { volatile unsigned long x = 0; n = 5000000; t = now(); for (i = 0; i < n; i++) x += i;
      printf("\"loop_ns\": %.3f}\n", (now() - t) / n * 1e9); }
    return 0;
}
"""


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- in the guest

def _timed(argv: list[str], env: dict | None = None, cwd: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    return round(time.perf_counter() - start, 3)


def guest_python(selection: list[str]) -> dict:
    py = sys.executable
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = {
        "python_S_s": min(_timed([py, "-S", "-c", "pass"], env) for _ in range(3)),
        "python_s": min(_timed([py, "-c", "pass"], env) for _ in range(3)),
        "import_plugin_s": _timed([py, "-c", "import conformance.plugin"], env, str(ROOT)),
        "collect_s": _timed([py, "-m", "pytest", str(ROOT / "cases"), "-p", "no:cacheprovider",
                             "-q", "--collect-only", *selection], env, str(ROOT)),
    }
    # How many of the modules that a run imports have no usable bytecode beside them: each is
    # compiled from source at every start, since the guest's root is read-only.
    probe = ("import sys, importlib.util, os, conformance.plugin, conformance.guest, pytest\n"
             "n = m = 0\n"
             "for mod in list(sys.modules.values()):\n"
             "    f = getattr(mod, '__file__', None) or ''\n"
             "    if not f.endswith('.py'): continue\n"
             "    n += 1\n"
             "    c = importlib.util.cache_from_source(f)\n"
             "    if not os.path.exists(c) or os.path.getmtime(c) < os.path.getmtime(f): m += 1\n"
             "print(n, m)")
    run = subprocess.run([py, "-c", probe], capture_output=True, text=True, cwd=str(ROOT),
                         env=env)
    with contextlib.suppress(ValueError):
        n, m = map(int, run.stdout.split())
        out["modules"], out["modules_without_pyc"] = n, m
    return out


def guest_mkfs() -> float:
    base = "/tmp"
    image = f"{base}/pinhole-bench.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    try:
        return _timed([shutil.which("mkfs.ext4", path="/usr/sbin:/sbin") or "mkfs.ext4",
                       "-q", "-F", image])
    finally:
        os.unlink(image)


def guest_main(out: Path, micro: str, perf: bool, probes: bool, profile: bool,
               selection: list[str]) -> int:
    report: dict = {"cmdline": Path("/proc/cmdline").read_text().split(),
                    "nproc": os.cpu_count(),
                    "mounts_9p": [line for line in Path("/proc/mounts").read_text().splitlines()
                                  if " 9p " in line],
                    "uptime_at_start_s": float(Path("/proc/uptime").read_text().split()[0]),
                    "modules_loaded": sorted(line.split()[0] for line in
                                             Path("/proc/modules").read_text().splitlines())
                                      if Path("/proc/modules").exists() else []}
    if micro:
        run = subprocess.run([micro, str(out)], capture_output=True, text=True)
        with contextlib.suppress(ValueError):
            report["micro"] = json.loads(run.stdout)
    if probes:
        report["python"] = guest_python(selection)
        report["mkfs_s"] = guest_mkfs()
    kdir = out / "run"
    kdir.mkdir(exist_ok=True)
    # Without site, as pinhole matrix starts it (multikernel.guest_command()).
    argv = [sys.executable, "-S", *(["-m", "cProfile", "-o", str(out / "guest.prof")] if profile
                                    else []), "-m", "conformance.guest", str(kdir), *selection]
    perf_bin = shutil.which("perf", path="/usr/bin:/usr/sbin")
    if perf and perf_bin:
        argv = [perf_bin, "record", "-a", "-e", "cpu-clock", "-F", "499", "-g", "-o",
                "/tmp/perf.data", "--", *argv]
    start = time.perf_counter()
    report["run_started_at"] = time.time()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT),
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    report["run_s"] = round(time.perf_counter() - start, 2)
    if perf and perf_bin:
        report["perf"] = perf_shares(perf_bin)
    (out / "guest-bench.json").write_text(json.dumps(report) + "\n")
    return 0


def perf_shares(perf_bin: str) -> dict:
    def table(*sort: str) -> list[list]:
        run = subprocess.run([perf_bin, "report", "-i", "/tmp/perf.data", "--stdio",
                              "--no-children", "-g", "none", "--percent-limit", "0.5",
                              "--sort", ",".join(sort)],
                             capture_output=True, text=True)
        rows = []
        for line in run.stdout.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                parts = line.split()
                if parts[0].endswith("%"):
                    rows.append([float(parts[0][:-1]), " ".join(parts[1:])])
        return rows[:40]
    return {"by_comm_dso": table("comm", "dso"), "by_symbol": table("dso", "sym")}


# ---------------------------------------------------------------- on the host

def build_micro(where: Path) -> Path | None:
    src, binary = where / "micro.c", where / "micro"
    src.write_text(MICRO_C)
    gcc = shutil.which("gcc")
    if gcc is None or subprocess.run([gcc, "-O2", "-static", "-o", str(binary), str(src)],
                                     capture_output=True).returncode:
        return None
    return binary


def pycache_prefix() -> Path:
    """A PYTHONPYCACHEPREFIX with bytecode of the project, the standard library and every
    site directory, compiled on the host (incremental: seconds once it exists)."""
    import sysconfig


    prefix = cache_root() / "vm" / "pycache"
    dirs = [ROOT / "conformance", ROOT / "cases", ROOT / "benchmarks",
            Path(sysconfig.get_paths()["stdlib"]),
            *(Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")))]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", "-x",
                    r"/(test|tests|idlelib|lib2to3)/", *map(str, dirs)],
                   env={**env, "PYTHONPYCACHEPREFIX": str(prefix)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return prefix


def arm_of(name: str) -> dict:
    if name.startswith("kernel:"):
        return {"append": [], "kernel": name.removeprefix("kernel:")}
    if name.startswith("append:"):
        return {"append": [o for o in name.removeprefix("append:").split(",") if o]}
    if name.startswith("fast"):  # fast, or fast+ARM: pinhole's TCG options and ARM's shape
        # As pinhole matrix boots under TCG: its boot options and its CPU model (vm.FAST_CPU).
        if name == "fast":
            return {"append": [], "fast": True}
        return {**arm_of(name.removeprefix("fast+")), "fast": True}
    if name not in ARMS:
        raise SystemExit(f"tcg.py: unknown arm {name!r}: one of {', '.join(ARMS)} or append:OPTS")
    return ARMS[name]


def run_arm(kernel, name: str, arm: dict, selection: list[str], accel: str, micro: Path | None,
            perf: bool, probes: bool, timeout: float,
            imports: bundle.Packed | None = None) -> dict:
    from conformance import multikernel, ports, results, vm

    with tempfile.TemporaryDirectory(prefix="tcg-bench-", dir=cache_root() / "vm") as tmp:
        out = Path(tmp)
        (out / "run").mkdir()  # the guest's run writes here; its ports' file is in it
        env_vars = dict(arm.get("env", {}))
        if arm.get("pycache"):
            env_vars["PYTHONPYCACHEPREFIX"] = str(pycache_prefix())
        env = " ".join([multikernel.python_env(),
                        *(f"{k}={shlex.quote(v)}" for k, v in env_vars.items())])
        argv = [sys.executable, str(ROOT / "benchmarks" / "tcg.py"), "--guest", str(out),
                "--micro", str(micro or ""), *(["--perf"] if perf else []),
                *(["--probes"] if probes else []),
                *(["--profile"] if arm.get("profile") else []), "--",
                *selection, *arm.get("pytest", [])]
        # The imports from pinhole matrix's zip and tar (conformance/bundle.py), unless the arm
        # says no.
        copy = bundle.copy_command(imports if arm.get("bundle", True) else None)
        shell = (f"{copy}cd {shlex.quote(str(ROOT))} && {env} exec "
                 f"{shlex.join([*arm.get('prefix', []), *argv])}")
        before = load()
        # Only the fast arms get pinhole's TCG options, so "default" is the kernel's own. A VM
        # that dies before its guest comes up is booted again by boot_and_run() itself.
        res = vm.boot_and_run(kernel, shell, timeout=timeout,
                              append=[*multikernel.PMEM_APPEND, *arm["append"]],
                              rwdirs=[out], memory=multikernel.GUEST_MEMORY,
                              cpus=arm.get("cpus", 2), accel=accel, fast=arm.get("fast", False),
                              qemu=[ports.qemu_options(out / "run" / results.PROGRESS)])
        row = {"arm": name, "append": arm["append"], "cpus": arm.get("cpus", 2),
               "pytest": arm.get("pytest", []), "env": arm.get("env", {}),
               "vm": res.outcome, "boot_s": round(res.boot_seconds, 1),
               "vm_run_s": round(res.run_seconds, 1), "lost_boots": len(res.lost),
               "load_before": before, "load_after": load()}
        with contextlib.suppress(FileNotFoundError, ValueError):
            row["guest"] = json.loads((out / "guest-bench.json").read_text())
        with contextlib.suppress(FileNotFoundError, ValueError):
            row["guest_json"] = json.loads((out / "run" / "guest.json").read_text())
        if (out / "guest.prof").exists():
            row["profile"] = profile_summary(out / "guest.prof")
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            doc = results.load(results.record_in(out / "run"))
            cases = doc["cases"]
            inside = sum(c.get("duration_s") or 0 for c in cases)
            ran = [c["duration_s"] for c in cases if c["verdict"] != "skip"]
            verdicts: dict[str, int] = {}
            for c in cases:
                verdicts[c["verdict"]] = verdicts.get(c["verdict"], 0) + 1
            run_s = row["guest"]["run_s"]
            t0 = row["guest"].get("run_started_at")
            # Before the first case: interpreter, imports, spec, collection; the session: the
            # cases and pytest's work around each; after: results and reports.
            phases = {} if t0 is None else {
                "startup_s": round(doc["started"] - t0, 2),
                "session_s": round(doc["finished"] - doc["started"], 2),
                "after_s": round(t0 + run_s - doc["finished"], 2),
                "harness_per_case_ms": round((doc["finished"] - doc["started"] - inside)
                                             / max(len(cases), 1) * 1000, 1)}
            row["cases"] = {"n": len(cases), "verdicts": verdicts, **phases,
                            "inside_s": round(inside, 2),
                            "per_case_ms": round(run_s / max(len(cases), 1) * 1000, 1),
                            "inside_per_case_ms": round(inside / max(len(cases), 1) * 1000, 1),
                            "median_ran_ms": round(statistics.median(ran) * 1000, 1) if ran
                            else None,
                            "verdict_of": {c["id"]: c["verdict"] for c in cases}}
        if res.outcome != "ok":
            row["console_tail"] = res.console_tail[-3000:]
        return row


def profile_summary(path: Path, top: int = 80) -> list[list]:
    """The guest run's functions by cumulative seconds (pinhole's, pytest's and pluggy's),
    with their call counts: where the time goes between the cases."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, calls, _, cum, _) in stats.items():
        if any(part in file for part in ("conformance", "_pytest", "pluggy", "cases", "xdist")):
            rows.append([round(cum, 2), calls, f"{'/'.join(Path(file).parts[-2:])}:{line}({name})"])
    return sorted(rows, reverse=True)[:top]


def summary(rows: list[dict]) -> str:
    lines = ["arm                round  vm  boot_s  run_s  cases  ms/case  inside  "
             "py_start  import  collect  syscall_us  fault_us  fork_us  fsync9p_us  load"]
    for r in rows:
        g, c = r.get("guest", {}), r.get("cases", {})
        m, p = g.get("micro", {}), g.get("python", {})
        lines.append(
            f"{r['arm'][:18]:<18} {r['round']:>5}  {r['vm'][:3]:<3} {r['boot_s']:>6}  "
            f"{g.get('run_s', '-'):>5}  {c.get('n', '-'):>5}  {c.get('per_case_ms', '-'):>7}  "
            f"{c.get('inside_per_case_ms', '-'):>6}  {p.get('python_s', '-'):>8}  "
            f"{p.get('import_plugin_s', '-'):>6}  {p.get('collect_s', '-'):>7}  "
            f"{m.get('syscall_us', '-'):>10}  {m.get('fault_4k_us', '-'):>8}  "
            f"{m.get('fork_wait_us', '-'):>7}  {m.get('write_fsync_9p_us', '-'):>10}  "
            f"{r['load_before'][0]}/{r['load_after'][0]}")
    return "\n".join(lines)


def verdict_changes(rows: list[dict]) -> list[str]:
    """Cases whose verdict differs between any two rows that ran the same selection."""
    seen: dict[str, tuple[str, str]] = {}
    changes = []
    for r in rows:
        for case, verdict in r.get("cases", {}).get("verdict_of", {}).items():
            if case in seen and seen[case][1] != verdict:
                changes.append(f"{case}: {seen[case][0]} {seen[case][1]}, {r['arm']} {verdict}")
            seen.setdefault(case, (r["arm"], verdict))
    return changes


def main() -> int:
    argv = sys.argv[1:]
    selection: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, selection = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="debian:6.12")
    parser.add_argument("--arm", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--accel", default="tcg")
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--no-micro", action="store_true")
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probes", action="store_true",
                        help="also time interpreter start, imports, collection and mkfs")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "tcg-results.json"))
    parser.add_argument("--guest", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--micro", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.guest:
        return guest_main(Path(args.guest), args.micro, args.perf, args.probes, args.profile,
                          selection)
    from conformance import cli, multikernel

    selection = selection or QUICK
    kernel = multikernel.guest_kernel(args.kernel)  # as pinhole matrix boots it
    cli.load_spec([])  # checked here once, as pinhole matrix does: the guest is told so
    arms = args.arm or ["default", "fast"]
    imports, _ = bundle.prepare(cache_root() / "imports")
    rows: list[dict] = []

    (cache_root() / "vm").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tcg-micro-", dir=cache_root() / "vm") as tmp:
        micro = None if args.no_micro else build_micro(Path(tmp))
        for rnd in range(1, args.rounds + 1):
            for name in arms:
                arm = arm_of(name)
                k = multikernel.guest_kernel(arm["kernel"]) if arm.get("kernel") else kernel
                row = run_arm(k, name, arm, selection, args.accel, micro, args.perf,
                              args.probes and rnd == 1, args.timeout, imports)
                row["round"] = rnd
                rows.append(row)
                print(summary([row]).splitlines()[1], flush=True)
                report = {"kernel": args.kernel, "release": kernel.release,
                          "accel": args.accel, "selection": selection, "rows": rows,
                          "verdict_changes": verdict_changes(rows)}
                Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(summary(rows))
    changes = verdict_changes(rows)
    print(f"verdict changes between arms: {len(changes)}")
    for line in changes[:20]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
