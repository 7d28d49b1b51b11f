"""Robustness on the real kernel: killed runs and workers leave nothing behind and lose
nothing that finished, a hung case is stopped, repeated runs agree, and pinhole never
touches what it did not create."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conformance import hugepages, results

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ["--backing=memfd,memfd-hugetlb,ext4,xfs", "--state=hole,written"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: loop devices, mounts and hugepages")


def start_run(out: Path, scratch: Path, *args: str, workers: str = "2") -> subprocess.Popen:
    """pytest -n 2 over io_uring cases, in a session of its own so it can be killed whole."""
    env = {**os.environ, "PINHOLE_SCRATCH": str(scratch)}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "cases/test_io_uring.py", "-p", "no:cacheprovider",
         "-q", "-n", workers, f"--pinhole-out={out}", *SELECTION, *args],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finished(out: Path) -> int:
    return len(results.recover(out)[0])


def wait_for(condition, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {condition.__name__}"
        time.sleep(0.05)


def our_loops(scratch: Path) -> list[str]:
    """Loop devices whose image lives in this test's scratch directory."""
    found = []
    for path in Path("/sys/block").glob("loop*/loop/backing_file"):
        if path.read_text().startswith(str(scratch)):
            found.append(path.parent.parent.name)
    return found


def nr_hugepages() -> int:
    return int((hugepages.POOL / "nr_hugepages").read_text())


def hugepages_given_back(before: int) -> bool:
    """The pool is its old size and no page of it is still held (surplus) by the dead run."""
    surplus = int((hugepages.POOL / "surplus_hugepages").read_text())
    return nr_hugepages() == before and surplus == 0


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def test_sigkill_of_the_whole_run(tmp_path: Path, scratch: Path) -> None:
    before = nr_hugepages()
    out = tmp_path / "out"
    run = start_run(out, scratch)

    def started() -> bool:
        return finished(out) >= 40 and bool(our_loops(scratch))

    wait_for(started)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    def released() -> bool:
        return not our_loops(scratch) and hugepages_given_back(before)

    wait_for(released, 15)
    assert list(scratch.iterdir()) == [], "images left in the scratch directory"
    doc = results.salvage(out)
    assert len(doc["cases"]) >= 40, "finished cases were lost"
    assert all(case_id not in {c["id"] for c in doc["cases"]} for case_id in doc["cut_off"])


def test_sigkill_of_one_worker(tmp_path: Path, scratch: Path) -> None:
    before = nr_hugepages()
    out = tmp_path / "out"
    run = start_run(out, scratch)
    wait_for(lambda: finished(out) >= 40)
    # A worker, not the hugepage guardian (also a child of the controller).
    victim = next(p for p in psutil.Process(run.pid).children()
                  if "conformance.hugepages" not in " ".join(p.cmdline()))
    victim.kill()
    assert run.wait(timeout=600) == 1, "a dead worker must fail the run"
    doc = results.load(out / "results.json")
    died = [c for c in doc["cases"] if c["verdict"] == "error"]
    assert died and all("worker" in c["reason"] for c in died), died
    assert len(doc["cases"]) > 500, "the other cases must still run"
    wait_for(lambda: not our_loops(scratch) and hugepages_given_back(before), 15)


def test_a_hung_case_is_stopped_and_the_run_goes_on(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    # Without xdist: a limit this short would also fire inside xdist's own worker loop.
    run = start_run(out, scratch, "--timeout=0.001", "--mutation=none", workers="0")
    assert run.wait(timeout=300) == 1
    doc = results.load(out / "results.json")
    errors = [c for c in doc["cases"] if c["verdict"] == "error"]
    assert errors, "nothing timed out with a 1 ms limit"
    assert all(c["reason"].startswith("TIMEOUT") for c in errors), errors[0]["reason"]
    assert len(doc["cases"]) == 4 * 2 * 2 * 4, "every case is reported, timed out or not"


def test_three_runs_agree(tmp_path: Path) -> None:
    outs = []
    for i in range(3):
        out = tmp_path / f"run{i}"
        subprocess.run([sys.executable, "-m", "conformance.cli", "run", f"--out={out}",
                        "-n", "2", "-q", *SELECTION], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        outs.append(out)
    for a, b in zip(outs, outs[1:], strict=False):
        diff = subprocess.run([sys.executable, "-m", "conformance.cli", "diff", str(a), str(b)],
                              cwd=ROOT, capture_output=True, text=True)
        assert diff.returncode == 0 and "no change" in diff.stdout, diff.stdout


def test_pinhole_touches_only_what_it_created(tmp_path: Path, scratch: Path) -> None:
    planted = {tmp_path / "beside.txt": "mine", scratch / "inside.txt": "mine too"}
    for path, text in planted.items():
        path.write_text(text)
    stamps = {path: path.stat().st_mtime_ns for path in planted}
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "planted", str(mnt)], check=True)
    try:
        (mnt / "file").write_text("x")
        start_run(tmp_path / "out", scratch, "--mutation=none,truncate-down").wait(timeout=600)
        for path, text in planted.items():
            assert path.read_text() == text and path.stat().st_mtime_ns == stamps[path]
        assert sorted(p.name for p in scratch.iterdir()) == ["inside.txt"]
        assert (mnt / "file").read_text() == "x"
        mounts = Path("/proc/mounts").read_text().splitlines()
        assert any(line.split()[1] == str(mnt) for line in mounts)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
