"""The pinhole command: run, probe, list, spec."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import gc
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from . import lifetime, reports, results
from . import probe as probe_mod
from .cpus import numprocesses
from .dimensions import VOCABULARY, UnknownName, cells, names, parse_case
from .expectations import LAYER_NAMES, LAYERS, Entry, Spec, SpecError, Step, traits
from .running_kernel import parse_version, running

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "cases"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def dimension_args(args: argparse.Namespace) -> list[str]:
    """--pin, --backing, ..., --shard and --kernel-view, checked, as pytest options."""
    shard = [f"--shard={args.shard}"] if args.shard else []
    shard += ["--kernel-view"] if args.kernel_view else []
    try:
        return shard + [f"--{d}={','.join(names(d, getattr(args, d)))}" for d in VOCABULARY
                        if getattr(args, d)]
    except UnknownName as e:
        raise UsageError(str(e)) from None


def add_dimensions(p: argparse.ArgumentParser) -> None:
    for d in VOCABULARY:
        p.add_argument(f"--{d}", action="append", default=[], metavar="NAME",
                       help=f"only these {d} values: {', '.join(VOCABULARY[d])}")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of N slices of the cases")
    p.add_argument("--kernel-view", action="store_true", help="add the kernel-view check: "
                   "which folio each pin holds, read by drgn (needs the kernel's debug info)")


# What a run writes into --out: removed when the directory is reused, nothing else is.
RUN_FILES = (results.FILE, f"{results.FILE}.tmp", results.PLAIN, f"{results.PLAIN}.tmp",
             results.PROGRESS, *reports.FILES, "kcidb.json", "guest.json")
LOCK = ".pinhole.lock"
# After Ctrl-C or SIGTERM, how long pytest gets to write its partial results.
STOP_GRACE = 20.0
# How often pinhole looks at a signal's deadline while pytest runs, in seconds.
POLL = 0.2
# When pinhole run imports the reports' modules (0.08 s): past the start of pytest, its
# workers and their plans, which have the CPUs to themselves until then.
MEANWHILE_AFTER = 2.0
# The directories this process made, removed again if the run fails before writing into them.
CREATED: list[Path] = []


RUNS = Path("pinhole-runs")
KEEP_ENV = "PINHOLE_KEEP_RUNS"
KEEP_DEFAULT = 10


def keep_runs() -> int:
    text = os.environ.get(KEEP_ENV, str(KEEP_DEFAULT))
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{KEEP_ENV}={text!r}: give how many runs to keep under {RUNS}/, "
                         "a whole number of at least 1")
    return int(text)


def prune_runs(keep: int) -> list[Path]:
    """Remove all but the newest `keep` runs under ./pinhole-runs: only directories a pinhole
    run made (they hold its lock file), never one whose run still holds the lock."""
    runs = sorted((p for p in RUNS.glob("*") if (p / LOCK).exists()), key=lambda p: p.name)
    gone = []
    for old in runs[:-keep]:
        fd = os.open(old / LOCK, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # still running
        finally:
            os.close(fd)
        if remove_run(old):
            gone.append(old)
    return gone


def ours(f: Path) -> bool:
    return f.name in (*RUN_FILES, LOCK) or f.match("diff-*.txt")


def remove_run(path: Path) -> bool:
    """Remove what runs write in path and its kernels' subdirectories; anything else stays,
    and so does its directory. True when the directory is gone."""
    for sub in [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]:
        remove_run(sub)
    for f in path.iterdir():
        if f.is_file() and ours(f):
            f.unlink()
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def out_dir(requested: str | None) -> Path:
    """--out DIR, or a new directory per run under ./pinhole-runs, of which the newest
    PINHOLE_KEEP_RUNS (default 10) are kept."""
    if requested:
        path = Path(requested)
    else:
        keep = keep_runs()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = RUNS / f"{stamp}-{running().release}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path}: exists and is not a directory")
    try:
        new = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        if new:
            CREATED.append(path)
        probe_file = path / ".pinhole-write-test"
        probe_file.write_text("")
        probe_file.unlink()
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write there: {e.strerror}") from None
    if not requested:
        (path / LOCK).touch()  # marks it a run's own directory before pruning the others
        gone = prune_runs(keep)
        if gone:
            print(f"pinhole: removed {len(gone)} old run(s) under {RUNS}/ (keeping {keep}: "
                  f"{KEEP_ENV})", file=sys.stderr)
    return path


def claim(out: Path) -> int:
    """Lock out for this run (a second run into it is refused) and remove what an earlier run
    left there, so a run never mixes with another; returns the lock's fd, held until exit."""
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"--out {out}: another pinhole run is writing there; wait for it or "
                         "choose another directory") from None
    old = [p for p in (*map(out.joinpath, RUN_FILES), *out.glob("diff-*.txt")) if p.exists()]
    for p in old:
        p.unlink()
    if old:
        print(f"pinhole: --out {out}: removed the previous run's results "
              f"({', '.join(p.name for p in old)})", file=sys.stderr)
    return fd


def discard_created() -> None:
    """A run that failed before writing anything leaves no empty directory behind."""
    for path in reversed(CREATED):
        for name in (*RUN_FILES, LOCK):
            (path / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something was written there after all
            path.rmdir()


def quiet_failures(pytest_args: list[str]) -> list[str]:
    """pinhole's summary names every failure with its reason; pytest's tracebacks and short
    summary would push it off the screen. -v, or a --tb or -r of the user's, keeps them."""
    own = any(a.startswith(("-v", "--verbose", "--tb", "-r")) for a in pytest_args)
    return [] if own else ["--tb=no", "-rN"]


def xdist_disabled(pytest_args: list[str]) -> bool:
    pairs = zip(pytest_args, [*pytest_args[1:], ""], strict=False)  # [""] when no args
    return any(a == "-pno:xdist" or (a == "-p" and b == "no:xdist") for a, b in pairs)


# From this many cells a guest runs them in xdist workers, one a vCPU, else in one process.
# Under TCG (Debian 6.12, 2 cores, 2026-11-27): the whole matrix, 23,760 cells, ran in 456 s
# with two workers against 630 s in one process; CI's selection, 2,412 cells, in 98 and 113 s
# against 91 and 110 s (interleaved): each worker starts Python and plans again, and the
# kernel threads lose the vCPU they had to themselves (a cell took 20 % longer).
GUEST_WORKERS_FROM = 4000


def guest_workers(args: argparse.Namespace, pytest_args: list[str], cpus: int) -> list[str]:
    """-n for the guests' pytest where the arguments say nothing of workers: one a vCPU for a
    selection of GUEST_WORKERS_FROM cells or more (-k and --shard counted)."""
    if xdist_disabled(pytest_args) or numprocesses(pytest_args) is not None:
        return []
    from .plugin import keyword_filter  # here: it imports pytest, which other commands need not

    keyword = next((b for a, b in zip(pytest_args, [*pytest_args[1:], ""], strict=False)
                    if a == "-k"), "")
    chosen = keyword_filter(keyword)
    selection = {d: set(names(d, getattr(args, d))) for d in VOCABULARY}
    count = sum(1 for cell in cells(selection, ()) if any(chosen(c.id) for c in cell.cases))
    count //= int(args.shard.partition("/")[2]) if args.shard else 1
    if count < GUEST_WORKERS_FROM:
        return []
    print(f"pinhole matrix: {count:,} cells: each guest runs them in {cpus} xdist workers, one "
          "a vCPU (-p no:xdist keeps one process)", flush=True)
    return ["-n", str(cpus)]


def run_pytest(cmd: list[str], meanwhile: Callable[[], None] | None = None,
               written: Callable[[], None] | None = None) -> tuple[int, int | None]:
    """Run pytest in its own process group, dying with pinhole; Ctrl-C or SIGTERM of pinhole
    interrupts it (SIGINT to the group: it writes partial results), a second one kills it.
    meanwhile, if given, is called once pytest is MEANWHILE_AFTER seconds into its run, and
    written once pytest says its record is written (results.READY_ENV), as it ends.
    Returns pytest's exit code and the signal that stopped pinhole, if any."""
    ready, told = os.pipe() if written else (None, None)
    env = {**os.environ, results.READY_ENV: str(told)} if written else None
    proc = subprocess.Popen(cmd, cwd=ROOT, process_group=0, env=env,
                            pass_fds=() if told is None else (told,),
                            preexec_fn=functools.partial(lifetime.die_with_parent,
                                                         parent=os.getpid()))
    if told is not None:
        os.close(told)
    got: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        got.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT if len(got) == 1 else signal.SIGKILL)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    # Readable the moment pytest exits; Popen.wait(timeout)'s own sleeps saw it up to 50 ms
    # late. None before Linux 5.3: waited for as before then.
    exited = pidfd(proc.pid)
    try:
        deadline = None
        later = time.monotonic() + MEANWHILE_AFTER if meanwhile else None
        while True:
            pipes = [] if ready is None else [ready]
            if exited is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=POLL)
                readable = select.select(pipes, [], [], 0)[0]
            else:
                readable = select.select([exited, *pipes], [], [], POLL)[0]
            if ready is not None and ready in readable:
                said = os.read(ready, 1)  # nothing: pytest ended without writing one
                os.close(ready)
                ready = None
                if said and written and not got:
                    written()
            code = proc.poll()
            if code is not None:
                break
            if got and deadline is None:
                deadline = time.monotonic() + STOP_GRACE
            if deadline is not None and time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
            if meanwhile and later is not None and not got and time.monotonic() >= later:
                meanwhile()
                later = None
        # Workers in pytest's group that outlived it (a second signal, a timeout) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for fd in (exited, ready):
            if fd is not None:
                os.close(fd)
    return code, (got[0] if got else None)


def pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def check_scratch() -> None:
    from .scratch import scratch_problem

    problem = scratch_problem()
    if problem:
        raise UsageError(problem)


def baseline_of(args: argparse.Namespace) -> list[dict] | None:
    """--baseline DIR, read before anything runs: a wrong DIR costs no run."""
    if not args.baseline:
        return None
    try:
        return reports.load_baseline(Path(args.baseline))
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--baseline {args.baseline}: {e}") from None


class Record:
    """results.json.gz of the run pinhole started: read as soon as pytest says it is written,
    while pytest prints its summary and exits (0.1 s), else once pytest has exited."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc: dict | None = None

    def written(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):  # read, and reported, after
            self.doc = results.load(self.path)

    def load(self) -> dict:
        return self.doc if self.doc is not None else results.load(self.path)


def cmd_run(args: argparse.Namespace, pytest_args: list[str]) -> int:
    selection = dimension_args(args)
    baseline = baseline_of(args)
    load_spec(args.spec)
    check_scratch()
    if not CASES.is_dir():
        raise UsageError(f"no cases at {CASES}: run pinhole from a checkout (pip install -e .)")
    out = out_dir(args.out).resolve()  # pytest runs from the checkout, not from here
    claim(out)
    # -n only while xdist is loaded: pytest -p no:xdist does not know the option.
    jobs = [] if xdist_disabled(pytest_args) else ["-n", args.jobs]
    cmd = [sys.executable, "-m", "pytest", str(CASES), *jobs, f"--pinhole-out={out}",
           *selection, *quiet_failures(pytest_args),
           *[f"--spec={os.path.abspath(s)}" for s in args.spec], *pytest_args]
    record = Record(out / results.FILE)
    code, stopped = run_pytest(cmd, meanwhile=reports.prepare, written=record.written)
    doc_path = out / results.FILE
    if stopped:
        return stopped_run(out, stopped)
    if code == 5:
        discard_created()
        print("pinhole: error: no case was selected: check --pin, --backing, ... and -k",
              file=sys.stderr)
        return results.EXIT_HARNESS
    if code in (2, 3, 4) or not doc_path.exists():
        discard_created()
        print(f"pinhole: error: pytest could not run the cases (exit {code})", file=sys.stderr)
        return results.EXIT_USAGE if code == 4 else results.EXIT_HARNESS
    doc = record.load()
    written = reports.write_all(out, [doc], baseline)
    gc.freeze()  # the interpreter's exit, next, then skips walking the records (0.05 s)
    print(f"pinhole: results in {out}/: {results.FILE} "
          f"{' '.join(p.name for p in written)}")
    # pytest's 1 is a failed test, recorded or not (a control, a broken fixture): never a pass.
    return results.EXIT_FAIL if code == 1 else results.run_exit(doc)


def stopped_run(out: Path, signum: int) -> int:
    """Reports of a run stopped by Ctrl-C or SIGTERM, marked incomplete; exit 128 + signal."""
    try:
        doc = reports.merge.load_many([out])[0]
    except (OSError, ValueError, KeyError):
        print(f"pinhole: stopped by {signal.Signals(signum).name} before any case ran",
              file=sys.stderr)
        return 128 + signum
    if not doc.get("incomplete"):
        doc["incomplete"] = f"stopped by {signal.Signals(signum).name}"
    results.write(out, doc)
    written = reports.write_all(out, [doc])
    print(reports.summary([doc]), end="")
    print(f"pinhole: stopped by {signal.Signals(signum).name}; partial results in {out}/: "
          f"{results.FILE} {' '.join(p.name for p in written)}", file=sys.stderr)
    return 128 + signum


def cmd_matrix(args: argparse.Namespace, pytest_args: list[str]) -> int:
    from . import debian, kbuild, multikernel, vm

    selection = [*dimension_args(args), *[f"--spec={os.path.abspath(s)}" for s in args.spec],
                 *guest_workers(args, pytest_args, vm.CPUS), *pytest_args]
    why = vm.unshareable(Path(args.out or RUNS).resolve())
    if why:
        raise UsageError(f"--out {args.out or RUNS}: {why}")
    load_spec(args.spec)
    baseline = baseline_of(args)
    # Ctrl-C and SIGTERM stop the running VM and leave partial reports (lifetime.Stopped).
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lifetime.raise_stopped)
    try:
        multikernel.resolve_all(args.kernel)
    except (debian.KernelNotFound, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    out = out_dir(args.out)
    claim(out)
    try:
        code = multikernel.run(args.kernel, out.resolve(), selection, args.timeout,
                                 patches=args.patch, baseline=baseline)
    except (debian.KernelNotFound, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    except kbuild.BuildFailed as e:
        # 125: git bisect's "cannot test this revision".
        print(f"pinhole: error: {e}", file=sys.stderr)
        return results.EXIT_HARNESS
    print(f"pinhole: kernels side by side in {out}/ (matrix.md, matrix.html, diff-*.txt)")
    return code


def load_runs(paths: list[str]) -> list[dict]:
    try:
        return reports.merge.load_many([Path(p) for p in paths])
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot read results: {e}") from None


def cmd_report(args: argparse.Namespace) -> int:
    docs = load_runs(args.runs)
    if args.out is None and len(args.runs) > 1:
        raise UsageError("several runs: say where the merged report goes with --out DIR")
    out = out_dir(args.out or str(merge_dir(args.runs[0])))
    if len(args.runs) > 1:
        for doc in docs:
            results.write(out / doc["kernel"]["release"], doc)
    written = reports.write_all(out, docs)
    print(reports.summary(docs), end="")
    print(f"pinhole: {' '.join(str(p) for p in written)}")
    return max(results.run_exit(d) for d in docs)


def merge_dir(path: str) -> Path:
    return Path(path) if Path(path).is_dir() else Path(path).parent


def one_run(path: str) -> dict:
    """The one run (one kernel) diff compares; a `pinhole matrix` output holds several."""
    docs = load_runs([path])
    if len(docs) > 1:
        kernels = ", ".join(d["kernel"]["release"] for d in docs)
        raise UsageError(f"{path} holds {len(docs)} kernels ({kernels}): diff one of its "
                         "subdirectories")
    return docs[0]


def cmd_diff(args: argparse.Namespace) -> int:
    a, b = one_run(args.a), one_run(args.b)
    changes = reports.diff.diff(a, b)
    print(reports.diff.render(changes, a, b), end="")
    return 1 if changes else 0


def load_spec(extra: list[str]) -> Spec:
    """The spec with every entry checked against the matrix: a bad entry is one line here,
    before pytest or a VM starts (pytest's controller checks it again, in milliseconds)."""
    try:
        return Spec.load(extra, checked=True)
    except SpecError as e:
        raise UsageError(str(e)) from None


def cmd_probe(args: argparse.Namespace) -> int:
    p = probe_mod.probe()
    print(json.dumps(p, indent=1) if args.json else probe_mod.render(p))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for dimension, values in VOCABULARY.items():
        print(f"{dimension:10} {' '.join(values)}")
    cases = [case for cell in cells() for case in cell.cases]
    per_pin = Counter(c.pin for c in cases)
    print(f"{'cases':10} {len(cases)} ({', '.join(f'{p} {n}' for p, n in per_pin.items())})")
    if args.ids:
        print("\n".join(c.id for c in cases))
    return 0


def _spec_path(where: str) -> str:
    """A spec entry's file:line, built-in files relative to the checkout."""
    with contextlib.suppress(ValueError):
        return str(Path(where).relative_to(ROOT))
    return where


def _says(e: Entry, check: str) -> str:
    said = [*(["|".join(e.outcomes_for(check)) + (f" {e.errno}" if e.errno else "")]
              if e.outcomes else []), *([f"known {e.known}"] if e.known else [])]
    return ", ".join(said)


def _conditions(e: Entry) -> str:
    """What an entry matches, as written, with the names each trait stands for."""
    named = traits()
    parts = []
    for key, values in e.written.items():
        shown = [f"{v} ({', '.join(named[key][v])})" if v in named[key] else v for v in values]
        parts.append(f"{key} = {', '.join(shown)}")
    return "; ".join(parts + ([f"kernel {e.kernel.text}"] if e.kernel else [])) or "every case"


def _role(step: Step, version: str) -> str:
    by = _spec_path(step.by.where) if step.by else ""
    kernel = step.entry.kernel.text if step.entry.kernel else ""
    return {"decides": "decides: the last entry with an outcome",
            "overridden": f"overridden by {by}",
            "other kernels": f"not on {version}: kernel {kernel}",
            "adds known": "adds its known limitation",
            "ignored": f"ignored: {by} decides after it" if by else "ignored: nothing decides",
            "superseded": f"superseded by {by}"}[step.role]


PRECEDENCE = (f"{' < '.join(LAYER_NAMES)}; within a layer, general files < pin files < --spec "
              "files, each in name (or given) order; within a file, earlier < later entries")


def cmd_spec(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if not args.explain:
        return spec_overview(spec)
    try:
        case = parse_case(args.explain)
        version = parse_version(args.kernel or running().release)
    except ValueError as e:
        raise UsageError(str(e)) from None
    shown = ".".join(map(str, version))
    exp = spec.expect(case, version)
    print(f"{case.id} on {shown}")
    print(f"precedence: {PRECEDENCE}\n")
    steps = spec.explain(case, version)
    rows = [(s.entry.layer, _spec_path(s.entry.where), _says(s.entry, case.check),
             _role(s, shown), _conditions(s.entry)) for s in steps]
    width = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for layer, where, says, role, conditions in rows:
        print(f"  {layer:{width[0]}}  {where:{width[1]}}  {says:{width[2]}}  {role}")
        print(f"  {'':{width[0]}}  {conditions}")
    if exp is None:
        print("\nno entry decides this case")
        return 1
    known = f"; known to show {exp.known}: {exp.known_reason}" if exp.known else ""
    print(f"\nexpected: {'|'.join(exp.outcomes)}{' ' + exp.errno if exp.errno else ''}{known}")
    decider = next(s.entry for s in steps if s.role == "decides")
    print(f"because ({_spec_path(decider.where)}): {exp.reason}")
    return 0


def spec_overview(spec: Spec) -> int:
    """The layers in the order they decide, the files in each, and the traits."""
    print(f"precedence: {PRECEDENCE}")
    print("layers, lowest first (each overrides the ones before it):")
    for layer in LAYERS:
        files = Counter(_spec_path(e.file) for e in spec.entries if e.layer == layer.name)
        print(f"  {layer.name:10}  {layer.says}")
        print(f"  {'':10}  {', '.join(f'{f} ({n})' for f, n in files.items()) or '(none)'}")
    print("traits (a trait stands for these names wherever a name of its dimension can):")
    for dimension, named in traits().items():
        for trait, values in named.items():
            print(f"  {dimension:10}  {trait} = {', '.join(values)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pinhole", description="Do long-term pins of file holes "
                                "stay coherent with the file? A kernel conformance suite.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cases on this kernel (extra args go to pytest)")
    run.add_argument("--out", metavar="DIR", help="where results go (default: a new directory "
                     "under ./pinhole-runs)")
    add_dimensions(run)
    run.add_argument("--spec", action="append", default=[], metavar="FILE",
                     help="layer a spec file over the built-in expectations")
    run.add_argument("-n", "--jobs", default="auto", help="pytest-xdist workers (default auto)")
    run.add_argument("--baseline", metavar="DIR", help="a run to compare with in summary.md, "
                     "e.g. the kernel before a patch set")
    mx = sub.add_parser("matrix", help="run the cases on other kernels, each in a VM "
                        "(extra args go to pytest in the guest)")
    mx.add_argument("--kernel", action="append", required=True, metavar="SPEC",
                    help="debian:6.1, debian:6.12, debian:sid, an exact Debian version "
                    "(debian:6.1.192-2), a vmlinuz path or a kernel build tree")
    mx.add_argument("--patch", action="append", default=[], type=Path, metavar="FILE",
                    help="apply to debian-src: kernels' source (patch -p1, in order)")
    mx.add_argument("--out", metavar="DIR", help="where results go (default: a new "
                    "directory under ./pinhole-runs)")
    add_dimensions(mx)
    mx.add_argument("--spec", action="append", default=[], metavar="FILE")
    mx.add_argument("--timeout", type=float, default=1800, metavar="SECONDS",
                    help="time limit per kernel, boot included (default 1800)")
    mx.add_argument("--baseline", metavar="DIR", help="a run or matrix to compare with in "
                    "summary.md, e.g. the kernels before a patch set")
    pr = sub.add_parser("probe", help="what this kernel and machine can test")
    pr.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="the matrix dimensions and number of cases")
    ls.add_argument("--ids", action="store_true", help="print every case id")
    rp = sub.add_parser("report", help="render the reports again from results.json.gz, merging "
                        "shards of a run and putting several kernels side by side")
    rp.add_argument("runs", nargs="+", metavar="DIR", help="a run directory or its results.json.gz")
    rp.add_argument("--out", metavar="DIR", help="where the reports go (default: the run's "
                    "own directory; needed for several runs)")
    dp = sub.add_parser("diff", help="cells whose verdict or outcome changed between two runs")
    dp.add_argument("a", metavar="BEFORE")
    dp.add_argument("b", metavar="AFTER")
    sp = sub.add_parser("spec", help="the spec's layers and traits, or which entries decide a "
                        "case and why (--explain)")
    sp.add_argument("--explain", metavar="CASE_ID", help="every entry that matches the case, "
                    "in precedence order, and which decides")
    sp.add_argument("--kernel", metavar="VERSION", help="kernel version for --explain "
                    "(default: running)")
    sp.add_argument("--spec", action="append", default=[], metavar="FILE",
                    help="layer a spec file over the built-in one (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args, rest = parser().parse_known_args(argv)
    if rest and args.command not in ("run", "matrix"):
        print(f"pinhole: error: unrecognized arguments: {' '.join(rest)}", file=sys.stderr)
        return results.EXIT_USAGE
    try:
        if args.command == "run":
            return cmd_run(args, rest)
        if args.command == "matrix":
            return cmd_matrix(args, rest)
        commands = {"probe": cmd_probe, "list": cmd_list, "spec": cmd_spec,
                    "report": cmd_report, "diff": cmd_diff}
        return commands[args.command](args)
    except UsageError as e:
        discard_created()
        print(f"pinhole: error: {e}", file=sys.stderr)
        return results.EXIT_USAGE
    except lifetime.Stopped as e:  # before any VM ran: nothing to report
        discard_created()
        print(f"pinhole: stopped by {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C before pytest started: nothing ran
        discard_created()
        print("pinhole: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `pinhole diff A B | head`: the reader has what it wanted
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
