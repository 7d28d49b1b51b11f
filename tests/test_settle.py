"""pin-to-file's remount, once a group: its files wait, closed, for one unmount and mount of
their backing, and are judged on what storage gives back, as when each cell remounted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import results, runner
from conformance.backings.blockfs import BlockFs
from conformance.expectations import Spec
from conformance.guest import HOLD_IN
from conformance.model import Case, Cell
from conformance.worker import Worker

ROOT = Path(__file__).resolve().parent.parent

GROUP = "odirect.{backing}.shared.rw.written"
MUTATIONS = ("none", "pwrite", "punch-hole", "store")
CHECKS = ("file-to-pin", "pin-to-file")


def cells(backing: str) -> list[Cell]:
    group = GROUP.format(backing=backing)
    return [Cell(tuple(Case.from_id(f"{group}.{m}.{c}") for c in CHECKS)) for m in MUTATIONS]


@pytest.fixture
def counted_remounts(monkeypatch) -> list[str]:
    seen: list[str] = []
    remount = BlockFs.remount

    def counting(self: BlockFs) -> bool:
        seen.append(self.name)
        return remount(self)

    monkeypatch.setattr(BlockFs, "remount", counting)
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loop devices and mounts")
@pytest.mark.parametrize("backing", ["ext4", "xfs"])
def test_a_groups_files_wait_for_one_remount(backing: str, counted_remounts) -> None:
    spec, worker = Spec.load(), Worker()
    try:
        ran = [r for cell in cells(backing) for r in runner.run_cell(cell, worker, spec)]
        assert [r.case.check for r in ran] == ["file-to-pin"] * len(MUTATIONS)
        assert [w.case.mutation for w in worker.waiting] == list(MUTATIONS)
        assert counted_remounts == [], "no cell remounts on its own"
        files = {w.stored.subject.name for w in worker.waiting}
        assert len(files) == len(MUTATIONS)
        assert files <= set(os.listdir(worker.backing(backing).mount.path())), "files wait"

        settled = runner.settle(worker, spec)
        assert counted_remounts == [backing]
        assert worker.waiting == [] and runner.settle(worker, spec) == []
        assert not files & set(os.listdir(worker.backing(backing).mount.path()))
        # As when each cell remounted its own file: the spec's verdicts, read from storage.
        assert [(r.case.mutation, r.verdict) for r in settled] == [
            (m, "pass") for m in MUTATIONS]
        assert all("unmount and mount" in r.detail for r in settled), settled
        assert all(r.duration_s > 0 for r in settled)
    finally:
        worker.close()


def test_a_case_waiting_for_the_remount_is_not_cut_off(tmp_path: Path) -> None:
    """progress.jsonl: a case set aside for the remount was not running when the run died;
    the remount's own begin makes it running again."""
    cell = "io_uring.ext4.shared.rw.written.none"
    later = "io_uring.ext4.shared.rw.written.pwrite"
    lines = [
        {"run": {"started": 0}},
        {"begin": cell, "cases": [f"{cell}.file-to-pin", f"{cell}.pin-to-file"]},
        {"case": {"id": f"{cell}.file-to-pin"}},
        {"waiting": [f"{cell}.pin-to-file"]},
        {"begin": later, "cases": [f"{later}.file-to-pin", f"{later}.pin-to-file"]},
    ]
    (tmp_path / results.PROGRESS).write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert results.read_progress(tmp_path)[2] == [f"{later}.file-to-pin",
                                                  f"{later}.pin-to-file"]
    remount = {"begin": "remount for io_uring.ext4.shared.rw.written",
               "cases": [f"{cell}.pin-to-file"]}
    with open(tmp_path / results.PROGRESS, "a") as f:
        f.write(json.dumps(remount) + "\n")
    assert results.read_progress(tmp_path)[2][-1] == f"{cell}.pin-to-file"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loop devices and mounts")
def test_a_timeout_outside_a_cell_leaves_nothing_for_the_next_groups_remount(
        tmp_path: Path) -> None:
    """A timeout that lands between cells (here in the held cell's wait, before its trial)
    leaves the run going: the cases whose files waited are not judged, and the next group's
    remount must not judge them after all (their records would then say two things)."""
    held = "odirect.ext4.shared.rw.written.pwrite"
    env = {**os.environ, HOLD_IN: held, "PINHOLE_SCRATCH": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "cases/test_matrix.py", "-p", "no:cacheprovider",
         "-q", "--pin=odirect", "--backing=ext4", "--state=written", "--timeout=5",
         f"--pinhole-out={tmp_path / 'out'}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    doc = results.load(tmp_path / "out" / results.FILE)
    by_id = {c["id"]: c for c in doc["cases"]}
    before = by_id["odirect.ext4.shared.rw.written.none.pin-to-file"]
    assert before["verdict"] == "error" and before["reason"].startswith(
        f"not judged: its group stopped in {held} (Failed)"), before
    cut = by_id[f"{held}.pin-to-file"]
    assert cut["reason"].startswith("TIMEOUT"), cut
    later = [c for c in doc["cases"] if c["id"].startswith("odirect.ext4.private.")]
    assert later and not [c for c in later if c["verdict"] in ("fail", "error")]
