"""The pinhole command's answers to good and bad input."""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import kernelview, results
from conformance.reports import kcidb

ROOT = Path(__file__).resolve().parent.parent


def pinhole(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args,message", [
    (["run", "--backing", "ext5"], "unknown backing 'ext5'; valid: memfd"),
    (["run", "--pin", "dma"], "unknown pin 'dma'; valid: io_uring"),
    (["spec", "--explain", "io_uring.ext4"], "a case id has 7 parts"),
])
def test_bad_names_give_one_line_and_exit_2(args, message):
    r = pinhole(*args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_out_into_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = pinhole("run", "--out", str(f / "x"))
    assert r.returncode == 2 and "cannot write there" in r.stderr


def test_matrix_out_the_vm_cannot_write_is_refused_before_any_fetch(tmp_path):
    out = tmp_path / "debian:6.12"
    r = pinhole("matrix", "--kernel", "debian:6.12", "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "takes only letters, digits" in r.stderr and "':'" in r.stderr
    assert not out.exists()


def test_bad_spec_file_names_file_and_line(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[[expect]]\noutcome = "coherent"\nreason = "r"\nbacking = "nfs"\n')
    r = pinhole("run", "--spec", str(f))
    assert r.returncode == 2 and f"{f}:1: unknown backing 'nfs'" in r.stderr


def test_probe_json_and_table():
    doc = json.loads(pinhole("probe", "--json").stdout)
    assert {"kernel", "root", "io_uring", "memlock", "backings", "pins", "kpageflags"} <= set(doc)
    assert set(doc["backings"]) >= {"memfd", "ext4", "xfs-dax"}
    assert all(v["reason"] for v in doc["backings"].values())
    table = pinhole("probe").stdout
    assert "backing memfd" in table and "pin io_uring" in table


def test_explain_cites_the_commit():
    r = pinhole("spec", "--explain", "io_uring.xfs.shared.rw.hole.none.admission",
                "--kernel", "6.18")
    assert r.returncode == 0 and "refused EFAULT" in r.stdout and "8ac268436e6d" in r.stdout


NARROW = ["--pin", "io_uring", "--backing", "memfd", "--state", "hole", "--mutation", "none",
          "-n", "0", "-q"]
CONTROLS = {"control.coherence.file-to-pin", "control.coherence.pin-to-file",
            "control.coherence.file-to-pin-huge", "control.coherence.pin-to-file-huge",
            "control.kernel-log.drop-caches", "control.lost-write.drop-writes",
            "control.zeropage.anon", "control.zeropage.thp"}


def test_controls_are_recorded_in_every_report(tmp_path):
    out = tmp_path / "out"
    r = pinhole("run", "--out", str(out), *NARROW)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    doc = results.load(out / results.FILE)
    controls = {c["id"]: c for c in doc["cases"] if c["pin"] == "control"}
    assert set(controls) == CONTROLS
    ktap = (out / "results.ktap").read_text()
    kcidb_ = {t["path"] for t in kcidb.load(out / "kcidb.json.gz")["tests"]}
    for control in CONTROLS:
        assert f" {control}" in ktap and control in kcidb_
    assert "## control" in (out / "matrix.md").read_text()
    assert "control" in (out / "matrix.html").read_text()
    junit = ET.fromstring((out / "junit.xml").read_text())
    names = {f"{t.get('classname')}.{t.get('name')}" for t in junit.iter("testcase")}
    ran = {i for i, c in controls.items() if c["verdict"] != "skip"}  # junit folds skips
    assert names >= ran and not any("NOTSET" in n for n in names)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_a_failed_control_fails_the_run():
    """As nobody with RLIMIT_MEMLOCK 0 io_uring has no rings: every case skips, but the
    io_uring coherence controls fail, and so does the run."""
    with tempfile.TemporaryDirectory() as where:  # pytest's tmp_path is root's only
        Path(where).chmod(0o777)
        run_as_nobody_without_memlock(Path(where) / "out")


def run_as_nobody_without_memlock(out: Path) -> None:
    cmd = shlex.join([sys.executable, "-m", "conformance.cli", "run", "--out", str(out), *NARROW])
    r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"ulimit -l 0; {cmd}"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = results.load(out / results.FILE)
    failed = {c["id"] for c in doc["cases"] if c["verdict"] == "fail"}
    assert failed == {"control.coherence.file-to-pin", "control.coherence.pin-to-file"}
    assert "not ok 1 control.coherence.file-to-pin" in (out / "results.ktap").read_text()


def bad_input(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """pinhole in cwd with no --out: a refused run must leave no pinhole-runs/<stamp>."""
    r = subprocess.run([sys.executable, "-m", "conformance.cli", *args], capture_output=True,
                       text=True, cwd=cwd, env={**os.environ, **(env or {})})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not list(cwd.glob("pinhole-runs/*")), "a refused run left a directory"
    return r


def spec_file(tmp_path: Path, text: str | bytes) -> Path:
    f = tmp_path / "layer.toml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


ENTRY = '[[expect]]\npin = "io_uring"\noutcome = "{outcome}"\nreason = "r"\n'


@pytest.mark.parametrize("text,message", [
    (ENTRY.format(outcome="refused") + 'errno = "EBANANA"\n', "unknown errno 'EBANANA'"),
    (ENTRY.format(outcome="pinned") + 'kernel = ">=6.5,<6.1"\n', "matches no version"),
    (ENTRY.format(outcome="pinned") + 'kernel = ">6.5,<=6.5"\n', "matches no version"),
    (b'[[expect]]\nreason = "caf\xe9"\n', "not UTF-8"),
])
def test_a_bad_spec_is_one_line(tmp_path, text, message):
    f = spec_file(tmp_path, text)
    r = bad_input(tmp_path, "run", "--spec", str(f))
    assert message in r.stderr and str(f) in r.stderr


def test_kernel_specific_errno_names_are_accepted(tmp_path):
    f = spec_file(tmp_path, ENTRY.format(outcome="refused") + 'errno = "EBADFD"\n')
    r = pinhole("spec", "--spec", str(f), "--explain",
                "io_uring.memfd.shared.rw.hole.none.admission")
    assert r.returncode in (0, 1) and "error" not in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a read-only mount")
@pytest.mark.parametrize("kind", ["missing", "file", "read-only"])
def test_a_bad_scratch_directory_is_one_line(tmp_path, kind):
    where = tmp_path / "scratch"
    if kind == "file":
        where.write_text("")
    if kind == "read-only":
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "ro", str(where)],
                       check=True)
    try:
        r = bad_input(tmp_path, "run", "--pin", "io_uring", env={"PINHOLE_SCRATCH": str(where)})
    finally:
        if kind == "read-only":
            subprocess.run(["umount", str(where)], check=True)
    assert f"PINHOLE_SCRATCH={where}" in r.stderr


def test_every_kernel_is_resolved_before_any_boots(tmp_path):
    """A bad second kernel is refused before the first (a good one) boots: no VM, no output
    directory, exit 2 at once."""
    from test_kernels import _bzimage

    good = tmp_path / "vmlinuz-6.18.0-test"
    _bzimage(good, "6.18.0-test")
    t0 = time.monotonic()
    r = bad_input(tmp_path, "matrix", "--kernel", str(good), "--kernel",
                  str(tmp_path / "vmlinuz-missing"), "--pin", "io_uring")
    assert "vmlinuz-missing" in r.stderr and time.monotonic() - t0 < 30


FORCED_FAIL = ('[[expect]]\npin = "io_uring"\nbacking = "memfd"\nmapping = "shared"\n'
               'state = "hole"\ncheck = "admission"\noutcome = "refused"\nerrno = "EPERM"\n'
               'reason = "forced to fail by the test"\n')


def test_pytest_options_pass_through(tmp_path):
    """-p no:xdist (pinhole's -n must go), -x (stops: the run is incomplete, exit 1) and
    --lf (needs pytest's cache, which pinhole used to turn off)."""
    cache = ["-o", f"cache_dir={tmp_path / 'cache'}"]
    layer = spec_file(tmp_path, FORCED_FAIL)
    r = pinhole("run", "--out", str(tmp_path / "serial"), *NARROW, "-p", "no:xdist", *cache)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    narrow = [a for a in NARROW if a not in ("-n", "0")]
    r = pinhole("run", "--out", str(tmp_path / "x"), "--spec", str(layer), *narrow, "-n", "0",
                "-x", *cache)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = results.load(tmp_path / "x" / results.FILE)
    assert doc["incomplete"].startswith("the run was stopped"), doc.get("incomplete")
    r = pinhole("run", "--out", str(tmp_path / "lf"), *narrow, "-n", "0", "--lf", *cache)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    doc = results.load(tmp_path / "lf" / results.FILE)  # the failed cell, all its cases
    cells = {c["id"].rsplit(".", 1)[0] for c in doc["cases"]}
    assert cells == {"io_uring.memfd.shared.rw.hole.none"}
    assert not doc.get("incomplete")


@pytest.mark.parametrize("args,off", [([], False), (["-x"], False), (["-p", "no:xdist"], True),
                                      (["-pno:xdist", "-q"], True), (["-p", "no:cov"], False)])
def test_xdist_disabled(args, off):
    from conformance.cli import xdist_disabled

    assert xdist_disabled(args) is off


@pytest.mark.parametrize("dims,args,workers", [
    ({}, [], ["-n", "2"]),  # the whole matrix
    ({"state": ["hole,written"], "mutation": ["none,pwrite,store,pin-write,punch-hole,"
                                              "truncate-down,odirect-write,fork-write"]},
     [], []),  # CI's selection: 2,412 cells
    ({}, ["-k", "ext4"], ["-n", "2"]),  # 5,280 cells
    ({}, ["-k", "ext4 and io_uring"], []),
    ({"shard": "1/8"}, [], []),
    ({}, ["-n", "1"], []), ({}, ["-p", "no:xdist"], []), ({}, ["--numprocesses=3"], []),
    ({}, ["-n", "0"], []),
])
def test_a_large_selection_runs_in_a_worker_a_vcpu_in_the_guest(dims, args, workers, capsys):
    import argparse

    from conformance.cli import VOCABULARY, guest_workers

    ns = argparse.Namespace(**{d: dims.get(d, []) for d in VOCABULARY}, shard=dims.get("shard"))
    assert guest_workers(ns, args, 2) == workers
    assert ("2 xdist workers, one a vCPU" in capsys.readouterr().out) == bool(workers)


def test_old_runs_are_pruned_but_not_a_running_one_nor_foreign_files(tmp_path, monkeypatch):
    import fcntl

    from conformance import cli

    monkeypatch.chdir(tmp_path)
    runs = []
    for stamp in ("20260101-000000", "20260102-000000", "20260103-000000", "20260104-000000"):
        d = tmp_path / "pinhole-runs" / f"{stamp}-k"
        (d / "6.12").mkdir(parents=True)
        for f in (d / cli.LOCK, d / results.FILE, d / "diff-a-b.txt", d / "6.12" / "matrix.md"):
            f.write_text("")
        runs.append(d)
    (runs[1] / "notes.txt").write_text("the user's")  # not ours: stays, with its directory
    held = os.open(runs[2] / cli.LOCK, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # a run still writing there
    try:
        gone = cli.prune_runs(1)
    finally:
        os.close(held)
    assert [p.resolve() for p in gone] == [runs[0]] and not runs[0].exists()
    assert sorted(p.name for p in runs[1].iterdir()) == ["notes.txt"]
    assert (runs[2] / results.FILE).exists() and (runs[3] / results.FILE).exists()
    monkeypatch.setenv(cli.KEEP_ENV, "none")
    with pytest.raises(cli.UsageError, match="PINHOLE_KEEP_RUNS"):
        cli.keep_runs()


@pytest.mark.skipif(kernelview.availability().ok,
                    reason="this kernel's debug info is here: the kernel view would run")
def test_kernel_view_without_debug_info_is_planned_skips(tmp_path):
    """Where the kernel view cannot run at all, its cases are known skips with the reason
    (how to get the debug info), planned like a missing pin: no trial is spent on them."""
    r = pinhole("run", "--out", str(tmp_path), "-n", "0", "--kernel-view", "--pin", "vmsplice",
                "--backing", "memfd", "--state", "hole", "--mutation", "none,pwrite")
    assert r.returncode == 0, r.stderr
    assert "known to skip" in r.stdout
    views = [c for c in results.load(tmp_path / results.FILE)["cases"]
             if c["check"] == "kernel-view"]
    assert views and all(c["verdict"] == "skip" and not c["duration_s"] for c in views)
    assert len({c["reason"] for c in views}) == 1


def test_a_closed_pipe_is_no_traceback():
    """`pinhole list --ids | head -1`: the reader stops early; exit 141 as a shell pipeline's
    writer would, with nothing on stderr."""
    run = subprocess.run(f"{sys.executable} -m conformance.cli list --ids | head -1; "
                         "echo \"${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                         cwd=ROOT, capture_output=True, text=True)
    first, status = run.stdout.splitlines()
    assert first and status == "141" and run.stderr == "", run


def test_cases_an_earlier_boot_recorded_are_neither_run_nor_recorded(tmp_path):
    """--pinhole-done: what pinhole matrix passes a boot after a panic. The panicked cell's
    group skips, with the reason; recorded cases and controls are left out."""
    done_cell = "vmsplice.memfd.shared.ro.hole.pwrite"
    done = tmp_path / "done.txt"
    group = "vmsplice.memfd.shared.ro.written"
    done.write_text(f"{done_cell}.file-to-pin\ncontrol.zeropage.anon\n"
                    f"panicked {group} {group}.none\n")
    out = tmp_path / "out"
    r = pinhole("run", "--pin", "vmsplice", "--backing", "memfd", "--state", "hole,written",
                "--mutation", "none,pwrite", "--out", str(out), f"--pinhole-done={done}")
    cases = {c["id"]: c for c in results.load(out / results.FILE)["cases"]}
    assert f"{done_cell}.file-to-pin" not in cases, r.stdout + r.stderr
    assert cases["vmsplice.memfd.shared.ro.hole.none.file-to-pin"]["verdict"] == "pass"
    assert "control.zeropage.anon" not in cases and "control.zeropage.thp" in cases
    skipped = cases["vmsplice.memfd.shared.ro.written.pwrite.file-to-pin"]
    assert skipped["verdict"] == "skip"
    assert skipped["reason"].startswith("not run: the kernel panicked in "
                                        "vmsplice.memfd.shared.ro.written.none")


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_pinhole_reads_the_record_as_soon_as_pytest_says_it_is_written(pidfd, monkeypatch):
    """run_pytest() hears on its pipe that the record is written and has it read then, while
    pytest still ends; a pytest that ends without saying so is waited for as before. The
    same without a pidfd (a kernel before 5.3)."""
    from conformance import cli

    if not pidfd:
        monkeypatch.setattr(cli, "pidfd", lambda pid: None)
    says = ("import os, time; os.write(int(os.environ['PINHOLE_READY_FD']), b'\\n'); "
            "time.sleep(1)")
    heard: list[float] = []
    code, stopped = cli.run_pytest([sys.executable, "-c", says],
                                   written=lambda: heard.append(time.monotonic()))
    assert (code, stopped) == (0, None) and len(heard) == 1
    assert time.monotonic() - heard[0] > 0.5  # before the process ended, not after
    heard.clear()
    code, _ = cli.run_pytest([sys.executable, "-c", "raise SystemExit(3)"],
                             written=lambda: heard.append(time.monotonic()))
    assert code == 3 and not heard


def test_the_controller_says_the_record_is_written_on_its_pipe_alone(tmp_path):
    """pytest's controller writes to the pipe once results.json.gz is whole; the variable
    leaves its environment (xdist's workers would inherit it), and a value that is not a
    pipe is never written to."""
    read, write = os.pipe()
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "cases", f"--pinhole-out={tmp_path}", "-q",
         "-p", "no:cacheprovider", *[a for a in NARROW if a not in ("-n", "0")], "-n", "2"],
        cwd=ROOT, pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, results.READY_ENV: str(write)})
    os.close(write)
    try:
        assert os.read(read, 1) == b"\n"
        assert results.load(tmp_path / results.FILE)["cases"]  # whole, before pytest ends
    finally:
        run.wait()
        os.close(read)
    assert run.returncode in (0, 3)
    probe = ("import os, sys; from conformance import results; "
             "print(results.ready_fd(), results.READY_ENV in os.environ)")
    for value in ("1", "x", "99999"):  # stdout (a file here), nonsense, no such fd
        with open(tmp_path / "out", "w") as out:
            subprocess.run([sys.executable, "-c", probe], cwd=ROOT, stdout=out,
                           env={**os.environ, results.READY_ENV: value}, check=True)
        assert (tmp_path / "out").read_text().split() == ["None", "False"]
