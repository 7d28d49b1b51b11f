"""The modules a pinhole guest loads, kept uncompressed in an extracted kernel.

Debian compresses every module (CONFIG_MODULE_COMPRESS_XZ), and kmod decompresses it as the
guest loads it: under TCG, `xz -d` of xfs, btrfs, ext4 and their helpers took 4.2 s of a
guest's vCPU, and a guest's modprobes of its filesystems 9.0 s with them compressed, 6.6 s
uncompressed (Debian 6.12, 2026-11-28). The guest waits for those modules before it plans its
run. Each is uncompressed once on the host, with the modules it needs, in place and under its
own name: kmod tells a compressed module by its first bytes, not its name (libkmod-file.c
kmod_file_open()), so modules.dep stays true at every moment for a guest booting beside, or
after a run killed half way. Its signature is inside the compressed file, so the kernel checks
it as before.
"""

from __future__ import annotations

import fcntl
import gzip
import lzma
import os
from collections.abc import Iterable
from pathlib import Path

from .cache import cache_root
from .debian import Kernel

# Debian's compressions, by suffix; a module compressed otherwise (zstd) is left as it is.
OPENERS = {".xz": lzma.open, ".gz": gzip.open}
ELF_MAGIC = b"\x7fELF"


def module_dir(kernel: Kernel) -> Path | None:
    """The lib/modules/RELEASE of a kernel pinhole extracted into its cache; None for any
    other (a build tree, or a user's kernel, whose files are not pinhole's to change)."""
    if kernel.build_dir is not None or not kernel.vmlinuz.resolve().is_relative_to(
            (cache_root() / "kernels").resolve()):
        return None
    found = kernel.vmlinuz.parent.parent / "lib" / "modules" / kernel.release
    return found if (found / "modules.dep").is_file() else None


def needed(moddir: Path, names: Iterable[str]) -> list[str]:
    """The modules.dep paths of the named modules and of every module they depend on; a name
    the tree lacks (built in, or absent) adds nothing."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_name(p): p for p in deps}
    found: list[str] = []
    todo = [by_name[n] for n in (_name(n) for n in names) if n in by_name]
    while todo:
        path = todo.pop()
        if path not in found:
            found.append(path)
            todo += deps.get(path, [])
    return sorted(found)


def _name(path: str) -> str:
    """A module's name as kmod compares it: its file's stem, with - and _ alike."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def uncompress(kernel: Kernel, names: Iterable[str]) -> list[str]:
    """Uncompress the named modules and their dependencies in kernel's tree, each file's
    content replaced at once; returns the paths uncompressed (none once done). Locked: two
    pinhole runs may start on one kernel at once."""
    moddir = module_dir(kernel)
    if moddir is None:
        return []
    with open(moddir / ".pinhole-modules.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = []
        for path in needed(moddir, names):
            opener = OPENERS.get(Path(path).suffix)
            packed = moddir / path
            if opener is None or _is_elf(packed):
                continue
            for stale in packed.parent.glob(f"{packed.name}.part*"):  # a run killed mid-copy
                stale.unlink()
            part = packed.with_name(f"{packed.name}.part{os.getpid()}")
            with opener(packed) as src, open(part, "wb") as dst:
                dst.write(src.read())
            os.replace(part, packed)
            done.append(path)
        return done


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC
