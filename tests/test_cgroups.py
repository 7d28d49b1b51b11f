"""The guest's own cgroup, made in a directory that stands in for the cgroup2 mount."""

import os
from pathlib import Path

import pytest

from conformance import cgroups


def fake_root(tmp_path: Path, controllers: str) -> Path:
    (tmp_path / "cgroup.controllers").write_text(controllers + "\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


def test_the_guest_moves_into_a_memory_cgroup_of_its_own(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_root(tmp_path, "cpu memory pids")
    monkeypatch.setattr(cgroups, "mounts", lambda: [str(root)])
    assert cgroups.enter_own(root) == "/pinhole/main (memory controller on)"
    assert (root / "cgroup.subtree_control").read_text() == "+memory"
    assert (root / "pinhole" / "cgroup.subtree_control").read_text() == "+memory"
    assert not (root / "pinhole" / "cgroup.procs").exists()  # no process in an inner group
    assert (root / "pinhole" / "main" / "cgroup.procs").read_text() == str(os.getpid())
    # An xdist worker of that guest: a group of its own beside the main process's.
    assert cgroups.enter_worker("gw1", root) == "/pinhole/gw1 (memory controller on)"
    assert (root / "pinhole" / "gw1" / "cgroup.procs").read_text() == str(os.getpid())


def test_a_worker_outside_a_guest_cgroup_stays(tmp_path: Path) -> None:
    assert cgroups.enter_worker("gw0", fake_root(tmp_path, "memory")) is None
    assert not (tmp_path / "pinhole").exists()


@pytest.mark.parametrize("controllers,mounted,why", [
    ("cpu pids", True, "no memory controller (CONFIG_MEMCG)"),
    ("memory", False, "no cgroup2 at"),
])
def test_without_a_memory_cgroup2_it_stays_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, controllers: str, mounted: bool,
        why: str) -> None:
    root = fake_root(tmp_path, controllers)
    monkeypatch.setattr(cgroups, "mounts", lambda: [str(root)] if mounted else [])
    assert why in cgroups.enter_own(root)
    assert not (root / "pinhole").exists()
    assert (root / "cgroup.subtree_control").read_text() == ""
