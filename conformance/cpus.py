"""Where the processes that run cells may run: each on a CPU of its own.

Free to move, a cell's mutation thread (runner.mutate()) and the kernel work it wakes were
often placed on the CPU busy with the other xdist worker, and waited there for a time slice
while their own CPU sat idle; kept to one CPU, the thread runs as soon as the cell waits
for it. In a VM the one process that runs cells keeps to the first vCPU (README, "Timings").
"""

from __future__ import annotations

import os


def own_cpu(worker_id: str, workers: int, allowed: list[int]) -> int | None:
    """The CPU for xdist worker `gwN` of `workers`: the N-th allowed one. None for a lone
    worker, which gains nothing on the host (and two lone runs at once would share a CPU),
    or where there are fewer CPUs than workers (pinning would stack two on one)."""
    if workers < 2 or workers > len(allowed) or not worker_id.startswith("gw"):
        return None
    # A worker xdist starts in place of a crashed one takes the next id (gw2 of 2).
    return sorted(allowed)[int(worker_id[2:]) % len(allowed)]


def keep_to_own_cpu(workerinput: dict) -> int | None:
    """Pin this xdist worker's main thread, and so every thread it starts, to its own CPU;
    returns the CPU, or None where it stays free (own_cpu())."""
    cpu = own_cpu(str(workerinput.get("workerid", "")), int(workerinput.get("workercount", 1)),
                  list(os.sched_getaffinity(0)))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    return cpu


def keep_to_first_cpu() -> int:
    """Pin this process to its first allowed CPU, from its start: a VM's one process that
    runs cells, whose kernel threads keep the other vCPU. Under TCG each vCPU has its own
    translated-code state, so a process that moves between them runs cold: pinned from
    the start, the quick selection ran in 35-38 s, against 44-47 s pinned only once pytest
    had started (benchmarks/tcg.py's taskset0 and fast arms, two rounds)."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def numprocesses(pytest_args: list[str]) -> str | None:
    """The value of pytest's -n N, -nN or --numprocesses[=]N (xdist's), or None."""
    for i, a in enumerate(pytest_args):
        if a in ("-n", "--numprocesses"):
            return pytest_args[i + 1] if i + 1 < len(pytest_args) else ""
        if a.startswith("--numprocesses="):
            return a.partition("=")[2]
        if a.startswith("-n") and not a.startswith("--"):
            return a[2:]
    return None


def asks_for_workers(pytest_args: list[str]) -> bool:
    """Whether pytest's arguments start xdist workers: they must not inherit one CPU, so the
    process that starts them stays free. -n 0 starts none (xdist runs the tests itself)."""
    return numprocesses(pytest_args) not in (None, "0")
