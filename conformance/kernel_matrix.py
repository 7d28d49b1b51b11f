"""pinhole matrix: the suite on several kernels, each booted in a VM with virtme-ng, and one
report that puts the kernels side by side.

Each kernel gets OUT/<release>/ with its own results.json, reports and the environment it ran
in; the merged reports and a diff between consecutive kernels go to OUT/.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import kernels, reports, results, vm
from .guest import GUEST_FILE
from .matrix import Case
from .verdict import Result

ROOT = Path(__file__).resolve().parent.parent
# Two memmap regions become /dev/pmem0 and /dev/pmem1, one per dax backing (mkfs.xfs wants
# 300 MiB); adjacent regions would merge into one, hence the gap. Below 2 GiB, where q35 puts
# low memory for a 4 GiB guest, which keeps 3 GiB of RAM.
PMEM_APPEND = ("memmap=512M!768M", "memmap=512M!1408M")
GUEST_MEMORY = "4G"
CONFIGS = ("CONFIG_FS_DAX", "CONFIG_BLK_DEV_PMEM", "CONFIG_RDMA_RXE", "CONFIG_UDMABUF",
           "CONFIG_GUP_TEST", "CONFIG_IO_URING", "CONFIG_TRANSPARENT_HUGEPAGE")


def qemu_version() -> str:
    try:
        run = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    except OSError:
        return "not found"
    return run.stdout.splitlines()[0] if run.stdout else "unknown"


def guest_command(kernel: kernels.Kernel, out: Path, pytest_args: list[str]) -> str:
    argv = [sys.executable, "-m", "conformance.guest", str(out), *pytest_args]
    env = "PYTHONDONTWRITEBYTECODE=1"
    if kernel.config_path:
        env += f" PINHOLE_KERNEL_CONFIG={shlex.quote(str(kernel.config_path))}"
    return f"cd {shlex.quote(str(ROOT))} && {env} exec {shlex.join(argv)}"


def cut_off(ids: list[str], vm_result: vm.VmResult) -> list[dict]:
    """Records for the cases the VM died in: a panic or hang is a finding about the kernel."""
    what = {"panic": "the kernel panicked", "timeout": "the VM hit its time limit",
            "lost": "the VM ended without a status"}[vm_result.outcome]
    return [Result(Case.from_id(i), "fail", "kernel-warning", reason=f"{what} while this case ran",
                   dmesg=vm_result.console_tail[-16384:]).as_dict() for i in ids]


def collect(kernel: kernels.Kernel, kdir: Path, vm_result: vm.VmResult, started: float) -> dict:
    """The kernel's results.json, or what progress.jsonl kept when the VM died."""
    if vm_result.outcome in ("ok", "failed") and (kdir / "results.json").exists():
        return results.load(kdir / "results.json")
    cases, running = results.recover(kdir)
    if vm_result.outcome != "failed":
        cases += cut_off(running, vm_result)
    kernel_info = {"release": kernel.release, "version": kernel.package_version or "",
                   "machine": "x86_64"}
    return results.document(cases, kernel_info, {}, started, time.time())


def run_kernel(spec: str, out: Path, pytest_args: list[str], timeout: float) -> dict:
    t0 = time.monotonic()
    kernel = kernels.resolve(spec)
    fetch = time.monotonic() - t0
    kdir = out / kernel.release
    kdir.mkdir(parents=True, exist_ok=True)
    for stale in (results.PROGRESS, "results.json", GUEST_FILE):
        (kdir / stale).unlink(missing_ok=True)
    started = time.time()
    boots = 0
    while True:
        boots += 1
        res = vm.boot_and_run(kernel, guest_command(kernel, kdir, pytest_args), timeout=timeout,
                              append=PMEM_APPEND, rwdirs=[kdir], memory=GUEST_MEMORY)
        # A crash before the guest came up is the boot, not a case: once more (seen under TCG).
        if (kdir / GUEST_FILE).exists() or res.outcome in ("ok", "failed") or boots == 2:
            break
    doc = collect(kernel, kdir, res, started)
    cfg = kernel.config()
    doc["environment"] = {
        "spec": spec, "package": kernel.package_version, "release": kernel.release,
        "config": {c: cfg.state(c) for c in CONFIGS}, "accelerator": res.accel,
        "qemu": qemu_version(), "vm": res.outcome, "vm_status": res.status, "boots": boots,
        "seconds": {"fetch": round(fetch, 1), "boot": round(res.boot_seconds, 1),
                    "run": round(res.run_seconds, 1)},
    }
    if res.outcome not in ("ok", "failed"):
        doc["environment"]["console_tail"] = res.console_tail
    results.write(kdir, doc)
    reports.write_all(kdir, [doc])
    return doc


def run(specs: list[str], out: Path, pytest_args: list[str], timeout: float) -> int:
    docs = []
    for spec in specs:
        doc = run_kernel(spec, out, pytest_args, timeout)
        env = doc["environment"]
        print(f"pinhole matrix: {spec} ({env['release']}, {env['accelerator']}): vm {env['vm']}, "
              f"fetch {env['seconds']['fetch']} s, boot {env['seconds']['boot']} s, "
              f"run {env['seconds']['run']} s; {results.summary(doc['cases'])[0]}", flush=True)
        docs.append(doc)
    reports.write_all(out, docs)
    for a, b in zip(docs, docs[1:], strict=False):
        name = f"diff-{a['environment']['release']}-{b['environment']['release']}.txt"
        results.write_atomic(out / name, reports.diff.render(reports.diff.diff(a, b), a, b))
    print(reports.summary(docs), end="")
    return combined_exit([results.exit_code(d["cases"]) for d in docs],
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
