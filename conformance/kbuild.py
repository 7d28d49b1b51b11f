"""Build kernels from a Debian source package: `pinhole matrix --kernel debian-src:6.12`.

The source (`linux-source-X.Y` from the private apt configuration in kernels.py) is unpacked once
into ~/.cache/pinhole/src/<version>/, which stays the one working tree of that version, so a
rebuild after a one-file patch is incremental. The config is `make allnoconfig` plus the shipped
fragment conformance/kconfig/pinhole.config: everything built in, no modules. Each result goes to
~/.cache/pinhole/builds/<key>/, key = hash of source version, fragment and patches; a second
build with the same key is a cache hit that runs neither make nor apt.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .cache import cache_root
from .debian import (
    LISTS_MAX_AGE,
    Apt,
    Kernel,
    KernelNotFound,
    version_key,
)
from .running_kernel import KernelConfig, parse_config

PREFIX = "debian-src:"
FRAGMENT = Path(__file__).resolve().parent / "kconfig" / "pinhole.config"
SPEC = re.compile(r"^(\d+\.\d+)(?:(\.\d+[\w.+~]*-[\w.+~]+))?$")
# The tree's record of the patches applied to it: present only while a build runs.
APPLIED = ".pinhole-applied"
# A kbuild line for one compiled object ("  CC      mm/gup.o"), counted for the progress line.
OBJECT = re.compile(r"^\s+(CC|AS)\s")
SELFTESTS = ("gup_longterm", "cow")

# What pinhole needs from a kernel and what each missing option costs; any of `ok` is enough.
NEEDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("CONFIG_GUP_TEST", ("y",), "the gup_test row will skip"),
    ("CONFIG_DEBUG_FS", ("y",), "the gup_test row will skip (its file is in debugfs)"),
    ("CONFIG_RDMA_RXE", ("y", "m"), "the rdma row will skip"),
    ("CONFIG_INFINIBAND_USER_ACCESS", ("y", "m"), "the rdma row will skip"),
    ("CONFIG_UDMABUF", ("y", "m"), "the udmabuf row will skip"),
    ("CONFIG_IO_URING", ("y",), "the io_uring row will skip"),
    ("CONFIG_FS_DAX", ("y",), "ext4-dax and xfs-dax will skip"),
    ("CONFIG_BLK_DEV_PMEM", ("y", "m"), "ext4-dax and xfs-dax will skip (no /dev/pmem)"),
    ("CONFIG_X86_PMEM_LEGACY", ("y", "m"), "ext4-dax and xfs-dax will skip (memmap= gives no "
     "pmem)"),
    ("CONFIG_BLK_DEV_LOOP", ("y", "m"), "ext4, xfs and btrfs will skip (no loop devices)"),
    ("CONFIG_BLK_DEV_WRITE_MOUNTED", ("y",), "ext4 and xfs fail to mount their loop devices "
     "(EBUSY)"),
    ("CONFIG_EXT4_FS", ("y", "m"), "ext4 and ext4-dax will skip"),
    ("CONFIG_XFS_FS", ("y", "m"), "xfs and xfs-dax will skip"),
    ("CONFIG_BTRFS_FS", ("y", "m"), "btrfs will skip"),
    ("CONFIG_HUGETLBFS", ("y",), "hugetlbfs and memfd-hugetlb will skip"),
    ("CONFIG_TRANSPARENT_HUGEPAGE", ("y",), "cases on huge pages will skip"),
    ("CONFIG_PROC_PAGE_MONITOR", ("y",), "checks that read /proc/self/pagemap will skip"),
    ("CONFIG_MEMFD_CREATE", ("y",), "memfd and memfd-hugetlb will skip"),
    # The kernel view (drgn): DWARF in vmlinux (or a distribution's -dbg package), read
    # against the live kernel through /proc/kcore.
    ("CONFIG_DEBUG_INFO", ("y",), "the kernel-view check will skip (no DWARF for drgn)"),
    ("CONFIG_PROC_KCORE", ("y",), "the kernel-view check will skip (drgn reads /proc/kcore)"),
)


class BuildFailed(RuntimeError):
    """A patch that does not apply, or make failing: one line, naming the log."""


@dataclass(frozen=True)
class BuiltKernel:
    version: str
    key: str
    release: str
    bzimage: Path
    config: Path
    vmlinux: Path | None
    selftests: dict[str, Path]
    log: Path


def parse_spec(spec: str) -> tuple[str, str | None]:
    """debian-src:6.12 → ('6.12', None); debian-src:6.12.118-1 → ('6.12', '6.12.118-1')."""
    m = SPEC.match(spec.removeprefix(PREFIX))
    if not spec.startswith(PREFIX) or not m:
        raise KernelNotFound(f"unknown kernel {spec}: say debian-src:SERIES (debian-src:6.12) "
                             "or an exact source version (debian-src:6.12.118-1)")
    return m[1], m[0] if m[2] else None


def parse_fragment(text: str) -> dict[str, str]:
    """CONFIG_X=v lines and `# CONFIG_X is not set` (as 'n'); other comments are ignored."""
    wanted = {}
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"^(CONFIG_\w+)=(.*)$", line):
            wanted[m[1]] = m[2]
        elif m := re.match(r"^# (CONFIG_\w+) is not set$", line):
            wanted[m[1]] = "n"
    return wanted


def unmet(wanted: dict[str, str], config_text: str) -> list[str]:
    """The fragment's options that `make olddefconfig` did not keep (a dependency is missing)."""
    have = parse_config(config_text)
    return [f"{name}={value} (got {have.get(name, 'n')})" for name, value in wanted.items()
            if have.get(name, "n") != value]


def cache_key(version: str, fragment: str, patches: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in (version.encode(), fragment.encode(), *patches):
        # Length-prefixed, so moving bytes between parts changes the key.
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()[:16]


# Options younger than some kernels pinhole boots: before them the behaviour they switch was
# the only one (BLK_DEV_WRITE_MOUNTED: ed5cc702d311, v6.8).
SINCE = {"CONFIG_BLK_DEV_WRITE_MOUNTED": (6, 8, 0)}


def config_gaps(config: KernelConfig, version: tuple[int, int, int] | None = None) -> list[str]:
    """One line per option pinhole needs and this kernel (of `version`, when known) lacks,
    saying what will not run."""
    if not config.source:
        return ["no kernel config known: cannot tell in advance which rows will skip"]
    return [f"{name} is {config.state(name)}: {cost}" for name, ok, cost in NEEDS
            if config.state(name) not in ok
            and not (version and name in SINCE and version < SINCE[name])]


class Progress:
    """One line: elapsed time and objects compiled, rewritten on a tty, every 30 s otherwise."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what, self.stream = what, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = self.shown = time.monotonic()
        self.objects = 0
        if not self.tty:
            self.show()

    def line(self, text: str) -> None:
        if OBJECT.match(text):
            self.objects += 1
        now = time.monotonic()
        if self.tty or now - self.shown >= 30:
            self.shown = now
            self.show()

    def show(self, end: str = "") -> None:
        msg = f"pinhole: building {self.what}: {self.elapsed()}, {self.objects} objects compiled"
        if self.tty:
            self.stream.write(f"\r\033[K{msg}{end}")
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 60}:{s % 60:02d}"

    def done(self) -> None:
        if self.tty:
            self.show("\n")


def _run(cmd: list[str], cwd: Path, log: TextIO, progress: Progress | None = None) -> int:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", env={**os.environ, "LC_ALL": "C"})
    for text in proc.stdout:
        log.write(text)
        if progress:
            progress.line(text)
    return proc.wait()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _versions(apt: Apt, series: str) -> list[str]:
    """linux-source-SERIES versions in the archive, oldest first."""
    madison = apt.run("apt-cache", "madison", f"linux-source-{series}")
    found = {line.split("|")[1].strip() for line in madison.splitlines() if line.count("|") == 2}
    if not found:
        raise KernelNotFound(f"no linux-source-{series} in Debian's archive (debian-src:6.1 and "
                             "debian-src:6.12 exist)")
    return sorted(found, key=version_key)


def source_version(spec: str, cache: Path) -> str:
    """The exact source version; a series is looked up at most once a day (else no apt)."""
    series, exact = parse_spec(spec)
    if exact and (cache / "src" / exact).is_dir():
        return exact
    memo = cache / "src" / f"newest-{series}"
    if not exact and memo.is_file() and time.time() - memo.stat().st_mtime < LISTS_MAX_AGE:
        return memo.read_text().strip()
    apt = Apt(cache / "apt")
    apt.setup()
    if apt.lists_age() > LISTS_MAX_AGE:
        try:
            apt.update()
        except KernelNotFound:
            if exact or not memo.is_file():
                raise
            return memo.read_text().strip()  # offline: the source we built from last time
    versions = _versions(apt, series)
    if exact:
        if exact not in versions:
            raise KernelNotFound(f"no linux-source-{series} {exact}; available: "
                                 f"{', '.join(versions)}")
        return exact
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(versions[-1] + "\n")
    return versions[-1]


def source_tree(version: str, cache: Path) -> Path:
    """src/<version>/, downloaded and unpacked on first use (rename at the end: all or nothing)."""
    tree = cache / "src" / version
    if tree.is_dir():
        return tree
    series = ".".join(version.split(".")[:2])
    apt = Apt(cache / "apt")
    apt.setup()
    tree.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack.", dir=tree.parent) as tmp:
        apt.run("apt-get", "-q", "download", f"linux-source-{series}={version}", cwd=Path(tmp))
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/deb"], check=True)
        (Path(tmp) / "tree").mkdir()
        subprocess.run(["tar", "-xJf", f"{tmp}/deb/usr/src/linux-source-{series}.tar.xz",
                        "-C", f"{tmp}/tree", "--strip-components=1"], check=True)
        (Path(tmp) / "tree").rename(tree)
    return tree


def _patch(tree: Path, patch: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["patch", "-p1", "--batch", "--no-backup-if-mismatch", "-i",
                           str(patch), *args], cwd=tree, capture_output=True, text=True)


def repair(tree: Path) -> None:
    """Reverse the patches a crashed build left applied, newest first."""
    record = tree / APPLIED
    if not record.is_file():
        return
    for name in reversed(record.read_text().split()):
        run = _patch(tree, tree / name, "-R")
        if run.returncode:
            raise BuildFailed(f"cannot reverse {name} in {tree}: {run.stdout.strip()[-200:]}; "
                              f"remove the tree to start afresh")
        (tree / name).unlink()
    record.unlink()


@contextmanager
def patched(tree: Path, patches: list[Path]) -> Iterator[None]:
    """The patches applied in order (each checked with --dry-run), reversed on the way out."""
    repair(tree)
    record = tree / APPLIED
    try:
        for i, patch in enumerate(patches):
            # The tree keeps its own copy: the user's file may change before it is reversed.
            copy = tree / f".pinhole-patch-{i}"
            shutil.copyfile(patch, copy)
            dry = _patch(tree, copy, "--dry-run")
            if dry.returncode:
                copy.unlink()
                first = (dry.stdout.strip().splitlines() or ["?"])[-1]
                raise BuildFailed(f"patch {patch} does not apply to the source: {first}")
            with record.open("a") as f:
                f.write(copy.name + "\n")
            if _patch(tree, copy).returncode:
                raise BuildFailed(f"patch {patch} failed after a good --dry-run")
        yield
    finally:
        repair(tree)


def configure(tree: Path, fragment: Path, log: TextIO) -> None:
    """allnoconfig + the fragment + olddefconfig, then check that every option stuck."""
    steps = (["make", "allnoconfig"],
             ["scripts/kconfig/merge_config.sh", "-m", ".config", str(fragment)],
             ["make", "olddefconfig"])
    for cmd in steps:
        if _run(cmd, tree, log):
            raise BuildFailed(f"{' '.join(cmd)} failed")
    missing = unmet(parse_fragment(fragment.read_text()), (tree / ".config").read_text())
    if missing:
        raise BuildFailed(f"options that did not stick (a dependency is missing): "
                          f"{', '.join(missing)}")


def build_selftests(tree: Path, out: Path, log: TextIO) -> dict[str, Path]:
    """gup_longterm and cow, static, against this tree's headers, so a guest can run them."""
    if _run(["make", "headers"], tree, log):
        raise BuildFailed("make headers failed")
    mm = tree / "tools" / "testing" / "selftests" / "mm"
    out.mkdir()
    # check_config.sh would probe for liburing; the static build goes without it.
    (out / "local_config.h").write_text("/* no liburing */\n")
    built = {}
    for name in SELFTESTS:
        cmd = ["gcc", "-static", "-Wall", "-O2", "-U_FORTIFY_SOURCE", "-I", str(out),
               "-I", str(tree / "tools" / "testing" / "selftests"),
               "-isystem", str(tree / "usr" / "include"),
               "-isystem", str(tree / "tools" / "include" / "uapi"),
               f"{name}.c", "vm_util.c", "thp_settings.c", "-lrt", "-lpthread", "-lm",
               "-o", str(out / name)]
        if _run(cmd, mm, log):
            raise BuildFailed(f"selftest {name} did not compile")
        built[name] = out / name
    (out / "local_config.h").unlink()
    return built


def _result(version: str, key: str, d: Path) -> BuiltKernel:
    vmlinux = d / "vmlinux"
    return BuiltKernel(version, key, (d / "release").read_text().strip(), d / "bzImage",
                       d / "config", vmlinux if vmlinux.is_file() else None,
                       {n: d / "selftests" / n for n in SELFTESTS}, d / "build.log")


def build(source: str, patches: list[Path], *, cache: Path | None = None,
          fragment: Path = FRAGMENT) -> BuiltKernel:
    """The kernel of a debian-src: spec with the patches applied, built or from the cache."""
    cache = cache or cache_root()
    missing = [str(p) for p in patches if not Path(p).is_file()]
    if missing:
        raise KernelNotFound(f"no such patch: {', '.join(missing)}")
    version = source_version(source, cache)
    key = cache_key(version, fragment.read_text(), [Path(p).read_bytes() for p in patches])
    builds = cache / "builds"
    done = builds / key
    if (done / "bzImage").is_file():
        return _result(version, key, done)
    tree = source_tree(version, cache)
    builds.mkdir(parents=True, exist_ok=True)
    with _locked(cache / "src" / f"{version}.lock"):
        if (done / "bzImage").is_file():  # built by another pinhole while we waited
            return _result(version, key, done)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=builds))
        log_path = builds / f"{key}.failed.log"
        try:
            with (tmp / "build.log").open("w") as log, patched(tree, patches):
                configure(tree, fragment, log)
                progress = Progress(f"{PREFIX}{version} ({len(patches)} patches)")
                try:
                    code = _run(["make", f"-j{os.cpu_count() or 1}", "bzImage"], tree, log,
                                progress)
                finally:
                    progress.done()
                if code:
                    raise BuildFailed(f"make bzImage failed (exit {code})")
                shutil.copy2(tree / "arch" / "x86" / "boot" / "bzImage", tmp / "bzImage")
                shutil.copy2(tree / ".config", tmp / "config")
                shutil.copy2(tree / "vmlinux", tmp / "vmlinux")
                shutil.copy2(tree / "include" / "config" / "kernel.release", tmp / "release")
                build_selftests(tree, tmp / "selftests", log)
        except BaseException as e:
            # Only the log survives a failure; the message names it.
            if (tmp / "build.log").is_file():
                shutil.move(tmp / "build.log", log_path)
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, BuildFailed):
                raise BuildFailed(f"{e} (log: {log_path})") from None
            raise
        log_path.unlink(missing_ok=True)
        tmp.chmod(0o755)  # mkdtemp made it 0700; the guest reads the selftests through 9p
        tmp.rename(done)
    return _result(version, key, done)


def resolve(spec: str, patches: list[Path], cache: Path | None = None) -> Kernel:
    """debian.resolve() for debian-src: specs."""
    built = build(spec, patches, cache=cache)
    return Kernel(release=built.release,
                  package_version=f"{built.version} (source, build {built.key})",
                  vmlinuz=built.bzimage, config_path=built.config)
