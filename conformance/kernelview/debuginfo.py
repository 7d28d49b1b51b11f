"""Where the running kernel's debug info is, and whether it is this kernel's.

drgn needs vmlinux with DWARF: drgn 0.3.0 reads types from DWARF only (its BTF type finder,
osandov/drgn pull request 625, is not merged), so the BTF in /sys/kernel/btf/vmlinux that
Debian's kernels carry is not enough. A vmlinux is this kernel's when its GNU build ID is the
one in /sys/kernel/notes: a vmlinux of another build would give wrong struct layouts.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

# Set by `pinhole matrix` (multikernel.guest_command()) for a kernel whose vmlinux it knows,
# or by hand: the vmlinux (with DWARF) of the running kernel.
ENV = "PINHOLE_VMLINUX"
NOTES = Path("/sys/kernel/notes")
NT_GNU_BUILD_ID = 3
SHT_NOTE = 7
# Where Debian's linux-image-<release>-dbg puts vmlinux (a kernel tree's own vmlinux is found
# through its build link), in the order drgn's own search would try them.
STANDARD = ("/usr/lib/debug/boot/vmlinux-{r}", "/usr/lib/debug/lib/modules/{r}/vmlinux",
            "/boot/vmlinux-{r}", "/lib/modules/{r}/build/vmlinux")


def _notes(data: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(name, type, desc) of each ELF note in a note section's bytes."""
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, off)
        off += 12
        name = data[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        yield name, kind, data[off:off + descsz]
        off += (descsz + 3) & ~3


def _build_id(notes: bytes) -> str | None:
    for name, kind, desc in _notes(notes):
        if name == b"GNU" and kind == NT_GNU_BUILD_ID:
            return desc.hex()
    return None


def running_build_id() -> str | None:
    """The running kernel's build ID (root only: /sys/kernel/notes is 0400)."""
    try:
        return _build_id(NOTES.read_bytes())
    except OSError:
        return None


def elf_facts(path: Path) -> tuple[str | None, bool]:
    """The GNU build ID of an ELF64 little-endian file and whether it has a .debug_info
    section: the section headers and notes only, not the hundreds of megabytes of DWARF."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None, False
        (shoff,) = struct.unpack_from("<Q", head, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)

        def section(i: int) -> tuple[int, int, int, int]:
            name, kind = struct.unpack_from("<II", table, i * shentsize)
            offset, size = struct.unpack_from("<QQ", table, i * shentsize + 0x18)
            return name, kind, offset, size

        def read(offset: int, size: int) -> bytes:
            f.seek(offset)
            return f.read(size)

        names = read(*section(shstrndx)[2:])
        build_id, dwarf = None, False
        for i in range(shnum):
            name, kind, offset, size = section(i)
            dwarf |= names[name:names.index(b"\0", name)] == b".debug_info"
            if kind == SHT_NOTE and build_id is None:
                build_id = _build_id(read(offset, size))
        return build_id, dwarf


def candidates(release: str) -> list[Path]:
    env = os.environ.get(ENV)
    return ([Path(env)] if env else []) + [Path(p.format(r=release)) for p in STANDARD]


def find_vmlinux(release: str) -> tuple[Path | None, str]:
    """This kernel's vmlinux, or None and why not (the files tried and what was wrong)."""
    want = running_build_id()
    tried = []
    for path in candidates(release):
        if not path.is_file():
            tried.append(f"{path} (absent)" if os.environ.get(ENV) == str(path) else "")
            continue
        have, dwarf = elf_facts(path)
        if want and have != want:
            tried.append(f"{path} is another build (build ID {have}, the kernel's is {want})")
        elif not dwarf:
            tried.append(f"{path} has no DWARF (built without CONFIG_DEBUG_INFO)")
        else:
            return path, f"{path}" + (f" (build ID {have})" if have else "")
    return None, "; ".join(t for t in tried if t)


def dbg_package(release: str) -> str:
    return f"linux-image-{release}-dbg"


# What the -dbg packages weighed when measured (apt-cache show, 2026-11-26): the reason says
# this where apt cannot answer in time (a loaded machine, a guest whose root is read-only).
MEASURED_DBG = "about 1 GB to download, 6-7 GB unpacked (6.12.118: 1042 MB, 6.1.192: 858 MB)"


@functools.cache
def dbg_size(release: str) -> str:
    """The -dbg package's download and unpacked size, from the private apt lists
    (conformance/debian.py) on the host; what was measured elsewhere."""
    from ..cache import cache_root
    from ..debian import Apt
    from ..guest import IN_GUEST

    if os.environ.get(IN_GUEST):
        return MEASURED_DBG
    apt = Apt(cache_root() / "apt")
    try:
        text = subprocess.run(["apt-cache", *apt.options(), "show", dbg_package(release)],
                              capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return MEASURED_DBG
    size = re.search(r"^Size: (\d+)$", text, re.M)
    installed = re.search(r"^Installed-Size: (\d+)$", text, re.M)
    if not size:
        return MEASURED_DBG
    unpacked = f", {int(installed[1]) / 1e6:.1f} GB unpacked" if installed else ""
    return f"{int(size[1]) / 1e6:.0f} MB to download{unpacked}"


def how_to_get(release: str) -> str:
    """The reasoned skip: how to get debug info for this kernel."""
    if "+deb" in release or re.match(r"^\d+\.\d+\.\d+-\d+-", release):
        return (f"no debug info for Debian's {release}: fetch {dbg_package(release)}"
                f" ({dbg_size(release)}; apt-get download, dpkg -x into "
                f"~/.cache/pinhole/kernels/<version>/, where pinhole matrix finds its "
                f"usr/lib/debug/boot/vmlinux-{release}), or set {ENV} to that vmlinux")
    return (f"no debug info for {release}: boot a kernel pinhole builds, whose vmlinux it "
            f"passes as {ENV} (pinhole matrix --kernel debian-src:6.12), or set {ENV} to this "
            "kernel's vmlinux built with CONFIG_DEBUG_INFO")


def vmlinux_for(config_path: Path | None, vmlinuz: Path, release: str,
                build_dir: Path | None = None) -> Path | None:
    """On the host, before a VM boots: the vmlinux of a kernel pinhole will boot, if it has
    one. A pinhole build keeps it beside its config; a kernel tree has it at its top; a
    Debian package's -dbg, unpacked into the package's cache directory, under usr/lib/debug."""
    places = [build_dir / "vmlinux" if build_dir else None,
              config_path.parent / "vmlinux" if config_path else None,
              vmlinuz.parent.parent / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{release}"]
    return next((p for p in places if p and p.is_file()), None)


# What a pin's kernel objects need beyond vmlinux on a Debian kernel: the modules rdma
# (ib_core, ib_uverbs, rdma_rxe) and udmabuf live in, where they are modules (Debian 6.12
# builds udmabuf in).
DBG_MODULES = ("drivers/infiniband", "drivers/dma-buf")


def fetch_dbg(kernel_dir: Path, release: str, version: str) -> Path:
    """On request, for a Debian kernel unpacked in kernel_dir (~/.cache/pinhole/kernels/
    <version>/): download its -dbg package through the private apt configuration and unpack
    vmlinux and the debug files of the pins' modules beside it, where vmlinux_for() finds
    them. The package is about a gigabyte: it is kept until it has been unpacked."""
    import shutil
    import tempfile

    from ..cache import cache_root
    from ..debian import Apt

    boot = kernel_dir / "usr" / "lib" / "debug" / "boot"
    if (boot / f"vmlinux-{release}").is_file():
        return boot / f"vmlinux-{release}"
    downloads = kernel_dir / ".dbg"
    downloads.mkdir(exist_ok=True)
    debs = sorted(downloads.glob(f"{dbg_package(release)}_*.deb"))
    if not debs:
        apt = Apt(cache_root() / "apt")
        apt.setup()
        debs = apt.download([dbg_package(release)], version, downloads)
    want = [f"./usr/lib/debug/boot/vmlinux-{release}",
            *(f"./usr/lib/debug/lib/modules/{release}/kernel/{d}" for d in DBG_MODULES)]
    with tempfile.TemporaryDirectory(prefix=".unpack.", dir=kernel_dir) as tmp:
        unpack = (f"dpkg-deb --fsys-tarfile {shlex.quote(str(debs[0]))} | tar -x -C "
                  f"{shlex.quote(tmp)} --wildcards {' '.join(shlex.quote(w) for w in want)}")
        run = subprocess.run(["bash", "-o", "pipefail", "-c", unpack], capture_output=True,
                             text=True)
        got = Path(tmp) / "usr" / "lib" / "debug"
        # A driver built in has no module directory, which tar reports and is no failure.
        if not (got / "boot" / f"vmlinux-{release}").is_file():
            raise RuntimeError(f"unpacking {debs[0].name} failed: {run.stderr.strip()[-300:]}")
        (kernel_dir / "usr" / "lib").mkdir(parents=True, exist_ok=True)
        target = kernel_dir / "usr" / "lib" / "debug"
        if target.exists():
            shutil.rmtree(target)
        got.rename(target)
    shutil.rmtree(downloads)
    return boot / f"vmlinux-{release}"
