"""pin-to-file's remount, once a group: its files wait, closed, for one unmount and mount of
their backing, and are judged on what storage gives back, as when each cell remounted."""

import json
import os
from pathlib import Path

import pytest

from conformance import results, runner
from conformance.backings.blockfs import BlockFs
from conformance.expectations import Spec
from conformance.model import Case, Cell
from conformance.worker import Worker

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
