"""Workers on CPUs of their own (conformance/cpus.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conformance.cpus import asks_for_workers, own_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_each_worker_has_a_cpu_of_its_own() -> None:
    assert [own_cpu(f"gw{n}", 2, [3, 1]) for n in range(2)] == [1, 3]
    assert own_cpu("gw2", 2, [3, 1]) == 1  # xdist's replacement for a crashed worker


def test_a_lone_worker_or_too_few_cpus_stay_free() -> None:
    assert own_cpu("gw0", 1, [0, 1]) is None
    assert own_cpu("gw0", 3, [0, 1]) is None
    assert own_cpu("master", 2, [0, 1]) is None


def test_a_guest_asked_for_workers_stays_free() -> None:
    """They would inherit its one CPU."""
    for args in (["-n", "2"], ["-n2"], ["-nauto"], ["--numprocesses=2"], ["--numprocesses", "2"]):
        assert asks_for_workers(["--pin=io_uring", *args]), args
    assert not asks_for_workers(["--pin=io_uring", "--state=hole", "-k", "pwrite"])
    for args in (["-n", "0"], ["-n0"], ["--numprocesses=0"], ["--numprocesses", "0"]):
        assert not asks_for_workers(args), args  # xdist runs the tests in its own process


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="needs 2 CPUs: run on a machine or VM with two or more")
def test_the_worker_and_the_threads_it_starts_keep_to_its_cpu() -> None:
    """In a child (pinning is for the life of a process): the main thread and a thread started
    after it, as the runner's mutation thread is."""
    code = ("import os, threading; from conformance.cpus import keep_to_own_cpu\n"
            "cpu = keep_to_own_cpu({'workerid': 'gw1', 'workercount': 2}); seen = []\n"
            "t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))\n"
            "t.start(); t.join(); print(cpu, sorted(os.sched_getaffinity(0)), sorted(seen[0]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split(maxsplit=1)
    second = sorted(os.sched_getaffinity(0))[1]
    assert out == [str(second), f"[{second}] [{second}]\n"]
