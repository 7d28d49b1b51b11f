"""Runs one cell: prepare the file, pin it, apply the mutation, run the cell's checks on that
one trial where they can share it, judge each case."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import hugepages
from .backings.base import Backing
from .checks import CHECKS, LOOKS_ONLY, Stored, after_file_to_pin
from .errors import PinRefused, Skip
from .expectations import Spec, Version
from .kmsg import Slice
from .model import Baseline, Case, Cell, Effect, Observation, Result, Trial
from .mutations import MUTATIONS
from .running_kernel import running
from .subject import Subject
from .syscalls import errno_name
from .verdict import judge
from .worker import Worker

# fsdax truncation waits, without limit, for extra references to the pages to go away
# (fs/dax.c dax_layout_busy_page()); a pipe's references stay as long as the pipe does.
PATIENCE_S = 10.0
# A mutation that waited on the pin finishes at once when the pin goes; one still running
# this long after the release was merely slow, not blocked by the pin.
RELEASE_S = 2.0
# How often a running mutation's kernel stack is read.
POLL_S = 0.05
# Kernel functions in which a mutation waits for the pinned pages to be idle: seen on its
# stack, the wait is the pin's at once, not after PATIENCE_S (10 s a cell under TCG).
# ext4_break_layouts(), xfs_break_dax_layouts() and their ..._wait_dax_page() callbacks
# (6.12); dax_break_layout_inode() and dax_wait_page_idle() from 6.15.
WAITS_FOR_IDLE_PAGES = ("break_layout", "break_dax_layout", "wait_dax_page",
                        "dax_wait_page")


def waiting_for_idle_pages(tid: int) -> str | None:
    """The function on a thread's kernel stack that waits for pinned DAX pages to go idle,
    or None (also where /proc/PID/task/TID/stack is unreadable: no root, no STACKTRACE)."""
    try:
        with open(f"/proc/self/task/{tid}/stack") as f:
            frames = [line.split("] ", 1)[-1].split("+", 1)[0] for line in f]
    except OSError:
        return None
    return next((fn for fn in frames if any(w in fn for w in WAITS_FOR_IDLE_PAGES)), None)


class Handed:
    """A mutation handed to the mutation thread: its outcome, once the thread has one."""

    def __init__(self) -> None:
        # A SimpleQueue, not a concurrent.futures.Future: handing a mutation over and
        # waiting for it took 1.0 ms through a Future under TCG, 0.3 ms through queues.
        self.box: queue.SimpleQueue = queue.SimpleQueue()
        self.outcome: tuple[bool, object] | None = None

    def wait(self, timeout: float) -> bool:
        """Whether the mutation is done, waiting up to timeout seconds for it."""
        if self.outcome is None:
            try:
                self.outcome = self.box.get(timeout=timeout)
            except queue.Empty:
                return False
        return True

    def result(self) -> object:
        ok, value = self.outcome  # type: ignore[misc]
        if not ok:
            raise value  # type: ignore[misc]
        return value


class MutationThread:
    """The thread mutations run in, kept from cell to cell: starting one for each mutation
    cost more than most mutations (160 us on the host against 30 to hand one over). One that
    a mutation did not give back (hung, or left by an interrupt) is dropped for a new one."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name="pinhole-mutation")
        self.thread.start()

    def _serve(self) -> None:
        # Named after its process: a panic in this thread is charged to this worker's cell
        # (multikernel.charged()), not to another worker's.
        with contextlib.suppress(OSError):
            Path("/proc/thread-self/comm").write_text(f"pinhole-{os.getpid()}")
        while True:
            work, handed = self.jobs.get()
            try:
                handed.box.put((True, work()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller as is
                handed.box.put((False, e))

    def start(self, work: Callable[[], object]) -> Handed:
        handed = Handed()
        self.jobs.put((work, handed))
        return handed


_thread: MutationThread | None = None


def mutation_thread() -> MutationThread:
    global _thread
    if _thread is None:
        _thread = MutationThread()
    return _thread


def mutate(trial: Trial, base: Baseline) -> Effect | Observation:
    """Apply the case's mutation; one that waits on the pin is seen through, not hung on:
    once its kernel stack shows it waiting for the pinned pages (else after PATIENCE_S) the
    pin is released, and a mutation that then finishes within RELEASE_S was `blocked` by it."""
    global _thread
    runs = mutation_thread()
    handed = runs.start(lambda: MUTATIONS[trial.case.mutation].apply(trial, base))
    try:
        started, waits = time.monotonic(), None
        done = handed.wait(POLL_S)
        while not done and time.monotonic() - started < PATIENCE_S:
            waits = waiting_for_idle_pages(runs.thread.native_id)
            if waits:
                break
            done = handed.wait(POLL_S)
        if not done:
            waited = time.monotonic() - started
            trial.pinned.release()
            released = time.monotonic()
            done = handed.wait(PATIENCE_S)
            after = time.monotonic() - released
            if not done:
                raise RuntimeError(f"{trial.case.mutation} is still running {PATIENCE_S:.0f} s "
                                   "after the pin went: hung, not blocked by the pin")
            if after > RELEASE_S:
                raise RuntimeError(f"{trial.case.mutation} took {waited + after:.1f} s and "
                                   f"{after:.1f} s of it after the pin went: slow, not blocked "
                                   "by the pin")
            how = (f"was waiting in {waits}() for the pinned pages to go idle after "
                   f"{waited:.2f} s" if waits else f"was still waiting after {PATIENCE_S:.0f} s")
            return Observation("blocked", f"{trial.case.mutation} {how} with the pin held, "
                               f"and finished {after:.2f} s after the pin or reference was "
                               "dropped")
    finally:
        if handed.outcome is None and _thread is runs:
            _thread = None  # still busy with this mutation: the next gets a thread of its own
    return handed.result()  # type: ignore[return-value]


def _refused(e: OSError) -> Observation:
    return Observation("refused", e.strerror or str(e), errno_name(e.errno))


Seen = dict[str, Observation | Stored | Exception]


def trial(case: Case, checks: list[str], worker: Worker, seen: Seen) -> None:
    """One trial of a cell: prepare the file, pin it, mutate it, then run as many of the
    cell's checks as can share it, in order, recording each in `seen`. A trial on a hugetlb
    backing runs alone among the machine's pinhole workers (hugepages.PoolWatch) and checks
    the pool's counters right after the pin takes its page."""
    backing = worker.backing(case.backing)
    with hugepages.PoolWatch(backing.hugetlb) as pool:
        _trial(case, checks, worker, seen, backing, pool)


def _trial(case: Case, checks: list[str], worker: Worker, seen: Seen, backing: Backing,
           pool: hugepages.PoolWatch) -> None:
    mechanism = worker.mechanism(case.pin)
    subject = Subject(backing, worker.file_name(), case.mapping)
    try:
        subject.prepare(case.state)
        try:
            pinned = mechanism.pin(subject, case.access)
        except OSError as e:
            seen.update(dict.fromkeys(checks, _refused(e)))
            return
        t = Trial(case, subject, pinned, worker)
        try:
            problem = pool.check()
            if problem:
                worker.monitor.note(problem)
            base = Baseline(subject.file_view())
            try:
                effect = mutate(t, base)
            except OSError as e:
                seen.update(dict.fromkeys(checks, Observation(
                    "unsupported", f"{case.mutation}: {e.strerror or e}",
                    errno_name(e.errno) if e.errno else None)))
                return
            if isinstance(effect, Observation):
                seen.update(dict.fromkeys(checks, effect))
                return
            for check in checks:
                try:
                    seen[check] = CHECKS[check](t, base, effect)
                except PinRefused as e:  # a short-term pin, retaken after the mutation
                    seen[check] = _refused(e)
                except Exception as e:  # noqa: BLE001 - this check's error, not the cell's
                    reraise_interrupt(e)
                    seen[check] = e
                if check in LOOKS_ONLY:
                    continue
                after = (after_file_to_pin(t, seen[check], effect)  # type: ignore[arg-type]
                         if check == "file-to-pin" and isinstance(seen[check], Observation)
                         else None)
                if after is None:
                    return  # the pin and file are no longer as the next check needs them
                effect = after
        finally:
            pinned.release()
            for undo in reversed(t.cleanup):
                undo()
    finally:
        subject.close()


def unwinding(e: Exception) -> BaseException | None:
    """The interrupt (pytest-timeout's failure, Ctrl-C) that e was raised during, if any: one
    that lands inside threading's locks can surface as their RuntimeError ("release unlocked
    lock"), and must not be recorded as that error instead of itself."""
    seen = e.__context__
    while seen is not None and isinstance(seen, Exception):
        seen = seen.__context__
    return seen


def reraise_interrupt(e: Exception) -> None:
    """Raise the interrupt e was raised during, if any; else return (e is an error to
    record). Every place that records an Exception calls it first."""
    interrupt = unwinding(e)
    if interrupt:
        raise interrupt from None


def observe(cell: Cell, worker: Worker) -> Seen:
    """Every check of the cell, from as few trials as they allow (usually one); a trial
    that cannot start (a missing part, a failed setup) ends every check it had left."""
    seen: Seen = {}
    checks = [c.check for c in cell.cases]
    while len(seen) < len(checks):
        left = [c for c in checks if c not in seen]
        try:
            trial(cell.first, left, worker, seen)
        except Exception as e:  # noqa: BLE001 - recorded for each check it ended
            reraise_interrupt(e)
            seen.update({c: e for c in left if c not in seen})
    return seen


def _broken(case: Case, e: Exception, log: Slice) -> Result:
    if isinstance(e, Skip):
        return Result(case, "skip", reason=str(e))
    where = traceback.extract_tb(e.__traceback__)[-1]
    return Result(case, "error", reason=f"{type(e).__name__}: {e} "
                  f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
                  dmesg=log.excerpt() if log.bad else "", taint=log.new_taint)


def run_cell(cell: Cell, worker: Worker, spec: Spec) -> list[Result]:
    """The results of the cell's cases, each with an equal share of the time; a pin-to-file
    case whose file waits for its backing's remount is judged by settle() instead."""
    start = time.monotonic()
    worker.monitor.begin(cell.id)
    try:
        seen = observe(cell, worker)
    except BaseException:
        # An interrupt (a timeout, Ctrl-C) lands anywhere, between a pin and its release
        # too: a ring left holding that buffer would refuse the next cell's with EBUSY.
        worker.forget_parts()
        raise
    log = worker.monitor.end()
    version = running().number
    out, waiting = [], []
    share = round((time.monotonic() - start) / len(cell.cases), 6)
    for case in cell.cases:
        got = seen[case.check]
        if isinstance(got, Stored):
            waiting.append(Waiting(case, got, log, share))
            continue
        out.append(_result(case, got, log, spec, version))
        out[-1].duration_s = share
    worker.waiting += waiting
    return out


@dataclass
class Waiting:
    """A pin-to-file case whose file waits, closed, for its backing's remount."""

    case: Case
    stored: Stored
    log: Slice  # the kernel's log while its cell ran
    duration_s: float


def settle(worker: Worker, spec: Spec) -> list[Result]:
    """Remount every backing that files wait on, once (not once a cell: the remount was a
    quarter of a cell on the host), and judge their cases on what storage gives back. The
    kernel's log of the remount counts against each of them."""
    waiting, worker.waiting = worker.waiting, []
    if not waiting:
        return []
    start = time.monotonic()
    worker.monitor.begin(f"remount for {len(waiting)} pin-to-file cases, the first "
                         f"{waiting[0].case.id}")
    seen: list[Observation | Exception] = []
    try:
        for backing in dict.fromkeys(w.stored.subject.backing for w in waiting):
            backing.remount()
        for w in waiting:
            try:
                seen.append(w.stored.reread())
            except Exception as e:  # noqa: BLE001 - this case's error, not the others'
                reraise_interrupt(e)
                seen.append(e)
            finally:
                w.stored.subject.close()
    except Exception as e:  # noqa: BLE001 - a remount that failed ends every case waiting
        reraise_interrupt(e)
        seen += [e] * (len(waiting) - len(seen))
    except BaseException:
        worker.forget_parts()
        raise
    remount = worker.monitor.end()
    version = running().number
    share = (time.monotonic() - start) / len(waiting)
    out = []
    for w, got in zip(waiting, seen, strict=True):
        out.append(_result(w.case, got, w.log.then(remount), spec, version))
        out[-1].duration_s = round(w.duration_s + share, 6)
    return out


def _result(case: Case, got: Observation | Exception, log: Slice, spec: Spec,
            version: Version) -> Result:
    return (_broken(case, got, log) if isinstance(got, Exception)
            else judge(case, got, spec.expect(case, version), log))
