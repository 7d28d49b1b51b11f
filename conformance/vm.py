"""Boot a kernel with virtme-ng (vng) and run one command inside it.

The guest sees the host's root filesystem over 9p, read-only except for --rwdir directories.
The command's exit status, stdout and stderr travel back through files in a private writable
directory, because vng only propagates them when the guest has udev (virtio-serial port names).
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .cache import cache_root
from .debian import Kernel

# vCPUs a VM gets: with two, the guest's pytest and the kernel threads it wakes each have one.
CPUS = 2

# oops=panic and vng's own panic=-1 and -no-reboot turn an oops into the end of the VM.
BOOT_ARGS = ("oops=panic",)
# udev coldplug would load kvm_amd/kvm_intel in the guest: seconds under TCG, and useless there.
TCG_ARGS = ("module_blacklist=kvm,kvm_amd,kvm_intel",)
# Drivers that udev's coldplug loads in a virtme-ng guest of a packaged kernel for qemu's
# emulated q35 hardware (SATA and its CD-ROM, SMBus, LPC and TCO watchdogs, PC speaker, PS/2
# mouse, cpufreq) and for CPU features (AES, SHA, GHASH): each is read over 9p, decompressed
# and initialised under emulation, and none is used by pinhole. The crc32c driver stays (ext4,
# btrfs and rdma_rxe checksum with it), and so does everything pinhole loads (guest.DEVICES).
IDLE_DRIVERS = ("ahci", "libahci", "sr_mod", "cdrom", "sg", "i2c_i801", "i2c_smbus", "lpc_ich",
                "iTCO_wdt", "iTCO_vendor_support", "intel_pmc_bxt", "i6300esb", "pcspkr",
                "psmouse", "serio_raw", "evdev", "powernow_k8", "aesni_intel",
                "ghash_clmulni_intel", "sha1_ssse3", "sha256_ssse3", "sha512_ssse3")
# Appended under TCG unless fast=False (PINHOLE_FAST_BOOT=0, see fast_boot()): what makes a
# packaged kernel cheaper to emulate without touching what pinhole tests (README, "TCG
# speed"; benchmarks/tcg.py measures it). mitigations=off: the kernel's defences against
# speculative-execution leaks (page-table isolation, retpolines, barriers after access_ok(),
# buffer clearing, RSB filling, IBPB): TCG does not speculate, so they defend nothing there,
# and no mm code path (GUP, pinning, page cache, faults) tests them. modprobe.blacklist=
# (kmod's, applied to udev's alias loads only, not to a modprobe by name): IDLE_DRIVERS.
FAST_BOOT_ARGS: tuple[str, ...] = ("mitigations=off",
                                   "modprobe.blacklist=" + ",".join(IDLE_DRIVERS))
# With them, the CPU model: vng's TCG "max" without ERMS. With ERMS the kernel copies and
# clears with "rep movsb" / "rep stosb" (arch/x86/lib/copy_user_64.S, clear_page_64.S), which
# TCG runs a byte at a time; without it, "rep movsq" and unrolled loops: a 2 MiB read() from
# the page cache took 9-11 ms in the guest with ERMS, 2-3 ms without. Speed only: the same
# code paths in mm/ run either way.
FAST_CPU = "max,-erms"
KVM_PROBE_TIMEOUT = 60.0
CONSOLE_TAIL = 60
# With oops=panic every oops ends in this line too.
PANIC_MARK = "Kernel panic - not syncing"

# A VM's work directory holds this file locked for as long as its pinhole lives.
LOCK = "lock"
# A work directory without a lock this old is no live run's (its lock comes microseconds
# after it is made); one younger than GRACE_S is left alone either way.
STALE_S, GRACE_S = 600, 60
# A guest that has not come up this long after its boot began has hung (seen under TCG: an
# RCU stall while virtme-ng's init mounted the root, its timers stopped on one vCPU); its boot
# is lost and tried again, not waited on for the run's whole timeout. Guests come up in 15-30
# s under TCG on 2 cores.
BOOT_TIMEOUT_S = 300.0
BOOT_POLL_S = 1.0
# A boot that ends before its guest starts the command (hung, as above, or a panic of the
# kernel's own boot: one Debian 6.12 boot of about 40 under TCG, "Fatal exception in
# interrupt" in swapper/0 at 2.9 s, 2026-11-27) says nothing of the command: boot_and_run()
# boots that many times in all before it gives up.
BOOT_TRIES = 2

WRAPPER = """\
read -r start _ < /proc/uptime
echo "$start" > {dir}/started
(
{command}
) > {dir}/stdout 2> {dir}/stderr < /dev/null
rc=$?
read -r end _ < /proc/uptime
echo "$rc $start $end" > {dir}/status.tmp && mv {dir}/status.tmp {dir}/status
"""


@dataclass(frozen=True)
class VmResult:
    # ok (status 0), failed (status != 0), timeout, panic, lost (the VM ended without status),
    # or stopped (pinhole was; status is the signal)
    outcome: str
    status: int | None
    stdout: str
    stderr: str
    console_tail: str
    accel: str
    # Everything but the command itself: vng's setup, qemu, kernel boot, init, power-off.
    boot_seconds: float
    run_seconds: float
    total_seconds: float
    command_line: list[str]
    # Why a VM that never reached its command ended: vng's or qemu's last error line.
    why: str = ""
    # Whether the guest started the command; the boots before this one that never did.
    came_up: bool = False
    lost: tuple[VmResult, ...] = ()


# vng and qemu say what went wrong on lines like these ("virtme-run: not found", "qemu-system-
# x86_64: ... No such file or directory", "Could not access KVM kernel module").
ERROR_WORDS = ("error", "not found", "no such file", "could not", "cannot", "failed",
               "permission denied", "unable")


def why_lost(console: str, silent: str = "no output at all from vng") -> str:
    """The last line of the log that says what failed, else its last line, else `silent`."""
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    said = [line for line in lines if any(w in line.lower() for w in ERROR_WORDS)]
    return (said or lines or [silent])[-1][:500]


def stopped(signum: int, seconds: float) -> VmResult:
    """The result of a VM stopped because pinhole was (Ctrl-C, SIGTERM): status is signum."""
    return VmResult("stopped", signum, "", "", "", "", seconds, 0.0, seconds, [],
                    f"stopped by {signal.Signals(signum).name}")


def tool_env() -> dict[str, str]:
    """The environment vng runs in: pinhole's own bin directory first on PATH, where pip put
    vng's helpers (virtme-run, virtme-ng-init), even when .venv/bin is not on the caller's."""
    here = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([here, os.environ.get("PATH") or os.defpath])}


def vng_binary() -> str:
    beside = Path(sys.executable).parent / "vng"
    found = str(beside) if beside.exists() else shutil.which("vng")
    if found is None:
        raise FileNotFoundError("vng not found: pip install virtme-ng "
                                "(and apt-get install qemu-system-x86 kmod busybox-static)")
    return found


FAST_BOOT_ENV = "PINHOLE_FAST_BOOT"


def fast_boot() -> bool:
    """Whether FAST_BOOT_ARGS go on a TCG guest's command line: yes unless the user keeps the
    kernel's own defaults with PINHOLE_FAST_BOOT=0."""
    return os.environ.get(FAST_BOOT_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def boot_options(accel: str, fast: bool = True) -> tuple[str, ...]:
    """What pinhole appends to every kernel's command line, before the caller's own."""
    tcg = accel == "tcg"
    return (*BOOT_ARGS, *(TCG_ARGS if tcg else ()), *(FAST_BOOT_ARGS if tcg and fast else ()))


# The only characters virtme-ng accepts in an --rwdir path (virtme/commands/run.py
# _SAFE_PATH_PATTERN); it refuses any other path once qemu is about to start.
RWDIR_PATH = re.compile(r"[a-zA-Z0-9_+ /.-]+")


def unshareable(path: Path) -> str | None:
    """Why virtme-ng cannot give a guest this directory read-write, or None."""
    if RWDIR_PATH.fullmatch(str(path)):
        return None
    bad = sorted({c for c in str(path) if not RWDIR_PATH.fullmatch(c)})
    return (f"the VM writes there through virtme-ng's --rwdir, which takes only letters, digits "
            f"and \"_+ /.-\" in a path, not {' '.join(map(repr, bad))}; choose another "
            "directory")


def vng_command(kernel: Kernel, shell: str, *, accel: str, append: Sequence[str] = (),
                rwdirs: Sequence[Path] = (), memory: str = "2G", cpus: int = CPUS,
                vng: str = "vng", fast: bool = False, qemu: Sequence[str] = ()) -> list[str]:
    """The vng command line that boots kernel and runs shell inside it; fast adds
    FAST_BOOT_ARGS and FAST_CPU under TCG, and qemu more of QEMU's options (each a string of
    them, split at spaces by vng)."""
    cmd = [vng, "--verbose", "--force-9p", "--cpus", str(cpus), "--memory", memory,
           "--run", str(kernel.build_dir or kernel.vmlinuz)]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    for arg in (*boot_options(accel, fast), *append):
        cmd += ["--append", arg]
    for d in rwdirs:
        why = unshareable(d)
        if why:
            raise ValueError(f"{d}: {why}")
        cmd += ["--rwdir", str(d)]
    if accel == "tcg" and fast:
        cmd.append(f"--qemu-opts=-cpu {FAST_CPU}")  # one argument: a later -cpu wins
    cmd += [f"--qemu-opts={opts}" for opts in qemu]
    return [*cmd, "--exec", shell]


def _tail(text: str, lines: int = CONSOLE_TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run_vng(cmd: list[str], timeout: float, console: Path, came_up: Path | None = None,
             boot_timeout: float = BOOT_TIMEOUT_S) -> tuple[int | None, float, bool]:
    """Run vng in its own process group; on timeout end the group (vng and its qemu), and so
    when came_up (a file the guest writes once it runs) is given and still absent
    boot_timeout seconds after the start. Returns the exit status (None if ended), the
    seconds, and whether it was ended for never coming up."""
    start = time.monotonic()
    hung = False
    with console.open("wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=tool_env())
        watcher = _watch_group(proc.pid)
        try:
            rc: int | None = None
            while rc is None:
                left = timeout - (time.monotonic() - start)
                try:
                    rc = proc.wait(timeout=max(min(left, BOOT_POLL_S), 0))
                except subprocess.TimeoutExpired:
                    waited = time.monotonic() - start
                    hung = (came_up is not None and waited > boot_timeout
                            and not came_up.exists())
                    if waited >= timeout or hung:
                        _stop_group(proc)
                        break
                    if came_up is not None and came_up.exists():
                        came_up = None  # up: only the whole run's timeout is left
        except BaseException:  # Ctrl-C or SIGTERM of pinhole: the VM goes with it
            _stop_group(proc)
            raise
        finally:
            _wait_group_gone(proc.pid)
            watcher.kill()
            watcher.wait()
    return rc, time.monotonic() - start, hung


def _watch_group(pgid: int) -> subprocess.Popen:
    """A watcher that kills the VM's process group when pinhole dies, even by SIGKILL: qemu is
    vng's grandchild, beyond the reach of PR_SET_PDEATHSIG. pinhole holds its stdin open."""
    code = (f"import contextlib, os, sys; sys.stdin.read()\n"
            f"with contextlib.suppress(OSError): os.killpg({pgid}, 9)")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            start_new_session=True)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT first (vng then cleans up its /tmp/virtme_ret* file), SIGKILL after 5 s."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _wait_group_gone(proc.pid)


def _wait_group_gone(pgid: int, limit: float = 5.0) -> None:
    """qemu outlives vng for a moment (it is vng's child): wait until the group is gone."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _verdict_file() -> Path:
    return cache_root() / "vm" / "kvm-verdict"


def accelerator(kernel: Kernel, *, probe_timeout: float = KVM_PROBE_TIMEOUT) -> str:
    """kvm when a tiny KVM boot of kernel works on this host, else tcg; the verdict is cached.

    /dev/kvm can exist and still hang or crash a guest (nested virtualization), so it is tried.
    """
    if os.environ.get("PINHOLE_ACCEL") in ("kvm", "tcg"):
        return os.environ["PINHOLE_ACCEL"]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = f"{os.uname().release} {shutil.which('qemu-system-x86_64')}"
    verdict = _verdict_file()
    if verdict.is_file():
        cached_key, _, accel = verdict.read_text().strip().rpartition(" ")
        if cached_key == key and accel in ("kvm", "tcg"):
            return accel
    # One KVM boot: a second would only double the wait where nested KVM hangs.
    if boot_and_run(kernel, "true", timeout=probe_timeout, accel="kvm", tries=1).outcome == "ok":
        accel = "kvm"
    elif boot_and_run(kernel, "true", timeout=probe_timeout, accel="tcg").outcome == "ok":
        accel = "tcg"  # TCG reaches the guest where KVM did not: KVM is what fails here
    else:
        return "tcg"  # nothing boots (vng broken, say): no verdict about KVM to keep
    verdict.parent.mkdir(parents=True, exist_ok=True)
    verdict.write_text(f"{key} {accel}\n")
    return accel


def boot_and_run(kernel: Kernel, command: list[str] | str, *, timeout: float,
                 append: Sequence[str] = (), rwdirs: Sequence[Path] = (), memory: str = "2G",
                 cpus: int = CPUS, accel: str | None = None,
                 fast: bool | None = None, qemu: Sequence[str] = (),
                 tries: int = BOOT_TRIES) -> VmResult:
    """Boot kernel, run command (argv list, or a shell string) as root, power off.

    timeout covers each boot, boot included; a guest that has not started the command
    BOOT_TIMEOUT_S after the boot began is stopped, its outcome "lost" (a hung boot).
    A boot that panicked or was lost before the command started is booted again, up to
    `tries` boots in all; the result's `lost` holds those boots.
    accel None detects it (see accelerator()).
    fast appends FAST_BOOT_ARGS under TCG; None: unless PINHOLE_FAST_BOOT=0 (fast_boot()).
    qemu: more of QEMU's options (vng_command()).
    """
    accel = accel or accelerator(kernel)
    fast = fast_boot() if fast is None else fast
    lost: list[VmResult] = []
    while True:
        res = _boot_once(kernel, command, timeout=timeout, append=append, rwdirs=rwdirs,
                         memory=memory, cpus=cpus, accel=accel, fast=fast, qemu=qemu)
        if res.came_up or res.outcome not in ("panic", "lost") or len(lost) + 1 >= tries:
            return replace(res, lost=tuple(lost))
        lost.append(res)


def _boot_once(kernel: Kernel, command: list[str] | str, *, timeout: float,
               append: Sequence[str], rwdirs: Sequence[Path], memory: str, cpus: int,
               accel: str, fast: bool, qemu: Sequence[str]) -> VmResult:
    """One boot of boot_and_run()."""
    shell = command if isinstance(command, str) else shlex.join(command)
    base = cache_root() / "vm"
    base.mkdir(parents=True, exist_ok=True)
    sweep(base)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    # Held while the VM runs: a directory whose lock is free belongs to a dead pinhole.
    lock = os.open(work / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        script = work / "run.sh"
        script.write_text(WRAPPER.format(command=shell, dir=shlex.quote(str(work))))
        cmd = vng_command(kernel, f"/bin/sh {shlex.quote(str(script))}", accel=accel,
                          append=append, rwdirs=[work, *rwdirs], memory=memory, cpus=cpus,
                          vng=vng_binary(), fast=fast, qemu=qemu)
        rc, total, hung = _run_vng(cmd, timeout, work / "console", came_up=work / "started")
        console = _read(work / "console")
        fields = _read(work / "status").split()
        status = int(fields[0]) if fields else None
        run = float(fields[2]) - float(fields[1]) if fields else 0.0
        if hung:
            outcome = "lost"
        elif rc is None:
            outcome = "timeout"
        elif PANIC_MARK in console:
            outcome = "panic"
        elif status is None:
            outcome = "lost"
        else:
            outcome = "ok" if status == 0 else "failed"
        why = why_lost(console) if outcome in ("lost", "timeout") else ""
        if hung:
            why = (f"stopped: the guest had not come up {BOOT_TIMEOUT_S:.0f} s after its boot "
                   f"began; the console's last word: {why}")
        return VmResult(outcome, status, _read(work / "stdout"), _read(work / "stderr"),
                        _tail(console), accel, total - run, run, total, cmd, why,
                        came_up=(work / "started").exists())
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(lock)


def sweep(base: Path) -> None:
    """Remove the work directories that a killed pinhole left (SIGKILL skips its clean-up):
    those whose lock nobody holds, or, without a lock (made before locks were), older than
    STALE_S. One younger than GRACE_S may be a run's between mkdtemp() and its lock."""
    for work in base.glob("run-*"):
        try:
            age = time.time() - work.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < GRACE_S:
            continue
        try:
            fd = os.open(work / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if age > STALE_S:
                shutil.rmtree(work, ignore_errors=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(work, ignore_errors=True)
        except BlockingIOError:
            pass  # a live run's
        finally:
            os.close(fd)
