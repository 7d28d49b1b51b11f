"""pinhole matrix for real: a kernel panic in a VM records the case that was running as a
failure with the console's tail, and the next kernel still runs; a stopped or killed pinhole
takes its VM with it. Boots Debian kernels under QEMU (minutes under TCG); fetches them first
where they are not cached (seconds), so a fresh clone's CI tests the panic path too."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import multikernel, results, vm
from conformance.debian import KernelNotFound, resolve
from conformance.dimensions import VOCABULARY, cells
from conformance.guest import HOLD_IN, PANIC_IN

ROOT = Path(__file__).resolve().parent.parent
KERNELS = {"debian:6.12": "6.12.", "debian:6.1": "6.1."}
SELECTION = {"pin": {"io_uring"}, "backing": {"memfd"}, "state": {"hole", "written"},
             "mutation": {"none", "pwrite"}}
PLANNED = {c.id for cell in cells({d: SELECTION.get(d, set()) for d in VOCABULARY}, ())
           for c in cell.cases}


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"),
                       reason="needs root and qemu-system-x86_64 "
                       "(apt-get install qemu-system-x86)"),
    pytest.mark.timeout(3600),
]


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    """The Debian kernels the tests boot, fetched into pinhole's cache where they are not
    there yet (what pinhole matrix does first); a fetch that fails is a skip that says why."""
    for spec, series in KERNELS.items():
        try:
            release = resolve(spec).release
        except (KernelNotFound, OSError) as e:
            pytest.skip(f"needs the {spec} kernel, which could not be fetched: {e}")
        assert release.startswith(series), (spec, release)


def test_a_guest_panic_is_recorded_the_rest_runs_after_a_reboot_and_so_does_the_next_kernel(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    kernels = [a for spec in KERNELS for a in ("--kernel", spec)]
    # The victim's cell is the third of eight (groups run in order): cells before and after it.
    victim_id = "io_uring.memfd.shared.rw.written.none.file-to-pin"
    r = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "matrix", *kernels, f"--out={out}",
         "--pin=io_uring", "--backing=memfd", "--state=hole,written",
         "--mutation=none,pwrite"],
        cwd=ROOT, env={**os.environ, PANIC_IN: victim_id}, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "booting again for the cases after it" in r.stdout
    docs = [results.load(p) for p in sorted(out.glob(f"*/{results.FILE}"))]
    assert len(docs) == 2, "the kernel after the panic must run too"
    for doc in docs:
        # Two boots, and one more for each that never reached the guest (seen under TCG).
        env = doc["environment"]
        assert env["vm"] == "ok" and env["boots"] == 2 + len(env["lost_boots"]), env
        assert "incomplete" not in doc, "the boot after the panic ran every other case"
        cell = victim_id.rsplit(".", 1)[0]
        (panic,) = doc["panics"]
        # The first boot that reached the guest: after any lost before it (a lost
        # boot 1 of Debian 6.12 made the panic boot 2 in a .ci/run of 2026-11-27).
        assert 1 <= panic["boot"] <= 1 + len(env["lost_boots"]), (panic, env["lost_boots"])
        assert sorted(panic["cut_off"]) == [
            c["id"] for c in doc["cases"] if c["id"].startswith(cell + ".")]
        victim = next(c for c in doc["cases"] if c["id"] == victim_id)
        assert victim["verdict"] == "fail" and "panicked while this case ran" in victim["reason"]
        assert "sysrq" in victim["dmesg"].lower()
        ids = [c["id"] for c in doc["cases"]]
        assert len(ids) == len(set(ids)), "the boot after the panic recorded nothing twice"
        assert {i for i in ids if not results.is_control(i)} == PLANNED
        # The rest of the victim's group (same pin, backing, mapping, access, state) skips
        # with the reason; every other case ran and passed.
        group = cell.rsplit(".", 1)[0]
        for c in doc["cases"]:
            if c["id"].startswith(cell + "."):
                continue
            if c["id"].startswith(group + "."):
                assert c["verdict"] == "skip" and c["reason"].startswith(
                    f"not run: the kernel panicked in {cell},"), c
            else:
                assert c["verdict"] == "pass", c
    assert not list(out.glob("*/done.txt"))


def test_a_panic_in_one_guest_worker_is_charged_to_its_cell_not_to_the_other_workers(
        tmp_path: Path) -> None:
    """Two xdist workers in the guest: xdist gives each two of the four groups. The first
    worker's first cell waits a minute (HOLD_IN) while the second reaches the victim and
    panics the kernel: the held cell was running too, but the console names the victim's
    process, so only the victim fails and the held cell runs again in the next boot."""
    out = tmp_path / "out"
    held = "io_uring.memfd.shared.rw.hole.none"
    victim = "io_uring.memfd.private.rw.written.none"
    r = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "matrix", "--kernel", "debian:6.12",
         f"--out={out}", "--pin=io_uring", "--backing=memfd", "--state=hole,written",
         "--mutation=none,pwrite", "-n", "2"],
        cwd=ROOT, env={**os.environ, PANIC_IN: f"{victim}.file-to-pin", HOLD_IN: held},
        capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cases another worker was running run again" in r.stdout, r.stdout
    (doc,) = [results.load(p) for p in out.glob(f"*/{results.FILE}")]
    assert doc["environment"]["vm"] == "ok" and "incomplete" not in doc, doc["environment"]
    (panic,) = doc["panics"]
    assert {i.rsplit(".", 1)[0] for i in panic["cut_off"]} == {victim}
    ids = [c["id"] for c in doc["cases"]]
    assert len(ids) == len(set(ids)) and {i for i in ids if not results.is_control(i)} == PLANNED
    for c in doc["cases"]:
        if c["id"].startswith(victim + "."):
            assert c["verdict"] == "fail" and "panicked while this case ran" in c["reason"], c
            assert "other workers" not in c["reason"], c
        elif c["id"].startswith(victim.rsplit(".", 1)[0] + "."):
            assert c["verdict"] == "skip", c  # the rest of the victim's group
        else:
            assert c["verdict"] == "pass", c  # the held cell too, in the boot after


def test_a_guest_that_never_comes_up_is_booted_as_often_as_vm_boots_it_then_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """pinhole matrix's own boot loop, with a real early panic in every boot (40 MB leave the
    kernel deadlocked on memory before init, as in tests/test_vm.py): vm.BOOT_TRIES boots,
    each lost one named, then the run reported as the boot's failure, not a case's."""
    monkeypatch.setattr(multikernel, "PMEM_APPEND", (*multikernel.PMEM_APPEND, "mem=40M"))
    doc = multikernel.run_kernel("debian:6.12", tmp_path, ["--pin=io_uring", "--backing=memfd",
                                                           "--state=hole", "--mutation=none"],
                                 timeout=300)
    env = doc["environment"]
    assert (env["vm"], env["boots"]) == ("panic", vm.BOOT_TRIES), env
    assert len(env["lost_boots"]) == vm.BOOT_TRIES - 1, env["lost_boots"]
    assert all("panic" in why for why in env["lost_boots"]), env["lost_boots"]
    said = capsys.readouterr().out
    assert "never came up" in said and f"booting again (2 of {vm.BOOT_TRIES})" in said, said
    assert "panic" in doc["incomplete"] and not doc["cases"], doc["incomplete"]


def qemus(out: Path) -> list[int]:
    """The qemu processes of a VM that shares out (its --rwdir) with the host."""
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{out}"], capture_output=True,
                           text=True).stdout.split()
    return [int(p) for p in found]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_matrix_leaves_no_vm(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "matrix", "--kernel", "debian:6.12",
         f"--out={out}", "--pin=io_uring", "--backing=memfd", "--state=hole",
         "--mutation=none"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not qemus(out):
        assert time.monotonic() < deadline and run.poll() is None, "no VM started"
        time.sleep(0.5)
    run.send_signal(sig)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == (128 + sig if sig != signal.SIGKILL else -sig), stderr
    gone = time.monotonic() + 15
    while qemus(out) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not qemus(out), "qemu outlived pinhole matrix"
    if sig != signal.SIGKILL:
        assert "Traceback" not in stderr and "INCOMPLETE" in stdout, stdout + stderr
        assert "INCOMPLETE" in (out / "results.ktap").read_text()
