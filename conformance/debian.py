"""Resolve a kernel SPEC for the matrix into a bootable kernel on this machine.

SPEC is ``debian-src:SERIES`` (a kernel built from Debian's source package, kbuild.py),
``debian:SERIES`` (``debian:6.12``), ``debian:SUITE`` (``debian:sid``), an exact Debian
package version (``debian:6.1.170-3``), a vmlinuz/bzImage file, or a kernel build tree. Debian
kernels come from a private apt configuration under the user's cache directory: the system's
apt sources are never touched, and apt still verifies every Release file against Debian's
keyring. An extracted kernel is reused without calling apt.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from pathlib import Path

from .cache import cache_root
from .running_kernel import KernelConfig, parse_config

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
# Suites that between them carry 6.1, 6.12, 6.16-6.19 and 7.x.
SUITES = ("bookworm", "trixie", "trixie-backports", "sid")
SUITE_ALIASES = {"unstable": "sid", "stable": "trixie", "oldstable": "bookworm",
                 "12": "bookworm", "13": "trixie"}
# Lists older than this are refreshed when a spec needs the archive's current state.
LISTS_MAX_AGE = 24 * 3600
NAME = re.compile(r"^linux-(image|binary-unsigned|binary|modules|base)-"
                  r"([0-9][^-\s]*(?:-[0-9]+)?)-amd64(-unsigned)?$")
SERIES = re.compile(r"^\d+\.\d+$")
DEB_VERSION = re.compile(r"^\d+\.\d+[\w.+~-]*-[\w.+~]+$")


class KernelNotFound(LookupError):
    """A SPEC that names no kernel; the one-line message lists what is available."""


@dataclass(frozen=True)
class Kernel:
    release: str
    package_version: str | None
    vmlinuz: Path
    config_path: Path | None
    # A kernel build tree: vng boots it directly and finds its modules there.
    build_dir: Path | None = None

    def config(self) -> KernelConfig:
        if self.config_path is None or not self.config_path.is_file():
            return KernelConfig("")
        return KernelConfig(str(self.config_path), parse_config(self.config_path.read_text()))


# Debian version ordering (deb-version(7)), so no apt_pkg binding is needed.

def _order(c: str) -> int:
    if not c or c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return -1 if c == "~" else ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp(): non-digit runs by _order(), digit runs by value."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac, bc = _order(a[i:i + 1]), _order(b[j:j + 1])
            if ac != bc:
                return -1 if ac < bc else 1
            i, j = i + 1, j + 1
        da = re.match(r"\d*", a[i:])[0]
        db = re.match(r"\d*", b[j:])[0]
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
        i, j = i + len(da), j + len(db)
    return 0


def compare_versions(a: str, b: str) -> int:
    """dpkg --compare-versions as -1/0/1."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch), upstream, revision
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


version_key = cmp_to_key(compare_versions)


@dataclass(frozen=True)
class Build:
    """One amd64 kernel build in the archive: the packages that together hold it."""

    abi: str
    version: str
    names: frozenset[str]
    suites: frozenset[str]

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def release(self) -> str:
        return f"{self.abi}-amd64"

    def packages(self) -> list[str]:
        """What to download: vmlinuz, modules and config, unsigned where Debian has it."""
        unsigned = f"linux-image-{self.abi}-amd64-unsigned"
        modules = f"linux-modules-{self.abi}-amd64"
        if unsigned in self.names:
            return [unsigned]
        if modules in self.names:
            binary = f"linux-binary-unsigned-{self.abi}-amd64"
            if binary not in self.names:
                binary = f"linux-binary-{self.abi}-amd64"
            return [binary, modules, f"linux-base-{self.abi}-amd64"]
        return [f"linux-image-{self.abi}-amd64"]


def parse_madison(text: str) -> tuple[list[Build], dict[str, list[str]]]:
    """Builds from `apt-cache madison` lines, and linux-image-amd64's versions per suite."""
    found: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    meta: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3:
            continue
        name, version, source = parts
        suite = source.split()[1].split("/")[0] if len(source.split()) > 1 else ""
        if name == "linux-image-amd64":
            meta.setdefault(suite, []).append(version)
            continue
        m = NAME.match(name)
        if not m:
            continue
        names, suites = found.setdefault((m[2], version), (set(), set()))
        names.add(name)
        suites.add(suite)
    builds = [Build(abi, version, frozenset(n), frozenset(s))
              for (abi, version), (n, s) in found.items()]
    return sorted(builds, key=lambda b: version_key(b.version)), meta


def latest_per_series(builds: list[Build]) -> dict[str, Build]:
    latest: dict[str, Build] = {}
    for b in builds:  # sorted oldest first, so the last one of a series wins
        latest[b.series] = b
    return dict(sorted(latest.items(), key=lambda kv: tuple(map(int, kv[0].split(".")))))


def available(builds: list[Build]) -> str:
    series = ", ".join(f"debian:{s} ({b.version})" for s, b in latest_per_series(builds).items())
    return f"{series}; suites: {', '.join('debian:' + s for s in SUITES)}"


def choose(spec: str, builds: list[Build], meta: dict[str, list[str]]) -> Build:
    """The build a debian:WHAT spec names, or KernelNotFound listing what there is."""
    what = spec.removeprefix("debian:")
    suite = SUITE_ALIASES.get(what, what)
    chosen: Build | None = None
    if SERIES.match(what):
        chosen = latest_per_series(builds).get(what)
    elif suite in SUITES:
        # The suite's own default kernel: what its linux-image-amd64 (or its security update)
        # points at, not a newer series backported into it.
        versions = meta.get(suite, []) + meta.get(f"{suite}-security", [])
        if versions:
            newest = max(versions, key=version_key)
            chosen = next((b for b in builds if b.version == newest), None)
    elif DEB_VERSION.match(what):
        chosen = next((b for b in builds if b.version == what), None)
    if chosen is None:
        raise KernelNotFound(f"unknown kernel {spec}; available: {available(builds)}")
    return chosen


class Apt:
    """apt-get and apt-cache over a private sources list, lists and cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sources = root / "sources.list"
        self.lists = root / "lists"

    def options(self) -> list[str]:
        opts = {
            "Dir::Etc::sourcelist": self.sources,
            "Dir::Etc::sourceparts": "-",
            "Dir::State::Lists": self.lists,
            "Dir::Cache": self.root / "cache",
            "Dir::Etc::preferences": "/dev/null",
            "Dir::Etc::preferencesparts": "-",
            # Downloads land in our cache, which apt's _apt sandbox user cannot write.
            "APT::Sandbox::User": getpass.getuser(),
        }
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def setup(self) -> None:
        if not KEYRING.is_file():
            raise KernelNotFound(f"no Debian archive keyring at {KEYRING}: "
                                 "apt-get install debian-archive-keyring")
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        signed = f"[arch=amd64 signed-by={KEYRING}]"
        lines = [f"deb {signed} {MIRROR} {s} main" for s in SUITES]
        lines += [f"deb {signed} {SECURITY} {s}-security main"
                  for s in SUITES if s in ("bookworm", "trixie")]
        text = "\n".join(lines) + "\n"
        if not self.sources.is_file() or self.sources.read_text() != text:
            self.sources.write_text(text)

    def lists_age(self) -> float:
        stamps = [p.stat().st_mtime for p in self.lists.glob("*Release")]
        return time.time() - min(stamps) if stamps else float("inf")

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([tool, *self.options(), *args], cwd=cwd, capture_output=True,
                              text=True, env={**os.environ, "LC_ALL": "C"})
        if proc.returncode:
            err = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
            raise KernelNotFound(f"{tool} {args[0]} failed: {err[-400:]}")
        return proc.stdout

    def update(self) -> None:
        self.run("apt-get", "-q", "update")

    def index(self) -> tuple[list[Build], dict[str, list[str]]]:
        """The kernel builds the lists offer. apt-cache's answer is kept beside the lists
        until they change: asking took 5 s, twice a `pinhole matrix` (checking the specs,
        then fetching the kernel)."""
        lists = sorted((p.name, st.st_size, st.st_mtime_ns)
                       for p in self.lists.iterdir() if p.is_file() and (st := p.stat()))
        key = hashlib.sha256(repr((lists, self.sources.read_text())).encode()).hexdigest()
        kept = self.root / "index.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            saved = json.loads(kept.read_text())
            if saved["key"] == key:
                return parse_madison(saved["madison"])
        pattern = r"^linux-(image|binary|binary-unsigned|modules|base)-[0-9].*amd64(-unsigned)?$"
        names = [line.split(" ", 1)[0]
                 for line in self.run("apt-cache", "search", "--names-only", pattern).splitlines()]
        names = [n for n in names if NAME.match(n)]
        madison = self.run("apt-cache", "madison", "linux-image-amd64", *names)
        part = kept.with_suffix(f".part{os.getpid()}")
        part.write_text(json.dumps({"key": key, "madison": madison}))
        os.replace(part, kept)  # whole, for a matrix run beside this one
        return parse_madison(madison)

    def download(self, names: list[str], version: str, into: Path) -> list[Path]:
        self.run("apt-get", "-q", "download", *(f"{n}={version}" for n in names), cwd=into)
        return sorted(into.glob("*.deb"))


def _find_release(root: Path) -> str:
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if base.is_dir():
            for d in sorted(base.iterdir()):
                if (d / "modules.order").exists() or (d / "kernel").is_dir():
                    return d.name
    raise KernelNotFound(f"no lib/modules/<release> in the extracted kernel at {root}")


def extract(debs: list[Path], dest: Path) -> None:
    """dpkg -x the packages into dest with one layout: boot/vmlinuz-R, boot/config-R, lib/modules/R.

    Kernels from 7.x put everything under usr/lib/modules/R; links give them the old layout, which
    vng's module lookup (lib/modules beside the vmlinuz's boot/) expects.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True,
                           capture_output=True)
        release = _find_release(tmp)
        if not (tmp / "lib" / "modules").exists():
            (tmp / "lib").symlink_to("usr/lib")
        moddir = tmp / "lib" / "modules" / release
        boot = tmp / "boot"
        boot.mkdir(exist_ok=True)
        for name, candidates in (("vmlinuz", ("vmlinuz", "vmlinuz.unsigned")),
                                 ("config", ("config",))):
            target = boot / f"{name}-{release}"
            found = next((moddir / c for c in candidates if (moddir / c).is_file()), None)
            if not target.exists() and found is not None:
                os.link(found, target)
        # Debian >= 7 keeps the config beside the modules; older ones get it there too, so a
        # guest finds it at /lib/modules/$(uname -r)/config.
        if not (moddir / "config").exists() and (boot / f"config-{release}").is_file():
            os.link(boot / f"config-{release}", moddir / "config")
        depmod(tmp, release)  # Debian generates modules.dep in postinst, which dpkg -x skips
        tmp.chmod(0o755)  # mkdtemp made it 0700; guests and other users read it
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def depmod(root: Path, release: str) -> None:
    """Index the modules of an extracted kernel (root/lib/modules/release) again."""
    subprocess.run(["depmod", "-b", str(root), release], check=True, capture_output=True)


def _from_tree(root: Path, version: str | None) -> Kernel:
    release = _find_release(root)
    return Kernel(release=release, package_version=version,
                  vmlinuz=root / "boot" / f"vmlinuz-{release}",
                  config_path=root / "boot" / f"config-{release}")


def bzimage_release(path: Path) -> str | None:
    """The release string in a bzImage's setup header (kernel_version at 0x20E)."""
    with path.open("rb") as f:
        head = f.read(0x400)
        if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
            return None
        offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
        f.seek(offset)
        text = f.read(256).split(b"\0", 1)[0].decode(errors="replace")
    return text.split(" ", 1)[0] or None


def from_path(spec: str, path: Path) -> Kernel:
    if path.is_dir():
        image = path / "arch" / "x86" / "boot" / "bzImage"
        if not (image.is_file() and (path / ".config").is_file()):
            raise KernelNotFound(f"{path} is not a kernel build tree "
                                 "(no arch/x86/boot/bzImage and .config)")
        release_file = path / "include" / "config" / "kernel.release"
        release = (release_file.read_text().strip() if release_file.is_file()
                   else bzimage_release(image) or "unknown")
        return Kernel(release, None, image, path / ".config", build_dir=path)
    if not path.is_file():
        raise KernelNotFound(f"kernel {spec}: no such file or build tree")
    release = bzimage_release(path)
    if release is None:
        raise KernelNotFound(f"{path} is not a bzImage (no HdrS setup header)")
    root = path.resolve().parent.parent
    moddir = root / "lib" / "modules" / release
    config = next((c for c in (path.parent / f"config-{release}", moddir / "config")
                   if c.is_file()), None)
    return Kernel(release, None, path, config)


def resolve(spec: str, *, cache: Path | None = None, refresh: bool | None = None,
            patches: Sequence[Path] = ()) -> Kernel:
    """The kernel SPEC names, fetched and extracted when it is a Debian package.

    refresh: True forces `apt-get update`, False never runs it, None runs it when the private
    lists are missing or older than a day. patches: applied to a debian-src: kernel's source.
    """
    if spec.startswith("debian-src:"):
        from . import kbuild  # kbuild imports this module
        return kbuild.resolve(spec, list(patches), cache)
    if patches:
        raise KernelNotFound(f"--patch needs a kernel built from source (debian-src:), not {spec}")
    if not spec.startswith("debian:"):
        return from_path(spec, Path(spec))
    cache = cache or cache_root()
    kernels = cache / "kernels"
    what = spec.removeprefix("debian:")
    if DEB_VERSION.match(what) and (kernels / what).is_dir():
        return _from_tree(kernels / what, what)
    apt = Apt(cache / "apt")
    apt.setup()
    if refresh or (refresh is None and apt.lists_age() > LISTS_MAX_AGE):
        try:
            apt.update()
        except KernelNotFound:
            if refresh or apt.lists_age() == float("inf"):
                raise
            # Offline: yesterday's lists still name the kernels already extracted.
    build = choose(spec, *apt.index())
    dest = kernels / build.version
    if not dest.is_dir():
        kernels.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download.", dir=kernels) as tmp:
            extract(apt.download(build.packages(), build.version, Path(tmp)), dest)
    return _from_tree(dest, build.version)
