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


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kernel:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # pinhole's cache: its to change
    root = tmp_path / "pinhole" / "kernels" / "9.9.9-1"
    moddir = root / "lib" / "modules" / RELEASE
    for path in TREE:
        (moddir / path).parent.mkdir(parents=True, exist_ok=True)
        (moddir / path).write_bytes(lzma.compress(f"module {path}".encode()))
    (moddir / "modules.dep").write_text("".join(f"{p}: {' '.join(d)}\n".replace(": \n", ":\n")
                                                for p, d in TREE.items()))
    (root / "boot").mkdir()
    return Kernel(RELEASE, "9.9.9-1", root / "boot" / f"vmlinuz-{RELEASE}", None)


def test_the_named_modules_and_what_they_need_are_uncompressed_and_indexed(
        kernel: Kernel) -> None:
    moddir = kmodules.module_dir(kernel)
    done = kmodules.uncompress(kernel, ["xfs", "dm_flakey", "not_in_this_kernel"])
    assert done == sorted(p for p in TREE if "snd" not in p)
    for path in done:
        plain = moddir / path.removesuffix(".xz")
        assert plain.read_text() == f"module {path}" and not (moddir / path).exists()
    assert (moddir / "kernel/sound/snd.ko.xz").exists()  # not the guest's: left compressed
    # depmod indexed the tree again: kmod finds the uncompressed files.
    assert "kernel/fs/xfs/xfs.ko:" in (moddir / "modules.dep").read_text()
    assert kmodules.uncompress(kernel, ["xfs", "dm_flakey"]) == []  # once


def test_a_run_killed_between_writing_and_removing_is_finished(kernel: Kernel) -> None:
    moddir = kmodules.module_dir(kernel)
    (moddir / "kernel/lib/libcrc32c.ko").write_text("module kernel/lib/libcrc32c.ko.xz")
    assert "kernel/lib/libcrc32c.ko.xz" in kmodules.uncompress(kernel, ["libcrc32c"])
    assert not (moddir / "kernel/lib/libcrc32c.ko.xz").exists()


def test_a_build_tree_and_a_kernel_outside_the_cache_are_left_alone(
        kernel: Kernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built = Kernel(RELEASE, None, kernel.vmlinuz, None, build_dir=kernel.vmlinuz.parent)
    assert kmodules.uncompress(built, ["xfs"]) == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))  # a user's own kernel
    assert kmodules.uncompress(kernel, ["xfs"]) == []
    assert (kernel.vmlinuz.parent.parent / "lib/modules" / RELEASE / "kernel/fs/xfs/xfs.ko.xz"
            ).exists()


def test_the_guest_names_its_filesystems_and_drivers() -> None:
    assert {"xfs", "btrfs", "ext4"} <= set(FILESYSTEMS) <= set(MODULES)
    assert {"rdma_rxe", "loop", "dm_flakey", "nd_pmem"} <= set(MODULES)
