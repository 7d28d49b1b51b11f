"""pinhole matrix: the suite on several kernels, each booted in a VM with virtme-ng, and one
report that puts the kernels side by side.

Each kernel gets OUT/<release>/ with its own results.json.gz, reports and the environment it ran
in; the merged reports and a diff between consecutive kernels go to OUT/.
"""

from __future__ import annotations

import os
import re
import shlex
import site
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import (
    SITE_PATH,
    bundle,
    debian,
    kbuild,
    kernelview,
    kmodules,
    lifetime,
    ports,
    reports,
    results,
    vm,
)
from .cache import cache_root
from .guest import GUEST_FILE, HOLD_IN, MODULES, PANIC_IN
from .model import Case, Result, group_of
from .running_kernel import parse_version

ROOT = Path(__file__).resolve().parent.parent
# Four memmap regions become /dev/pmem0..3, one per dax backing of each of the guest's two
# workers (mkfs.xfs wants 300 MiB); adjacent regions would merge into one, hence the gaps. q35
# puts a 6 GiB guest's RAM at 0-2 GiB and 4-8 GiB: two regions in each keep 4 GiB of RAM.
PMEM_APPEND = ("memmap=512M!768M", "memmap=512M!1408M", "memmap=512M!4608M", "memmap=512M!5248M")
GUEST_MEMORY = "6G"
# After a panic in a case, the VM boots again for the cases after it, leaving out the rest of
# that case's group (its pin, backing, mapping, access and state), this many times at most.
MAX_PANICS = 8
# The case ids a panicked boot recorded, for the next boot's --pinhole-done.
DONE = "done.txt"
CONFIGS = ("CONFIG_FS_DAX", "CONFIG_BLK_DEV_PMEM", "CONFIG_RDMA_RXE", "CONFIG_UDMABUF",
           "CONFIG_GUP_TEST", "CONFIG_IO_URING", "CONFIG_TRANSPARENT_HUGEPAGE")


def qemu_version() -> str:
    try:
        run = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    except OSError:
        return "not found"
    return run.stdout.splitlines()[0] if run.stdout else "unknown"


def python_env() -> str:
    """The guest shell's environment for Python: no bytecode written (its root is read-only),
    and the checkout after the zip, the working directory not first (PYTHONSAFEPATH): a
    directory ahead of the zip costs every import a stat, a 9p round trip under TCG. The
    site directories, for a guest Python started without site (-S), go in SITE_PATH: on
    PYTHONPATH they would come before the standard library's, and cost its imports a stat
    each (conformance/__init__.py puts them last, as site does)."""
    return (f'PYTHONDONTWRITEBYTECODE=1 PYTHONSAFEPATH=1 '
            f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}"{shlex.quote(str(ROOT))} '
            f'{SITE_PATH}={shlex.quote(":".join(site_dirs()))}')


def site_dirs() -> list[str]:
    """The site directories on this interpreter's path, in its order: the venv's, and the
    system's where the venv sees them (pyverbs comes from Debian's python3-pyverbs)."""
    found = {*site.getsitepackages(), site.getusersitepackages()}
    return [p for p in sys.path if p in found]


def guest_command(kernel: debian.Kernel, out: Path, pytest_args: list[str],
                  imports: bundle.Packed | None = None) -> str:
    # -S: site's .pth files (an editable install's finder, importlib.metadata) were over a
    # second of the guest's start under TCG; python_env() puts the site directories on the path.
    argv = [sys.executable, "-S", "-m", "conformance.guest", str(out), *pytest_args]
    env = python_env()
    for hook in (PANIC_IN, HOLD_IN):  # a test asks the guest to panic, or wait, in a cell
        if os.environ.get(hook):
            env += f" {hook}={shlex.quote(os.environ[hook])}"
    if results.SYNC_ENV in os.environ:  # fsync progress.jsonl or not, whatever the mount
        env += f" {results.SYNC_ENV}={shlex.quote(os.environ[results.SYNC_ENV])}"
    if kernel.config_path:
        env += f" PINHOLE_KERNEL_CONFIG={shlex.quote(str(kernel.config_path))}"
    # The kernel view (check kernel-view) reads the guest's kernel with this vmlinux.
    for name, value in kernelview.guest_env(kernel).items():
        env += f" {name}={shlex.quote(value)}"
    return (f"{bundle.copy_command(imports)}"
            f"cd {shlex.quote(str(ROOT))} && {env} exec {shlex.join(argv)}")


WHAT = {"panic": "the kernel panicked", "timeout": "the VM hit its time limit",
        "lost": "the VM ended without a status", "failed": "the run in the guest failed",
        "stopped": "pinhole was stopped"}


def what_happened(vm_result: vm.VmResult) -> str:
    """Why a VM's run ended early, in a line: vng's own error line when it has one."""
    return WHAT[vm_result.outcome] + (f" ({vm_result.why})" if vm_result.why else "")


# An oops's, WARN's or panic's header line: the task it happened in (6.10 added "UID: N").
PANIC_TASK = re.compile(r"CPU: \d+ (?:UID: \d+ )?PID: (\d+) Comm: (\S+)")
# The first line of an oops (arch/x86/mm/fault.c, kernel/traps.c and dumpstack.c; lib/bug.c),
# and the call trace's frames that the unwinder is sure of (a "? " frame is a guess).
OOPS = re.compile(r"BUG: |Oops: |general protection fault|kernel BUG at |invalid opcode: ")
CALL_FRAME = re.compile(r"[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+")
TRACE_FRAMES = 4
# A panic without an oops (panic() called: out_of_memory(), a failed init) prints its trace
# from inside panic() (kernel/panic.c): these frames say nothing of what called it.
PANIC_FRAMES = re.compile(r"(?:dump_stack|dump_stack_lvl|vpanic|panic)\+")


def charged(running: list[str], pids: dict[str, int | None],
            vm_result: vm.VmResult) -> tuple[list[str], list[str]]:
    """The cut-off cases a VM's death is charged to, and the bystanders: with several workers
    in the guest, a panic in one worker's task (its own pid, or a thread named after it:
    runner's mutation thread, io_uring's iou-wrk-PID) is not the other cells' doing. Where
    the console names no worker's task (a kernel thread, an interrupt), or for a hang, every
    running cell is charged."""
    found = PANIC_TASK.findall(vm_result.console_tail) if vm_result.outcome == "panic" else []
    if not found:
        return running, []
    pid, comm = int(found[-1][0]), found[-1][1]
    mine = [i for i in running if pids.get(i) is not None
            and (pids[i] == pid or comm.endswith(f"-{pids[i]}"))]
    return (mine, [i for i in running if i not in mine]) if mine else (running, [])


def panic_lines(vm_result: vm.VmResult) -> list[str]:
    """What a boot that never reached its guest keeps of its console's panic
    (environment.lost_boots): the first oops line, where it happened (the first RIP line and
    the first frames of its call trace), then the last panic line and task line; without an
    oops, the panic line first, then the frames that called panic()."""
    if vm_result.outcome != "panic":
        return []
    lines = [line.strip() for line in vm_result.console_tail.splitlines()]
    # Each line's text after the console's timestamp, for the matching below.
    said = [line.split("] ", 1)[-1].strip() if line.startswith("[") else line for line in lines]
    oops = next((i for i, text in enumerate(said) if OOPS.match(text)), None)
    start = oops or 0
    where = [i for i in range(start, len(said)) if said[i].startswith("RIP: ")][:1]
    trace = next((i for i in range(start, len(said)) if said[i] == "Call Trace:"), None)
    if trace is not None:
        where += [i for i in range(trace + 1, len(said)) if CALL_FRAME.fullmatch(said[i])
                  and (oops is not None or not PANIC_FRAMES.match(said[i]))][:TRACE_FRAMES]
    panic = [line for line in lines if "Kernel panic" in line][-1:]
    task = [line for line in lines if PANIC_TASK.search(line)][-1:]
    if oops is None:
        return panic + [lines[i] for i in where] + task
    return [lines[oops]] + [lines[i] for i in where] + panic + task


def cut_off(ids: list[str], vm_result: vm.VmResult,
            bystanders: Sequence[str] = ()) -> list[dict]:
    """Records for the cases the VM died in: a panic or hang is a finding about the kernel, a
    stop is not; a bystander (charged()) is an error, cut off by another cell's panic. An id
    that is no case's (a stray parameter of an older run) is left out."""
    reason = f"{what_happened(vm_result)} while this case ran"
    cells = dict.fromkeys(i.rsplit(".", 1)[0] for i in ids)
    if len(cells) > 1:  # workers in the guest, and the console does not tell whose it was
        reason += (f", and so did {len(cells) - 1} more cell(s) in other workers: the console "
                   "does not say which caused it")
    first = next(iter(cells), "?")
    elsewhere = f"cut off: {what_happened(vm_result)} in {first}, another worker's cell"
    tail = vm_result.console_tail[-16384:]
    records = []
    for i in [*ids, *bystanders]:
        why = reason if i in ids else elsewhere
        if results.is_control(i):
            records.append(results.control(i, "error", why) | {"dmesg": tail})
            continue
        try:
            case = Case.from_id(i)
        except ValueError:
            continue
        seen = (("error", None) if vm_result.outcome == "stopped" or i not in ids
                else ("fail", "kernel-warning"))
        records.append(Result(case, *seen, reason=why, dmesg=tail).as_dict())
    return records


def collect(kernel: debian.Kernel, kdir: Path, vm_result: vm.VmResult, started: float) -> dict:
    """The kernel's results.json.gz, or what progress.jsonl kept when the VM died, marked
    incomplete with the reason."""
    if vm_result.outcome in ("ok", "failed") and (kdir / results.FILE).exists():
        return results.load(kdir / results.FILE)
    header, cases, running = results.read_progress(kdir)
    died = []
    if vm_result.outcome != "failed":
        mine, others = charged(running, results.running_pids(kdir), vm_result)
        died = cut_off(mine, vm_result, others)
    kernel_info = {"release": kernel.release, "version": kernel.package_version or "",
                   "machine": "x86_64"}
    doc = results.document(cases + died, kernel_info, {}, started, time.time())
    doc["cut_off"] = [c["id"] for c in died]
    if header.get("planned"):
        doc["planned"] = header["planned"]
    what = what_happened(vm_result)
    if vm_result.outcome == "failed":  # pytest in the guest stopped before its results: why
        what += f" ({vm.why_lost(vm_result.stderr + vm_result.stdout, 'it printed nothing')})"
    doc["incomplete"] = results.incomplete_text(what, len(cases), header.get("planned"),
                                                doc["cut_off"])
    return doc


def write_done(kdir: Path, earlier: list[dict], panics: list[dict]) -> None:
    """DONE for the boot after a panic: the ids recorded so far, and a line per panicked cell
    whose group is to skip (results.PANICKED); the last boot's progress is in `earlier` now."""
    cells = dict.fromkeys(i.rsplit(".", 1)[0] for p in panics for i in p["cut_off"])
    lines = [*(c["id"] for c in earlier), *(f"{results.PANICKED} {group_of(c)} {c}"
                                            for c in cells)]
    (kdir / DONE).write_text("".join(f"{line}\n" for line in lines))
    (kdir / GUEST_FILE).unlink(missing_ok=True)


def after_panics(doc: dict, earlier: list[dict], panics: list[dict], planned: int | None,
                 last: vm.VmResult, started: float) -> dict:
    """The last boot's document with the records of the boots before it, which panicked: their
    cut-off cells are failures, the rest ran on. The panics are listed in the document."""
    merged = results.document(earlier + doc["cases"], doc["kernel"], doc.get("probe", {}),
                              started, doc["finished"])
    if "incomplete" in doc:  # the last boot died too: count what every boot finished
        merged["cut_off"], merged["planned"] = doc["cut_off"], planned
        finished = len(merged["cases"]) - sum(len(p["cut_off"]) for p in panics)
        merged["incomplete"] = results.incomplete_text(
            what_happened(last), finished - len(doc["cut_off"]), planned, doc["cut_off"])
    merged["panics"] = panics
    return merged


def resolve_all(specs: list[str]) -> None:
    """Every kernel named, before the first one boots, so a bad spec is refused at once.
    debian-src: kernels are left to their turn: they build, with the run's patches."""
    for spec in specs:
        if not spec.startswith("debian-src:"):
            debian.resolve(spec)


def guest_kernel(spec: str, patches: Sequence[Path] = ()) -> debian.Kernel:
    """The kernel SPEC names (debian.resolve()), with the modules its guest loads
    uncompressed (kmodules.py)."""
    kernel = debian.resolve(spec, patches=patches)
    kmodules.uncompress(kernel, MODULES)
    return kernel


def run_kernel(spec: str, out: Path, pytest_args: list[str], timeout: float,
               patches: Sequence[Path] = (), imports: bundle.Packed | None = None) -> dict:
    t0 = time.monotonic()
    kernel = guest_kernel(spec, patches)
    if "--kernel-view" in pytest_args:  # the kernel view needs this kernel's DWARF
        print(f"pinhole matrix: {spec}: the kernel view needs debug info: fetching it if "
              "need be (a Debian kernel's -dbg package is about 1 GB)", flush=True)
        kernelview.fetch_debuginfo(kernel)
    fetch = time.monotonic() - t0
    cfg = kernel.config()
    try:
        version = parse_version(kernel.release)
    except ValueError:  # a build tree whose release says nothing ("unknown")
        version = None
    gaps = kbuild.config_gaps(cfg, version)
    for gap in gaps:
        print(f"pinhole matrix: {spec}: {gap}", flush=True)
    kdir = out / kernel.release
    kdir.mkdir(parents=True, exist_ok=True)
    for stale in (results.FILE, results.PLAIN, GUEST_FILE):
        (kdir / stale).unlink(missing_ok=True)
    fast, accel = vm.fast_boot(), None
    started = time.time()
    boots = tries = 0
    earlier: list[dict] = []  # the records of boots that panicked, cut-off cells included
    panics: list[dict] = []
    lost: list[str] = []  # why each boot that never reached the guest ended
    planned = None
    while True:
        boots += 1
        tries += 1
        # The guest's ports append to it (ports.py): each boot starts it afresh; a panicked
        # boot's lines are in `earlier` by now.
        (kdir / results.PROGRESS).unlink(missing_ok=True)
        args = [*pytest_args, f"--pinhole-done={kdir / DONE}"] if earlier else pytest_args
        try:
            if accel is None:  # a KVM probe may boot: inside the try, like the run itself
                accel = vm.accelerator(kernel)
                if accel == "tcg" and fast and vm.FAST_BOOT_ARGS:
                    print(f"pinhole matrix: {spec}: booted with {' '.join(vm.FAST_BOOT_ARGS)} "
                          f"on -cpu {vm.FAST_CPU} (TCG speed; {vm.FAST_BOOT_ENV}=0 keeps the "
                          "kernel's defaults)",
                          flush=True)
            res = vm.boot_and_run(kernel, guest_command(kernel, kdir, args, imports),
                                  timeout=timeout, append=PMEM_APPEND, rwdirs=[kdir],
                                  memory=GUEST_MEMORY, accel=accel, fast=fast,
                                  qemu=[ports.qemu_options(kdir / results.PROGRESS)],
                                  tries=1)  # a lost boot is tried again below, and reported
        except lifetime.Stopped as e:  # the VM is gone already (vm._run_vng): keep what ran
            res = vm.stopped(e.signum, time.time() - started)
            break
        came_up = (kdir / GUEST_FILE).exists() or res.outcome in ("ok", "failed")
        if came_up and res.outcome == "panic" and len(panics) < MAX_PANICS:
            header, cases, running = results.read_progress(kdir)
            if running:  # the guest died in a case: record it and boot for the rest
                planned = planned or header.get("planned")
                # Another worker's cell, cut off by this panic, runs again in the next boot.
                mine, again = charged(running, results.running_pids(kdir), res)
                earlier += cases + cut_off(mine, res)
                panics.append({"boot": boots, "cut_off": mine})
                write_done(kdir, earlier, panics)
                rerun = (f"; {len(again)} cases another worker was running run again"
                         if again else "")
                print(f"pinhole matrix: {spec}: the kernel panicked in {mine[0]}; booting "
                      f"again for the cases after it (its group's other cells skip{rerun})",
                      flush=True)
                tries = 0
                continue
        # A crash before the guest came up is the boot, not a case: booted again, as often as
        # vm.boot_and_run() would (here, for a fresh progress file and the line below).
        if came_up or tries >= vm.BOOT_TRIES:
            break
        lost.append(what_happened(res) + "".join(f": {line}" for line in panic_lines(res)))
        print(f"pinhole matrix: {spec}: the guest never came up ({lost[-1]}); booting again "
              f"({tries + 1} of {vm.BOOT_TRIES})", flush=True)
    doc = collect(kernel, kdir, res, started)
    (kdir / DONE).unlink(missing_ok=True)
    if earlier:
        doc = after_panics(doc, earlier, panics, planned, res, started)
    doc["environment"] = {
        "spec": spec, "package": kernel.package_version, "release": kernel.release,
        "config": {c: cfg.state(c) for c in CONFIGS}, "config_gaps": gaps,
        "accelerator": res.accel,
        "boot_options": [*vm.boot_options(res.accel, fast), *PMEM_APPEND],
        "cpu": vm.FAST_CPU if res.accel == "tcg" and fast else None,
        "qemu": qemu_version(), "vm": res.outcome, "vm_status": res.status, "boots": boots,
        "lost_boots": lost,
        "seconds": {"fetch": round(fetch, 1), "boot": round(res.boot_seconds, 1),
                    "run": round(res.run_seconds, 1)},
    }
    if res.outcome not in ("ok", "failed"):
        doc["environment"]["console_tail"] = res.console_tail
    results.write(kdir, doc)
    reports.write_all(kdir, [doc])
    return doc


def run(specs: list[str], out: Path, pytest_args: list[str], timeout: float,
        patches: Sequence[Path] = (), baseline: list[dict] | None = None) -> int:
    docs = []
    imports, why = bundle.prepare(cache_root() / "imports")
    if imports is None:
        print(f"pinhole matrix: the guests import over 9p, slower under TCG (packing their "
              f"imports failed: {why})", flush=True)
    for spec in specs:
        doc = run_kernel(spec, out, pytest_args, timeout, patches, imports)
        env = doc["environment"]
        # "failed" is the guest's exit status (a failed case is enough), not the VM's.
        vm_word = (f"vm ran, guest exit {env['vm_status']}" if env["vm"] == "failed"
                   else f"vm {env['vm']}")
        print(f"pinhole matrix: {spec} ({env['release']}, {env['accelerator']}): {vm_word}, "
              f"fetch {env['seconds']['fetch']} s, boot {env['seconds']['boot']} s, "
              f"run {env['seconds']['run']} s; {results.summary(doc['cases'])[0]}", flush=True)
        docs.append(doc)
        if env["vm"] == "stopped":
            break
    if len(docs) == 1:  # its own reports are the side-by-side ones: linked, not written again
        reports.link_all(out, out / docs[0]["environment"]["release"], docs, baseline)
    else:
        reports.write_all(out, docs, baseline)
    for a, b in zip(docs, docs[1:], strict=False):
        name = f"diff-{a['environment']['release']}-{b['environment']['release']}.txt"
        results.write_atomic(out / name, reports.diff.render(reports.diff.diff(a, b), a, b))
    print(reports.summary(docs), end="")
    if docs[-1]["environment"]["vm"] == "stopped":
        return 128 + docs[-1]["environment"]["vm_status"]
    return combined_exit([results.run_exit(d) for d in docs],
                         [d["environment"]["vm"] for d in docs])


def combined_exit(codes: list[int], vm_outcomes: list[str]) -> int:
    """A kernel finding anywhere wins; then a VM that could not run; then xpass; then skips."""
    if results.EXIT_FAIL in codes:
        return results.EXIT_FAIL
    if results.EXIT_HARNESS in codes or "lost" in vm_outcomes:
        return results.EXIT_HARNESS
    if results.EXIT_XPASS in codes:
        return results.EXIT_XPASS
    if all(c == results.EXIT_SKIP for c in codes):
        return results.EXIT_SKIP
    return results.EXIT_PASS
