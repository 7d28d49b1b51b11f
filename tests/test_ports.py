"""progress.jsonl through virtio-serial ports: QEMU's options, and a real guest in which more
processes than ports write entries longer than a port takes at once, into one host file."""

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from conformance import framing, ports, results, vm
from conformance.debian import Kernel, KernelNotFound, resolve

ROOT = Path(__file__).resolve().parent.parent


def test_the_ports_options_survive_vngs_shell_with_a_space_in_the_path() -> None:
    """vng runs virtme-run through a shell, and an --rwdir path may hold a space."""
    words = shlex.split(ports.qemu_options(Path("/tmp/my runs/progress.jsonl"), 2))
    assert words == [
        "-chardev", "file,id=pinhole-progress-0,path=/tmp/my runs/progress.jsonl,append=on",
        "-device", "virtserialport,name=pinhole.progress.0,chardev=pinhole-progress-0",
        "-chardev", "file,id=pinhole-progress-1,path=/tmp/my runs/progress.jsonl,append=on",
        "-device", "virtserialport,name=pinhole.progress.1,chardev=pinhole-progress-1"]


def test_the_callers_qemu_options_follow_the_fast_cpu() -> None:
    kernel = Kernel("6.12.118+deb13-amd64", "6.12.118-1", Path("/k/vmlinuz"), Path("/k/config"))
    cmd = vm.vng_command(kernel, "true", accel="tcg", fast=True, qemu=["-a b", "-c d"])
    assert [a for a in cmd if a.startswith("--qemu-opts")] == [
        f"--qemu-opts=-cpu {vm.FAST_CPU}", "--qemu-opts=-a b", "--qemu-opts=-c d"]
    assert cmd[-2] == "--exec"


def test_outside_a_vm_progress_writes_the_file_itself(tmp_path: Path) -> None:
    progress = results.Progress(tmp_path, {"kernel": {}})
    progress.record({"id": "a"})
    progress.close()
    assert progress.port is None
    assert [json.loads(line) for line in (tmp_path / results.PROGRESS).read_text().splitlines()
            ] == [{"run": {"kernel": {}}}, {"case": {"id": "a"}}]


# In the guest: ports.COUNT + 2 processes, each holding its Progress until all have one, so
# the last two find every port taken and write over 9p; every fifth entry is longer than a port
# takes in one write, the others cross a page of an unaligned buffer, and all write at once.
GUEST = """
import json, multiprocessing as mp, sys
from pathlib import Path
from conformance import results
out = Path(sys.argv[1])

def child(i, opened, done):
    progress = results.Progress(out)
    opened.wait()
    for n in range(20):
        progress.record({"id": f"{i}.{n}", "pad": "x" * (40000 if n % 5 == 0 else 2000)})
    print(i, progress.port or "9p", flush=True)
    done.wait()
    progress.close()

results.Progress(out, {"kernel": {}}).close()
n = int(sys.argv[2])
opened, done = mp.Barrier(n), mp.Barrier(n)
procs = [mp.Process(target=child, args=(i, opened, done)) for i in range(n)]
for p in procs:
    p.start()
for p in procs:
    p.join()
print("exit codes", *[p.exitcode for p in procs])
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"),
                    reason="needs root and qemu-system-x86_64 (apt-get install qemu-system-x86)")
@pytest.mark.timeout(900)
def test_more_writers_than_ports_and_long_entries_reach_the_host_whole(tmp_path: Path) -> None:
    try:
        kernel = resolve("debian:6.12")
    except (KernelNotFound, OSError) as e:
        pytest.skip(f"needs the debian:6.12 kernel, which could not be fetched: {e}")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "guest.py").write_text(GUEST)
    writers = ports.COUNT + 2
    cmd = f"cd {ROOT} && {sys.executable} {tmp_path / 'guest.py'} {out} {writers}"
    res = vm.boot_and_run(kernel, cmd, timeout=600, rwdirs=[tmp_path], memory="2G",
                          qemu=[ports.qemu_options(out / results.PROGRESS)])
    assert res.outcome == "ok", res.stdout[-2000:] + res.stderr[-2000:] + res.console_tail
    assert f"exit codes{' 0' * writers}" in res.stdout, res.stdout + res.stderr[-2000:]
    ways = dict(line.split() for line in res.stdout.splitlines() if line[0].isdigit())
    assert sorted(w.startswith("/dev/vport") for w in ways.values()).count(True) == ports.COUNT
    assert list(ways.values()).count("9p") == 2, ways
    assert len(set(ways.values())) == ports.COUNT + 1, ways  # no port claimed twice
    lines = (out / results.PROGRESS).read_text().splitlines()
    assert all(len(line) < framing.MAX_WRITE for line in lines)
    assert sum(framing.PIECE in json.loads(line) for line in lines) > writers * 4  # 40 KB each
    entries = list(framing.entries(lines))
    assert entries[0] == {"run": {"kernel": {}}}
    got = [e["case"]["id"] for e in entries[1:]]
    assert sorted(got) == sorted(f"{i}.{n}" for i in range(writers) for n in range(20))
    for i in range(writers):  # each process's entries in its own order
        assert [g for g in got if g.split(".")[0] == str(i)] == [f"{i}.{n}" for n in range(20)]
