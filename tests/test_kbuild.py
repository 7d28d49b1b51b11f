"""Kernels built from Debian's source package (kbuild.py), on synthetic data: no kernel is built."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from conformance import debian, kbuild
from conformance.debian import KernelNotFound
from conformance.kbuild import (
    FRAGMENT,
    BuildFailed,
    Progress,
    cache_key,
    config_gaps,
    parse_fragment,
    parse_spec,
    patched,
    repair,
    unmet,
)
from conformance.running_kernel import KernelConfig


@pytest.mark.parametrize("spec, parsed", [
    ("debian-src:6.12", ("6.12", None)),
    ("debian-src:6.1", ("6.1", None)),
    ("debian-src:6.12.118-1", ("6.12", "6.12.118-1")),
    ("debian-src:6.12.117-1~deb12u1", ("6.12", "6.12.117-1~deb12u1")),
])
def test_spec(spec: str, parsed: tuple[str, str | None]) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["debian-src:", "debian-src:sid", "debian-src:6", "debian:6.12",
                                  "debian-src:6.12.118"])
def test_bad_spec(spec: str) -> None:
    with pytest.raises(KernelNotFound, match="debian-src:SERIES"):
        parse_spec(spec)


def test_patches_need_a_source_kernel(tmp_path: Path) -> None:
    with pytest.raises(KernelNotFound, match="--patch needs"):
        debian.resolve("debian:6.12", cache=tmp_path, patches=[tmp_path / "x.patch"])


def test_fragment_parsing() -> None:
    text = "# a comment\nCONFIG_A=y\n  CONFIG_B=\"x y\"\n# CONFIG_C is not set\nCONFIG_D=8\n"
    assert parse_fragment(text) == {"CONFIG_A": "y", "CONFIG_B": '"x y"', "CONFIG_C": "n",
                                    "CONFIG_D": "8"}


def test_shipped_fragment_asks_for_what_pinhole_needs() -> None:
    wanted = parse_fragment(FRAGMENT.read_text())
    for name, ok, _ in kbuild.NEEDS:
        assert wanted.get(name) in ok, name
    assert wanted["CONFIG_MODULES"] == "n"  # the guest boots the bzImage alone
    assert all(v != "m" for v in wanted.values())


def test_unmet_lists_options_that_did_not_stick() -> None:
    wanted = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "y", "CONFIG_D": "n", "CONFIG_E": "4"}
    final = "CONFIG_A=y\n# CONFIG_C is not set\nCONFIG_D=y\nCONFIG_E=4\n"
    assert unmet(wanted, final) == ["CONFIG_C=y (got n)", "CONFIG_D=n (got y)"]
    assert unmet(wanted, "CONFIG_A=y\nCONFIG_C=y\n# CONFIG_D is not set\nCONFIG_E=4\n") == []


def test_cache_key_is_stable_and_sensitive() -> None:
    base = cache_key("6.12.118-1", "CONFIG_A=y\n", [b"p1", b"p2"])
    assert base == cache_key("6.12.118-1", "CONFIG_A=y\n", [b"p1", b"p2"])
    assert len({base,
                cache_key("6.12.117-1", "CONFIG_A=y\n", [b"p1", b"p2"]),
                cache_key("6.12.118-1", "CONFIG_A=n\n", [b"p1", b"p2"]),
                cache_key("6.12.118-1", "CONFIG_A=y\n", [b"p1", b"p2 "]),
                cache_key("6.12.118-1", "CONFIG_A=y\n", [b"p2", b"p1"]),
                cache_key("6.12.118-1", "CONFIG_A=y\n", [b"p1p2"]),
                cache_key("6.12.118-1", "CONFIG_A=y\n", [])}) == 7


def test_config_gaps() -> None:
    full = {name: ok[0] for name, ok, _ in kbuild.NEEDS}
    assert config_gaps(KernelConfig("/x", full)) == []
    assert config_gaps(KernelConfig("/x", {**full, "CONFIG_RDMA_RXE": "m"})) == []
    lacking = {k: v for k, v in full.items() if k not in ("CONFIG_GUP_TEST", "CONFIG_FS_DAX")}
    assert config_gaps(KernelConfig("/x", {**lacking, "CONFIG_UDMABUF": "n"})) == [
        "CONFIG_GUP_TEST is n: the gup_test row will skip",
        "CONFIG_UDMABUF is n: the udmabuf row will skip",
        "CONFIG_FS_DAX is n: ext4-dax and xfs-dax will skip",
    ]
    assert config_gaps(KernelConfig("")) == [
        "no kernel config known: cannot tell in advance which rows will skip"]


def test_options_younger_than_the_kernel_are_no_gap() -> None:
    """Debian's 6.1 has no CONFIG_BLK_DEV_WRITE_MOUNTED: before v6.8 writes to mounted devices
    were always allowed, so its absence costs nothing there."""
    full = {name: ok[0] for name, ok, _ in kbuild.NEEDS}
    del full["CONFIG_BLK_DEV_WRITE_MOUNTED"]
    assert config_gaps(KernelConfig("/x", full), (6, 1, 0)) == []
    assert config_gaps(KernelConfig("/x", full), (6, 12, 0)) == [
        "CONFIG_BLK_DEV_WRITE_MOUNTED is n: ext4 and xfs fail to mount their loop devices "
        "(EBUSY)"]


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "gup.c").write_text("one\ntwo\nthree\n")
    patch = tmp_path / "p.patch"
    patch.write_text("--- a/mm/gup.c\n+++ b/mm/gup.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n")
    return tree, patch


def test_patches_are_applied_then_reversed(tmp_path: Path) -> None:
    tree, patch = _tree(tmp_path)
    with patched(tree, [patch]):
        assert (tree / "mm" / "gup.c").read_text() == "one\nTWO\nthree\n"
        assert (tree / kbuild.APPLIED).read_text().split() == [".pinhole-patch-0"]
    assert (tree / "mm" / "gup.c").read_text() == "one\ntwo\nthree\n"
    assert sorted(p.name for p in tree.iterdir()) == ["mm"]


def test_a_crash_mid_build_is_repaired_on_next_use(tmp_path: Path) -> None:
    tree, patch = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt), patched(tree, [patch]):
        # What a kill -9 leaves: the record and the patched file; the finally never ran.
        subprocess.run(["cp", "-a", str(tree), str(tmp_path / "crashed")], check=True)
        raise KeyboardInterrupt
    crashed = tmp_path / "crashed"
    assert (crashed / "mm" / "gup.c").read_text() == "one\nTWO\nthree\n"
    repair(crashed)
    assert (crashed / "mm" / "gup.c").read_text() == "one\ntwo\nthree\n"
    assert not (crashed / kbuild.APPLIED).exists()


def test_a_patch_that_does_not_apply_leaves_the_tree_clean(tmp_path: Path) -> None:
    tree, patch = _tree(tmp_path)
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/mm/gup.c\n+++ b/mm/gup.c\n@@ -1,2 +1,2 @@\n-nope\n+NOPE\n two\n")
    with pytest.raises(BuildFailed, match="bad.patch does not apply"), patched(tree,
                                                                             [patch, bad]):
        pytest.fail("the body must not run")
    assert (tree / "mm" / "gup.c").read_text() == "one\ntwo\nthree\n"
    assert sorted(p.name for p in tree.iterdir()) == ["mm"]


def test_a_cached_build_needs_neither_apt_nor_make(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src" / "6.12.118-1").mkdir(parents=True)
    _, patch = _tree(tmp_path)
    key = cache_key("6.12.118-1", FRAGMENT.read_text(), [patch.read_bytes()])
    done = tmp_path / "builds" / key
    done.mkdir(parents=True)
    for name in ("bzImage", "config"):
        (done / name).write_text("")
    (done / "release").write_text("6.12.118\n")

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError(f"ran {a}")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    k = debian.resolve("debian-src:6.12.118-1", cache=tmp_path, patches=[patch])
    assert (k.vmlinuz, k.config_path, k.release) == (done / "bzImage", done / "config", "6.12.118")
    # A series spec reuses the version it found within the day, without apt-cache.
    (tmp_path / "src" / "newest-6.12").write_text("6.12.118-1\n")
    assert debian.resolve("debian-src:6.12", cache=tmp_path, patches=[patch]).vmlinuz == (
        done / "bzImage")


def test_progress_off_a_tty_prints_plain_lines() -> None:
    out = io.StringIO()
    p = Progress("debian-src:6.12.118-1 (0 patches)", out)
    for line in ("  CC      mm/gup.o\n", "  LD      vmlinux.o\n", "  AS      arch/x86/entry.o\n"):
        p.line(line)
    p.done()
    assert p.objects == 2
    assert out.getvalue() == ("pinhole: building debian-src:6.12.118-1 (0 patches): 0:00, "
                              "0 objects compiled\n")


def test_a_failed_build_leaves_only_its_log(tmp_path: Path) -> None:
    tree = tmp_path / "src" / "6.12.118-1"
    tree.mkdir(parents=True)
    (tree / "Makefile").write_text("allnoconfig:\n\t@echo no compiler here; exit 2\n")
    with pytest.raises(BuildFailed, match=r"^make allnoconfig failed \(log: .*\.failed\.log\)$"):
        kbuild.build("debian-src:6.12.118-1", [], cache=tmp_path)
    key = cache_key("6.12.118-1", FRAGMENT.read_text(), [])
    left = list((tmp_path / "builds").iterdir())
    assert [p.name for p in left] == [f"{key}.failed.log"]
    assert "no compiler here" in left[0].read_text()


def test_a_series_is_the_newest_source_and_remembered(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    madison = "\n".join(f"linux-source-6.12 | {v} | http://deb.debian.org/debian x/main amd64"
                        for v in ("6.12.117-1", "6.12.118-1", "6.12.117-1~deb12u1"))
    calls = []
    monkeypatch.setattr(debian.Apt, "setup", lambda self: None)
    monkeypatch.setattr(debian.Apt, "lists_age", lambda self: 0.0)
    monkeypatch.setattr(debian.Apt, "run", lambda self, *a, **k: calls.append(a) or madison)
    assert kbuild.source_version("debian-src:6.12", tmp_path) == "6.12.118-1"
    assert kbuild.source_version("debian-src:6.12", tmp_path) == "6.12.118-1"
    assert len(calls) == 1
    with pytest.raises(KernelNotFound, match="no linux-source-6.12 6.12.99-1; available"):
        kbuild.source_version("debian-src:6.12.99-1", tmp_path)
