"""Robustness on the real kernel: killed runs and workers leave nothing behind and lose
nothing that finished, a hung case is stopped, repeated runs agree, and pinhole never
touches what it did not create."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conformance import hugepages, results
from conformance.guest import HOLD_IN

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ["--backing=memfd,memfd-hugetlb,ext4,xfs", "--state=hole,written"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: loop devices, mounts and hugepages")


def start_run(out: Path, scratch: Path, *args: str, workers: str = "2",
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """pytest -n 2 over io_uring cases, in a session of its own so it can be killed whole."""
    env = {**os.environ, "PINHOLE_SCRATCH": str(scratch), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "cases/test_matrix.py", "--pin=io_uring",
         "-p", "no:cacheprovider", "-q", "-n", workers, f"--pinhole-out={out}", *SELECTION, *args],
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
    cut = {c["id"]: c for c in doc["cases"] if c["id"] in doc["cut_off"]}
    assert set(cut) == set(doc["cut_off"]), "the cases cut off are recorded"
    assert all(c["verdict"] == "error" and "died" in c["reason"] for c in cut.values())
    assert doc["incomplete"] and results.run_exit(doc) == results.EXIT_FAIL


def pid_running(out: Path, cell: str) -> int | None:
    """The process that began the cell, from its begin record in progress.jsonl."""
    try:
        lines = (out / results.PROGRESS).read_text().split("\n")
    except FileNotFoundError:
        return None
    for line in lines[:-1]:  # after the last newline: nothing, or a line part written
        if f'"begin": "{cell}"' in line:
            return json.loads(line)["pid"]
    return None


# Held mid-group, so the kill lands while a cell runs: a group of fast cells, killed at a
# random moment, had often finished them all (in .ci/run, three times out of three). On ext4
# the cells before it have pin-to-file files waiting for the group's remount.
@pytest.mark.parametrize("held", ["io_uring.memfd.shared.rw.written.punch-hole",
                                  "io_uring.ext4.private.rw.written.punch-hole"])
def test_sigkill_of_one_worker(tmp_path: Path, scratch: Path, held: str) -> None:
    before = nr_hugepages()
    out = tmp_path / "out"
    run = start_run(out, scratch, env={HOLD_IN: held})
    wait_for(lambda: pid_running(out, held) is not None)
    os.kill(pid_running(out, held), signal.SIGKILL)
    assert run.wait(timeout=600) == 1, "a dead worker must fail the run"
    doc = results.load(out / results.FILE)
    errors = {c["id"]: c["reason"] for c in doc["cases"] if c["verdict"] == "error"}
    group = held.rsplit(".", 1)[0]
    # The held cell died with its worker; the cells its group had finished are kept (from
    # progress.jsonl), the cells after it are named as never run, and the cases of the
    # cells before it that waited for the remount as never judged.
    assert all(i.startswith(group + ".") for i in errors), errors
    died = {i.rsplit(".", 1)[0] for i, why in errors.items() if "worker" in why
            and not why.startswith(("never ran", "not judged"))}
    assert died == {held}, errors
    never = [i for i in errors if errors[i].startswith("never ran")]
    assert never and all(errors[i].startswith(f"never ran: its group stopped in {held}: ")
                         for i in never)
    unjudged = [i for i in errors if errors[i].startswith("not judged")]
    assert all(i.endswith(".pin-to-file") and errors[i].startswith(
        f"not judged: its group stopped in {held} before the remount") for i in unjudged)
    assert bool(unjudged) == ("ext4" in held), errors
    assert set(errors) == {*never, *unjudged, *(i for i in errors if i.startswith(held + "."))}
    assert any(c["id"].startswith(group + ".none.") and c["verdict"] == "pass"
               for c in doc["cases"]), "the cells before it were lost"
    assert len(doc["cases"]) > 800, "the other cases must still run"
    wait_for(lambda: not our_loops(scratch) and hugepages_given_back(before), 15)


def test_a_hung_case_is_stopped_and_the_run_goes_on(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    # Without xdist: a limit this short would also fire inside xdist's own worker loop.
    run = start_run(out, scratch, "--timeout=0.001", "--mutation=none", workers="0")
    assert run.wait(timeout=300) == 1
    doc = results.load(out / results.FILE)
    errors = [c for c in doc["cases"] if c["verdict"] == "error"]
    timed_out = [c for c in errors if c["reason"].startswith("TIMEOUT")]
    assert timed_out, "nothing timed out with a 1 ms limit"
    assert timed_out == errors, "a timeout must leave nothing broken for the cases after it"
    # A timeout between a pin and its release once left the ring holding the buffer, and
    # later cells failed with EBUSY: the worker now sets up afresh after one.
    assert not [c for c in doc["cases"] if c["verdict"] == "fail"]
    assert len(doc["cases"]) == 4 * 2 * 2 * 4, "every case is reported, timed out or not"


@pytest.mark.timeout(1800)  # three whole runs: over 300 s on a busy two-core machine
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


def start_pinhole(out: Path, scratch: Path, *args: str,
                  env: dict[str, str] | None = None) -> subprocess.Popen:
    """pinhole run -n 2 over the io_uring selection, its output kept for the test."""
    env = {**os.environ, "PINHOLE_SCRATCH": str(scratch), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "run", f"--out={out}", "-n", "2", "-q",
         "--pin=io_uring", *SELECTION, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def family(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_reports_what_it_did(tmp_path: Path, scratch: Path, sig: int) -> None:
    out = tmp_path / "out"
    # The whole selection takes 3 s: in .ci/run's long session the signal landed after its
    # end, or between two groups with nothing running. A held cell is running when it lands.
    held = "io_uring.ext4.shared.rw.hole.pwrite"
    run = start_pinhole(out, scratch, env={HOLD_IN: held})

    def held_cell_began() -> bool:
        return any(i.startswith(held + ".") for i in results.recover(out)[1])

    wait_for(held_cell_began)
    descendants = family(run.pid)
    assert any("pytest" in " ".join(p.cmdline()) for p in descendants)
    t0 = time.monotonic()
    run.send_signal(sig)
    stdout, stderr = run.communicate(timeout=60)
    assert time.monotonic() - t0 < 25, "a stop must take seconds"
    assert run.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and f"stopped by {signal.Signals(sig).name}" in stderr
    assert "INCOMPLETE: " in stdout, stdout
    doc = results.load(out / results.FILE)
    assert doc["incomplete"] and len(doc["cases"]) >= 40
    # Cut off: the cells the two workers were running, not the rest of their groups.
    assert 0 < len({i.rsplit(".", 1)[0] for i in doc["cut_off"]}) <= 2, doc["cut_off"]
    assert any(i.startswith(held + ".") for i in doc["cut_off"]), doc["cut_off"]
    for name in ("results.ktap", "matrix.md", "matrix.html", "summary.md"):
        assert "INCOMPLETE" in (out / name).read_text(), name
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                             for p in descendants), 10)


def test_sigkill_of_pinhole_leaves_no_orphan(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    run = start_pinhole(out, scratch)
    wait_for(lambda: finished(out) >= 40)
    descendants = family(run.pid)
    assert len(descendants) >= 3, "pytest and its two workers"
    run.kill()
    run.communicate()

    def gone() -> bool:
        return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                       for p in descendants)

    wait_for(gone, 10)
    wait_for(lambda: not our_loops(scratch), 15)
    r = subprocess.run([sys.executable, "-m", "conformance.cli", "report", str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "INCOMPLETE: the run died" in r.stdout, r.stdout + r.stderr
    assert "# INCOMPLETE" in (out / "results.ktap").read_text()


@pytest.mark.timeout(1800)
def test_one_out_directory_one_run(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    first = start_pinhole(out, scratch)
    wait_for(lambda: finished(out) >= 10)
    second = start_pinhole(out, scratch)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2 and err.count("\n") == 1, err
    assert "another pinhole run is writing there" in err
    first.communicate(timeout=600)
    assert first.returncode in (0, 1, 3), "the first run goes on"
    old = results.load(out / results.FILE)
    (out / "mine.txt").write_text("not pinhole's")
    third = start_pinhole(out, scratch, "--mutation=none")
    _, err = third.communicate(timeout=600)
    assert "removed the previous run's results" in err
    new = results.load(out / results.FILE)
    assert new["started"] > old["started"] and len(new["cases"]) < len(old["cases"])
    assert (out / "mine.txt").read_text() == "not pinhole's"


HUGETLB = ["--backing=memfd-hugetlb,hugetlbfs", "--state=hole,written"]


@pytest.mark.timeout(2700)
def test_two_concurrent_runs_agree_with_a_lone_one(tmp_path: Path) -> None:
    """Each run reserves its own hugepages: a concurrent run's reservation is not ours."""
    def pinhole(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "conformance.cli", "run", f"--out={out}",
                                 "-n", "2", "-q", *HUGETLB], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    lone = tmp_path / "lone"
    pinhole(lone).wait(timeout=900)
    a, b = pinhole(tmp_path / "a"), pinhole(tmp_path / "b")
    a.wait(timeout=900)
    b.wait(timeout=900)
    for out in (tmp_path / "a", tmp_path / "b"):
        diff = subprocess.run([sys.executable, "-m", "conformance.cli", "diff", str(lone),
                               str(out)], cwd=ROOT, capture_output=True, text=True)
        assert diff.returncode == 0 and "no change" in diff.stdout, diff.stdout
