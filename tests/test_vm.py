"""The VM's boot options and the guest's choices, without booting anything; and one real boot
that panics before its command, to show it is booted again."""

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import guest, vm
from conformance.debian import Kernel, KernelNotFound, resolve
from conformance.mounts import mount_of

KERNEL = Kernel("6.12.118+deb13-amd64", "6.12.118-1", Path("/k/boot/vmlinuz"),
                Path("/k/boot/config"))


def appended(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "--append"]


def test_fast_boot_options_only_under_tcg() -> None:
    tcg = appended(vm.vng_command(KERNEL, "true", accel="tcg", fast=True))
    assert tcg[:2] == ["oops=panic", "module_blacklist=kvm,kvm_amd,kvm_intel"]
    assert tcg[2:] == list(vm.FAST_BOOT_ARGS)
    assert appended(vm.vng_command(KERNEL, "true", accel="tcg", fast=False)) == tcg[:2]
    assert appended(vm.vng_command(KERNEL, "true", accel="kvm", fast=True)) == ["oops=panic"]


def test_the_fast_cpu_model_only_under_tcg() -> None:
    """One vng argument (vng's --qemu-opts takes one), after vng's own -cpu max, so QEMU
    takes it; none where the kernel's defaults are kept, or under KVM (-cpu host)."""
    def opts(accel: str, fast: bool) -> list[str]:
        cmd = vm.vng_command(KERNEL, "true", accel=accel, fast=fast)
        return [a for a in cmd if a.startswith("--qemu-opts")]

    assert opts("tcg", True) == [f"--qemu-opts=-cpu {vm.FAST_CPU}"]
    assert "-erms" in vm.FAST_CPU.split(",")
    assert opts("tcg", False) == opts("kvm", True) == []


def test_the_callers_options_come_last() -> None:
    """The kernel takes the last of a repeated option: the caller's own wins over pinhole's."""
    cmd = vm.vng_command(KERNEL, "true", accel="tcg", fast=True, append=["mitigations=auto"])
    assert appended(cmd)[-1] == "mitigations=auto"


def test_no_fast_option_is_one_that_may_change_a_verdict() -> None:
    """What may change what a pinned page or a file reads is never a default: page zeroing
    and poisoning, THP, preemption, memory layout, the allocator's debugging."""
    risky = ("init_on_alloc", "init_on_free", "page_poison", "slub_debug", "transparent_hugepage",
             "preempt", "memmap", "mem=", "hugepages", "numa", "kfence", "nohz")
    assert not [o for o in vm.FAST_BOOT_ARGS if o.startswith(risky)]


@pytest.mark.parametrize("value,fast", [(None, True), ("1", True), ("0", False),
                                        ("no", False), ("off", False)])
def test_pinhole_fast_boot_env(monkeypatch: pytest.MonkeyPatch, value: str | None,
                               fast: bool) -> None:
    if value is None:
        monkeypatch.delenv(vm.FAST_BOOT_ENV, raising=False)
    else:
        monkeypatch.setenv(vm.FAST_BOOT_ENV, value)
    assert vm.fast_boot() is fast


MOUNTS = """\
/dev/root / 9p ro,relatime,access=any,msize=524288,trans=virtio 0 0
tmpfs /tmp tmpfs rw,relatime 0 0
run /root/.cache/pinhole/vm/run-x 9p rw,relatime,access=any,msize=524288,trans=virtio 0 0
out /srv/out\\040dir 9p rw,relatime,access=any,trans=virtio 0 0
loose /srv/loose 9p rw,relatime,loose,access=any,trans=virtio 0 0
new /srv/cached 9p rw,relatime,cache=f,access=any,trans=virtio 0 0
none /srv/none 9p rw,relatime,cache=none,access=any,trans=virtio 0 0
"""


@pytest.mark.parametrize("path,sync", [
    ("/root/.cache/pinhole/vm/run-x/6.12", False),  # virtme-ng's --rwdir: no guest cache
    ("/srv/out dir/6.1", False),                     # an escaped space in the mount point
    ("/srv/none", False),
    ("/srv/loose/k", True),                          # before 6.6 the mode shows bare
    ("/srv/cached/k", True),                         # 6.6 on: cache=<hex flags>
    ("/tmp/out", True),                              # not on the host at all
])
def test_progress_is_fsynced_only_where_a_write_may_stay_in_the_guest(
        path: str, sync: bool) -> None:
    needed, why = guest.progress_needs_sync(Path(path), MOUNTS)
    assert needed is sync, why


def test_the_longest_mount_point_wins() -> None:
    assert mount_of(Path("/root/.cache/pinhole/vm/run-x/a"), MOUNTS)[0] == "9p"
    assert mount_of(Path("/tmp/a"), MOUNTS)[0] == "tmpfs"
    assert mount_of(Path("/tmpfoo"), MOUNTS)[1][0] == "ro"  # / , not /tmp


def test_the_blacklist_spares_what_pinhole_loads_and_checksums_with() -> None:
    assert not set(vm.IDLE_DRIVERS) & set(guest.DEVICES)
    assert not [d for d in vm.IDLE_DRIVERS if d.startswith(("crc", "rdma", "ib_", "nd_", "dax"))]
    blacklist = next(o for o in vm.FAST_BOOT_ARGS if o.startswith("modprobe.blacklist="))
    assert " " not in blacklist


def test_the_guest_gets_a_forced_progress_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import multikernel, results

    monkeypatch.setenv(results.SYNC_ENV, "1")
    assert f"{results.SYNC_ENV}=1 " in multikernel.guest_command(KERNEL, Path("/o"), [])
    monkeypatch.delenv(results.SYNC_ENV)
    assert results.SYNC_ENV not in multikernel.guest_command(KERNEL, Path("/o"), [])


def test_a_killed_runs_work_directory_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    """SIGKILL skips boot_and_run()'s clean-up; the next boot removes what it left."""
    def work(name: str, age: float, locked: bool | None) -> Path:
        path = tmp_path / name
        path.mkdir()
        if locked is not None:
            fd = os.open(path / vm.LOCK, os.O_RDWR | os.O_CREAT)
            if locked:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held.append(fd)
            else:
                os.close(fd)
        then = time.time() - age
        os.utime(path, (then, then))
        return path

    held: list[int] = []
    dead = work("run-dead", 3600, False)
    live = work("run-live", 3600, True)
    young = work("run-young", 1, False)  # between mkdtemp() and its lock
    old = work("run-old", vm.STALE_S + 1, None)  # before locks
    recent = work("run-recent", vm.GRACE_S + 1, None)
    vm.sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-live", "run-recent", "run-young"]
    assert not dead.exists() and not old.exists() and live.exists() and young.exists()
    assert recent.exists()
    for fd in held:
        os.close(fd)


def test_a_directory_virtme_ng_cannot_share_is_named_before_the_boot() -> None:
    assert vm.unshareable(Path("/tmp/pinhole-runs/6.12.118+deb13-amd64")) is None
    assert "'~'" in vm.unshareable(Path("/home/a~b/out"))
    with pytest.raises(ValueError, match="':'"):
        vm.vng_command(KERNEL, "true", accel="tcg", rwdirs=[Path("/tmp/debian:6.12")])


def test_the_guest_names_its_pytest_plugins_and_xdist_only_for_workers() -> None:
    """With autoloading off in the guest, pytest-timeout (the ini's timeout) is always named,
    and xdist only when pytest's arguments name -n."""
    assert guest.named_plugins(["-k", "pwrite"]) == ["pytest_timeout"]
    assert guest.named_plugins(["-n", "2"]) == ["pytest_timeout", "xdist.plugin"]
    # -n 0 starts no worker, but pytest knows -n only from xdist.
    assert guest.named_plugins(["-n", "0"]) == ["pytest_timeout", "xdist.plugin"]
    # Named by the user already (twice is pytest's "already registered"), or blocked: left be.
    assert guest.named_plugins(["-p", "xdist", "-n", "2"]) == ["pytest_timeout"]
    assert guest.named_plugins(["-pno:xdist", "-n2", "-p", "no:timeout"]) == []


def test_a_guest_worker_registers_its_plugins_by_module_without_looking_them_up(
        monkeypatch) -> None:
    """In an xdist worker, conformance.guest (the one name in PYTEST_PLUGINS) registers the
    others under the names -p, PYTEST_PLUGINS and conftest.py would give them, so pytest's
    lookup of each among the installed distributions' entry points is skipped."""
    from _pytest.config import Config, PytestPluginManager

    looked_up: list[str | None] = []
    manager = Config(PytestPluginManager()).pluginmanager
    monkeypatch.setattr(manager, "load_setuptools_entrypoints",
                        lambda group, name=None: looked_up.append(name) or 0)
    monkeypatch.setenv(guest.PLUGINS_ENV, "pytest_timeout,conformance.plugin")
    monkeypatch.setenv("PYTEST_PLUGINS", "conformance.guest")
    # As Config.parse() does: pytest_addhooks, a historic hook, then PYTEST_PLUGINS.
    manager.hook.pytest_addhooks.call_historic(kwargs={"pluginmanager": manager})
    manager.consider_env()  # registers conformance.guest, whose pytest_addhooks the others
    manager.import_plugin("conformance.plugin", consider_entry_points=True)  # conftest.py's
    assert looked_up == ["conformance.guest"]
    assert manager.has_plugin("pytest_timeout") and manager.has_plugin("conformance.plugin")


def test_a_guest_that_never_comes_up_is_stopped_at_the_boot_deadline(tmp_path: Path) -> None:
    """A boot that hangs (an RCU stall in virtme-ng's init, seen under TCG) is stopped once the
    boot deadline passes without the guest's "started" file, not after the run's timeout."""
    started = tmp_path / "started"
    rc, seconds, hung = vm._run_vng(["sh", "-c", "sleep 60"], 60, tmp_path / "console",
                                    came_up=started, boot_timeout=1)
    assert (rc, hung) == (None, True) and seconds < 30
    # A guest that came up runs on past the boot deadline, to its end.
    rc, seconds, hung = vm._run_vng(["sh", "-c", f"touch {started}; sleep 3; exit 3"], 60,
                                    tmp_path / "console", came_up=started, boot_timeout=1)
    assert (rc, hung) == (3, False) and seconds >= 3
    # Without a file to watch, only the run's timeout ends it.
    rc, seconds, hung = vm._run_vng(["sh", "-c", "sleep 60"], 1, tmp_path / "console")
    assert (rc, hung) == (None, False) and seconds < 30


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounting a tmpfs (run as root)")
def test_loop_images_go_in_a_tmpfs_of_huge_pages(tmp_path: Path) -> None:
    where, what = guest.huge_scratch(str(tmp_path))
    try:
        assert where == str(tmp_path / "pinhole-scratch") and what.endswith("huge=always")
        fstype, options = mount_of(Path(where))
        assert fstype == "tmpfs" and "huge=always" in options, options
    finally:
        subprocess.run(["umount", where], check=True)


def test_the_guest_locks_what_is_mapped_and_not_what_is_mapped_later() -> None:
    """In a child process: mlockall() would hold this test process's pages to the end."""
    code = ("import mmap, re; from conformance import guest; print(guest.lock_mapped_pages()); "
            "status = lambda: int(re.search(r'VmLck:\\s+(\\d+)', "
            "open('/proc/self/status').read())[1]); before = status(); "
            "m = mmap.mmap(-1, 1 << 20); m[:] = bytes(1 << 20); print(before, status() - before)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    said, sizes = run.stdout.splitlines()
    locked, later = map(int, sizes.split())
    if os.geteuid() != 0 and said.startswith("not locked"):
        pytest.skip(f"needs root or a larger RLIMIT_MEMLOCK: {said}")
    assert said == "locked" and locked > 1024 and later == 0, run.stdout + run.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"),
                    reason="needs root and qemu-system-x86_64 (apt-get install qemu-system-x86)")
def test_a_boot_that_panics_before_its_command_is_booted_again() -> None:
    """A real early panic: 40 MB leave the boot deadlocked on memory before init (1.2 s)."""
    try:
        kernel = resolve("debian:6.12")
    except (KernelNotFound, OSError) as e:
        pytest.skip(f"needs the debian:6.12 kernel, which could not be fetched: {e}")
    res = vm.boot_and_run(kernel, "echo never", timeout=300, append=["mem=40M"])
    assert (res.outcome, res.came_up, res.stdout) == ("panic", False, ""), res.console_tail
    assert vm.BOOT_TRIES > 1 and [r.outcome for r in res.lost] == ["panic"] * (vm.BOOT_TRIES - 1)
    assert all("deadlocked on memory" in r.console_tail for r in (res, *res.lost))
    assert vm.boot_and_run(kernel, "echo never", timeout=300, append=["mem=40M"],
                           tries=1).lost == ()
