"""pinhole matrix for real: a kernel panic in a VM records the case that was running as a
failure with the console's tail, and the next kernel still runs; a stopped or killed pinhole
takes its VM with it. Boots Debian kernels under QEMU (minutes under TCG), so it runs only
where they are already cached."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import results
from conformance.debian import cache_root
from conformance.guest import PANIC_IN

ROOT = Path(__file__).resolve().parent.parent
KERNELS = {"debian:6.12": "6.12.", "debian:6.1": "6.1."}
VICTIM = "io_uring.memfd.shared.rw.hole.none.file-to-pin"


def cached(series: str) -> bool:
    return any(d.name.startswith(series) for d in (cache_root() / "kernels").glob("*"))


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64")
                       or not all(map(cached, KERNELS.values())),
                       reason="needs root, qemu-system-x86_64 and the Debian 6.12 and 6.1 "
                       "kernels cached (pinhole matrix --kernel debian:6.12 --kernel debian:6.1)"),
    pytest.mark.timeout(3600),
]


def test_a_guest_panic_is_recorded_and_the_next_kernel_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kernels = [a for spec in KERNELS for a in ("--kernel", spec)]
    r = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "matrix", *kernels, f"--out={out}",
         "--pin=io_uring", "--backing=memfd", "--state=hole", "--mutation=none"],
        cwd=ROOT, env={**os.environ, PANIC_IN: VICTIM}, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    docs = [results.load(p) for p in sorted(out.glob("*/results.json"))]
    assert len(docs) == 2, "the kernel after the panic must run too"
    for doc in docs:
        assert doc["environment"]["vm"] == "panic"
        assert doc["incomplete"].startswith("the kernel panicked")
        victim = next(c for c in doc["cases"] if c["id"] == VICTIM)
        assert victim["verdict"] == "fail" and "panicked while this case ran" in victim["reason"]
        assert "sysrq" in victim["dmesg"].lower()
        assert any(c["verdict"] == "pass" for c in doc["cases"]), "finished cases are kept"
    ktap = (out / "results.ktap").read_text()
    assert ktap.count("not ok") >= 4 and "# INCOMPLETE" in ktap


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
