"""What runs inside a `pinhole matrix` VM: load the drivers this kernel has, note what the
guest can do, then run the cases.

Usage (by multikernel.py, in the guest): python -m conformance.guest OUT [pytest args]
"""

from __future__ import annotations

import functools
import glob
import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pluggy

from . import bundle, cgroups, cpus, flakey, ports, results, scratch
from .abi import MCL_CURRENT, libc
from .backings import BACKINGS
from .backings.blockfs import BlockFs
from .kernelview.debuginfo import ENV as VMLINUX_ENV
from .mounts import mount_of
from .pins import MECHANISMS
from .syscalls import check

# What the backings, pin mechanisms and controls need loaded, each with what shows it built
# in (a driver built in has no module, and no /sys/module/<name> unless it has parameters).
# Each may be built in, a module, or absent.
DEVICES = {name: shows for part in (*BACKINGS.values(), *MECHANISMS.values())
           for name, shows in part.modules.items()} | flakey.MODULES
# The block backings' filesystems, loaded by name (preload_filesystems()).
FILESYSTEMS = sorted({b.fstype for b in BACKINGS.values() if issubclass(b, BlockFs)})
# Every module the guest loads by name: the host uncompresses them (kmodules.py).
MODULES = (*DEVICES, *FILESYSTEMS)
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_FILE = "guest.json"
# Set in the guest only: test hooks that would harm a host (a panic) check it.
IN_GUEST = "PINHOLE_IN_GUEST"
# Test-only: the case id in whose run the guest's kernel is made to panic (sysrq c).
PANIC_IN = "PINHOLE_TEST_PANIC_IN"
# The plugin modules pytest_addhooks() registers in a guest's xdist worker.
PLUGINS_ENV = "PINHOLE_GUEST_PLUGINS"
# Test-only: the cell id whose run waits a minute as it begins (plugin.hold_if_asked()).
HOLD_IN = "PINHOLE_TEST_HOLD_IN"


def start_modules() -> dict[str, subprocess.Popen | str]:
    """modprobe each driver that is not there yet, all at once and in the background: one
    after another they took 3-4 s of the guest's start under TCG, in line before pytest."""
    modprobe = shutil.which("modprobe", path=GUEST_PATH) or "modprobe"
    started: dict[str, subprocess.Popen | str] = {}
    for module in DEVICES:
        if os.path.exists(f"/sys/module/{module}") or glob.glob(DEVICES[module]):
            started[module] = "present"
            continue
        try:
            started[module] = subprocess.Popen([modprobe, module], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True)
        except OSError as e:
            started[module] = str(e)
    return started


def finish_modules(started: dict[str, subprocess.Popen | str]) -> dict[str, str]:
    """What start_modules() came to, per module, once every modprobe has ended."""
    loaded = {}
    for module, how in started.items():
        if isinstance(how, str):
            loaded[module] = how
            continue
        _, err = how.communicate()
        loaded[module] = "ok" if how.returncode == 0 else err.strip() or "failed"
    # A built-in rxe makes no device until a link is added; adding one is the only test.
    if loaded["rdma_rxe"] not in ("ok", "present") and _add_rxe_link():
        loaded["rdma_rxe"] = "built in"
    deadline = time.monotonic() + 5
    while loaded["nd_pmem"] == "ok" and not glob.glob("/dev/pmem*") and time.monotonic() < deadline:
        time.sleep(0.1)  # the pmem namespaces appear asynchronously
    return loaded


def preload_filesystems() -> subprocess.Popen | None:
    """Start loading the block backings' filesystem modules, in the background: done in
    line, by the first availability check's fsopen(), it took 8 s of the guest's start under
    TCG."""
    modprobe = shutil.which("modprobe", path=GUEST_PATH)
    if modprobe is None:
        return None
    return subprocess.Popen([modprobe, "-a", "-q", *FILESYSTEMS], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


class ModulesLoaded:
    """A pytest plugin that waits, before the run is planned, for the modules started in the
    background while Python imported pytest (one still initialising would look absent), then
    completes guest.json with what each came to."""

    def __init__(self, out: Path, guest: dict, filesystems: subprocess.Popen | None,
                 drivers: dict[str, subprocess.Popen | str], workers: bool,
                 plugins: list[str]) -> None:
        self.out, self.guest = out, guest
        self.filesystems, self.drivers = filesystems, drivers
        self.workers, self.plugins = workers, plugins

    @pluggy.HookimplMarker("pytest")(tryfirst=True)  # pytest.hookimpl, without pytest
    def pytest_configure(self) -> None:
        # For xdist's workers, which inherit the environment (this process has read it):
        # one plugin by name, which registers the others (pytest_addhooks()).
        os.environ["PYTEST_PLUGINS"] = "conformance.guest"
        os.environ[PLUGINS_ENV] = ",".join(self.plugins)
        self.guest["seconds"]["uptime_at_configure"] = _uptime()
        start = time.monotonic()
        if self.filesystems:
            self.filesystems.wait()
        self.guest["modules"] = finish_modules(self.drivers)
        self.guest["seconds"]["modules_wait"] = round(time.monotonic() - start, 2)
        write_guest(self.out, self.guest)

    # When the session began (the run planned, its spec loaded) and its items were
    # collected: the steps of the guest's start, for benchmarks/tcg.py.
    @pluggy.HookimplMarker("pytest")(tryfirst=True)
    def pytest_sessionstart(self) -> None:
        self.guest["seconds"]["uptime_at_session"] = _uptime()
        # xdist's workers lock their own (plugin.py); this process, their controller, runs
        # no cell and is in a cgroup of its own, where no memory.reclaim of theirs reaches.
        if self.workers:
            self.guest["mapped_pages"] = "not locked: xdist's workers run the cells"
        else:  # as a worker does (plugin.py); guest.json has how it came out later
            self.guest["mapped_pages"] = "locking"
            lock_in_background(functools.partial(self.guest.__setitem__, "mapped_pages"))
        write_guest(self.out, self.guest)

    @pluggy.HookimplMarker("pytest")
    def pytest_collection_finish(self) -> None:
        self.guest["seconds"]["uptime_at_collected"] = _uptime()
        write_guest(self.out, self.guest)

    @pluggy.HookimplMarker("pytest")
    def pytest_sessionfinish(self) -> None:
        write_guest(self.out, self.guest)  # mapped_pages, as the lock came to


def write_guest(out: Path, guest: dict) -> None:
    (out / GUEST_FILE).write_text(json.dumps(guest, indent=1) + "\n")


def _add_rxe_link() -> bool:
    from .pins.rdma import LINK

    rdma = shutil.which("rdma", path=GUEST_PATH)
    add = [rdma or "rdma", "link", "add", LINK, "type", "rxe", "netdev", "lo"]
    return rdma is not None and subprocess.run(add, capture_output=True).returncode == 0


def writable_tmpfs() -> str:
    """Where loop images go: a writable tmpfs (the guest sees the host's root read-only).
    O_DIRECT needs no filesystem of its own: the odirect pin writes a loop device raw."""
    for candidate in ("/tmp", "/run", "/dev/shm"):
        if scratch.is_tmpfs(candidate) and os.access(candidate, os.W_OK):
            return candidate
    return "/tmp"


def lock_mapped_pages() -> str:
    """mlockall(MCL_CURRENT) for a process that runs the guest's pytest: the cgroup-reclaim
    mutation's memory.reclaim took the interpreter's own mapped pages (its code, from the
    host's root over 9p without a cache), and each came back by a 9p read: 28 ms a reclaim
    under TCG, 3.5 ms with them locked. Only what is mapped now is locked: the files under
    test are mapped later, and reclaim sees them as ever. Returns what happened (guest.json's
    mapped_pages)."""
    try:
        check(libc.mlockall(MCL_CURRENT), "mlockall(MCL_CURRENT)")
    except OSError as e:
        return f"not locked: {e}"
    return "locked"


def lock_in_background(then: Callable[[str], object]) -> None:
    """lock_mapped_pages() in a thread of its own, for a process that runs cells: faulting in
    every mapped page over 9p took 2.8 s of a TCG guest's start, and only the cells'
    reclaims, later, are slower until it is done. then() gets what happened."""
    threading.Thread(target=lambda: then(lock_mapped_pages()), name="pinhole-mlock",
                     daemon=True).start()


def huge_scratch(where: str) -> tuple[str, str]:
    """A tmpfs of huge pages inside `where` for the loop images, and what it is. drop_caches
    (the drop-caches mutation) walks every cached page of every file: with a worker's three
    images in 4 KiB pages a drop took 33 ms under TCG, in 2 MiB pages 6 ms, for 36 MiB more
    memory. Where the kernel refuses huge= (no shmem THP), `where` itself."""
    own = os.path.join(where, "pinhole-scratch")
    os.makedirs(own, exist_ok=True)
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "huge=always", "pinhole-scratch", own],
                         capture_output=True, text=True)
    if run.returncode:
        return where, f"tmpfs {where} (a huge=always tmpfs failed: {run.stderr.strip()})"
    return own, f"tmpfs {own}, huge=always"


# 9p cache modes as /proc/mounts shows them: cache=<mode or hex flags> (6.6 on), or the bare
# mode name (before 6.6). none (0, not shown) is virtme-ng's: no guest page cache for data.
CACHE_MODES_9P = ("loose", "fscache", "mmap", "readahead", "writeback")


def progress_needs_sync(out: Path, mounts: str | None = None) -> tuple[bool, str]:
    """Whether progress.jsonl must be fsynced after every line to survive a panic of this
    kernel, and why. Not on an uncached 9p mount (virtme-ng's --rwdir): there every write(2)
    is a Twrite that reaches the host's file before it returns, so a guest panic cannot lose
    it, and an fsync only adds a 9p round trip and a flush of the host's disk, twice a case
    (benchmarks/tcg.py measures it). Anywhere else, or with any cache mode, it must."""
    found = mount_of(out, mounts)
    if found is None:
        return True, "the output directory's mount is unknown"
    fstype, options = found
    if fstype != "9p":
        return True, f"the output directory is on {fstype}"
    for opt in options:
        name, _, value = opt.partition("=")
        if (name == "cache" and value not in ("none", "0")) or name in CACHE_MODES_9P:
            return True, f"the output directory is on 9p with {opt}"
    return False, "the output directory is on uncached 9p: each write reaches the host"


def _uptime() -> float | None:
    try:
        return round(float(Path("/proc/uptime").read_text().split()[0]), 2)
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str]) -> int:
    out, pytest_args = Path(argv[0]), argv[1:]
    # progress.jsonl must survive a panic of this kernel; the caller may force fsync either way.
    forced = os.environ.get(results.SYNC_ENV)
    if forced is None:
        sync, why = progress_needs_sync(out)
    else:
        sync, why = forced not in ("", "0"), f"{results.SYNC_ENV}={forced}"
    if sync:
        os.environ[results.SYNC_ENV] = "1"
    else:
        os.environ.pop(results.SYNC_ENV, None)
    os.environ[IN_GUEST] = "1"
    # Where the guest's time goes before pytest (benchmarks/tcg.py reads it): seconds since
    # boot when this interpreter was ready, and how long pytest then waited for the modules.
    seconds = {"uptime_at_main": _uptime()}
    cgroup = cgroups.enter_own()  # before any thread or child: they would stay behind
    # Started first, so they may run on the other vCPU while this one imports pytest.
    filesystems, drivers = preload_filesystems(), start_modules()
    workers = cpus.asks_for_workers(pytest_args)
    cpu = None if workers else cpus.keep_to_first_cpu()
    where, scratch_is = huge_scratch(writable_tmpfs())
    os.environ[scratch.ENV] = where
    imports = (f"{bundle.GUEST_ZIP}, then the host's root over 9p"
               if bundle.GUEST_ZIP in sys.path else "the host's root over 9p")
    own = mount_of(Path(__file__).parent)
    imports += (f"; pinhole's own from {bundle.GUEST_PROJECT}, bound over the checkout's"
                if own and own[0] == "tmpfs" else "; pinhole's own from the checkout")
    guest = {"modules": "loading", "scratch": scratch_is, "cpu": cpu, "cgroup": cgroup,
             "imports": imports,
             "progress_ports": ports.described(),
             "progress_fsync": sync, "progress_fsync_why": why, "seconds": seconds,
             "vmlinux": os.environ.get(VMLINUX_ENV)}  # for the kernel view, if known
    # Written first: its presence tells the host the guest came up, should the kernel die.
    write_guest(out, guest)
    import pytest

    seconds["uptime_at_pytest"] = _uptime()

    # Plugins by module, registered as pytest.main()'s objects here and by pytest_addhooks()
    # below in xdist's workers: pytest looks every plugin it is given by name (-p,
    # PYTEST_PLUGINS, a conftest's pytest_plugins) up among every installed distribution's
    # entry points first, 0.7 s a name under TCG in each process, and one of the same name
    # already registered spares it that.
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    names = [*named_plugins(pytest_args), "conformance.plugin"]
    root = Path(__file__).resolve().parent.parent
    # --assert=plain: the cases need no assertion rewriting, and importing it is seconds
    # under TCG.
    return pytest.main([str(root / "cases"), "-p", "no:cacheprovider", "-q", "--assert=plain",
                        f"--pinhole-out={out}", *pytest_args],
                       plugins=[ModulesLoaded(out, guest, filesystems, drivers, workers, names),
                                *map(importlib.import_module, names)])


def pytest_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """In a guest's xdist worker, where this module is the one plugin PYTEST_PLUGINS names
    (ModulesLoaded): the run's other plugins, registered by module under the names pytest
    would give them, so that it looks none of them up among the entry points."""
    for name in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
        if not pluginmanager.has_plugin(name):
            pluginmanager.register(importlib.import_module(name), name)


def named_plugins(pytest_args: list[str]) -> list[str]:
    """The modules of the pytest plugins the guest's run needs, for pytest with autoloading
    off: pytest-timeout, and xdist only for -n (workers, or -n 0). A user's other plugin comes
    with -p NAME."""
    given = {name.removeprefix("no:") for name in plugin_args(pytest_args)}
    timeout = [] if given & {"pytest_timeout", "timeout"} else ["pytest_timeout"]
    workers = (cpus.numprocesses(pytest_args) is not None
               and not given & {"xdist", "xdist.plugin"})
    return [*timeout, *(["xdist.plugin"] if workers else [])]


def plugin_args(pytest_args: list[str]) -> list[str]:
    """The names pytest's arguments give to -p (-p NAME, -pNAME): a plugin named twice is an
    error ("already registered"), and one the user blocks (-p no:NAME) stays blocked."""
    return [*(b for a, b in zip(pytest_args, pytest_args[1:], strict=False) if a == "-p"),
            *(a[2:] for a in pytest_args if a.startswith("-p") and len(a) > 2)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
