"""The guest's modules uncompressed in an extracted kernel (conformance/kmodules.py), on a
made-up tree of compressed files indexed as Debian's are."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from conformance import kmodules
from conformance.debian import Kernel
from conformance.guest import FILESYSTEMS, MODULES

RELEASE = "9.9.9-test"
TREE = {  # modules.dep as depmod writes it: each module, then what it needs
    "kernel/fs/xfs/xfs.ko.xz": ["kernel/lib/libcrc32c.ko.xz"],
    "kernel/lib/libcrc32c.ko.xz": [],
    "kernel/drivers/md/dm-flakey.ko.xz": ["kernel/drivers/md/dm-mod.ko.xz"],
    "kernel/drivers/md/dm-mod.ko.xz": [],
    "kernel/sound/snd.ko.xz": [],
}


def content(path: str) -> bytes:
    """A made-up module: ELF's magic, as kmodules tells one uncompressed."""
    return kmodules.ELF_MAGIC + f" module {path}".encode()


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kernel:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # pinhole's cache: its to change
    root = tmp_path / "pinhole" / "kernels" / "9.9.9-1"
    moddir = root / "lib" / "modules" / RELEASE
    for path in TREE:
        (moddir / path).parent.mkdir(parents=True, exist_ok=True)
        (moddir / path).write_bytes(lzma.compress(content(path)))
    (moddir / "modules.dep").write_text("".join(f"{p}: {' '.join(d)}\n".replace(": \n", ":\n")
                                                for p, d in TREE.items()))
    (root / "boot").mkdir()
    return Kernel(RELEASE, "9.9.9-1", root / "boot" / f"vmlinuz-{RELEASE}", None)


def test_the_named_modules_and_what_they_need_are_uncompressed_under_their_names(
        kernel: Kernel) -> None:
    moddir = kmodules.module_dir(kernel)
    index = (moddir / "modules.dep").read_text()
    done = kmodules.uncompress(kernel, ["xfs", "dm_flakey", "not_in_this_kernel"])
    assert done == sorted(p for p in TREE if "snd" not in p)
    for path in done:
        assert (moddir / path).read_bytes() == content(path)
    assert (moddir / "kernel/sound/snd.ko.xz").read_bytes() != content("kernel/sound/snd.ko.xz")
    assert (moddir / "modules.dep").read_text() == index  # true all along: no depmod
    assert sorted(p.name for p in moddir.rglob("*") if p.is_file()) == sorted(
        [".pinhole-modules.lock", "modules.dep", *(Path(p).name for p in TREE)])
    assert kmodules.uncompress(kernel, ["xfs", "dm_flakey"]) == []  # once


def test_a_run_killed_mid_copy_leaves_nothing_the_next_keeps(kernel: Kernel) -> None:
    moddir = kmodules.module_dir(kernel)
    stale = moddir / "kernel/lib/libcrc32c.ko.xz.part4242"
    stale.write_bytes(b"\x7fEL")
    assert kmodules.uncompress(kernel, ["libcrc32c"]) == ["kernel/lib/libcrc32c.ko.xz"]
    assert not stale.exists()
    assert (moddir / "kernel/lib/libcrc32c.ko.xz").read_bytes() == content(
        "kernel/lib/libcrc32c.ko.xz")


def test_a_build_tree_and_a_kernel_outside_the_cache_are_left_alone(
        kernel: Kernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built = Kernel(RELEASE, None, kernel.vmlinuz, None, build_dir=kernel.vmlinuz.parent)
    assert kmodules.uncompress(built, ["xfs"]) == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))  # a user's own kernel
    assert kmodules.uncompress(kernel, ["xfs"]) == []
    packed = kernel.vmlinuz.parent.parent / "lib/modules" / RELEASE / "kernel/fs/xfs/xfs.ko.xz"
    assert packed.read_bytes() != content("kernel/fs/xfs/xfs.ko.xz")


def test_the_guest_names_its_filesystems_and_drivers() -> None:
    assert {"xfs", "btrfs", "ext4"} <= set(FILESYSTEMS) <= set(MODULES)
    assert {"rdma_rxe", "loop", "dm_flakey", "nd_pmem"} <= set(MODULES)
