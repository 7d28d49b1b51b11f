"""Runs one case: prepare the file, pin it, apply the mutation, check, judge."""

from __future__ import annotations

import threading
import time
import traceback

from .checks import CHECKS, Observation, Trial
from .dimensions import Case
from .errors import PinRefused, Skip
from .expectations import Spec
from .mutations import MUTATIONS, Baseline, Effect
from .running_kernel import running
from .subject import Subject
from .syscalls import errno_name
from .verdict import Result, judge
from .worker import Worker

# fsdax truncation waits, without limit, for extra references to the pages to go away
# (fs/dax.c dax_layout_busy_page()); a pipe's references stay as long as the pipe does.
PATIENCE_S = 10.0
# A mutation that waited on the pin finishes at once when the pin goes; one still running
# this long after the release was merely slow, not blocked by the pin.
RELEASE_S = 2.0


def mutate(trial: Trial, base: Baseline) -> Effect | Observation:
    """Apply the case's mutation; one that waits on the pin is seen through, not hung on:
    after PATIENCE_S the pin is released, and a mutation that then finishes within RELEASE_S
    was `blocked` by the pin."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["effect"] = MUTATIONS[trial.case.mutation].apply(trial, base)
        except BaseException as e:  # noqa: BLE001 - handed to the caller as is
            box["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    if thread.is_alive():
        trial.pinned.release()
        released = time.monotonic()
        thread.join(PATIENCE_S)
        after = time.monotonic() - released
        if thread.is_alive():
            raise RuntimeError(f"{trial.case.mutation} is still running {PATIENCE_S:.0f} s "
                               "after the pin went: hung, not blocked by the pin")
        if after > RELEASE_S:
            raise RuntimeError(f"{trial.case.mutation} took {PATIENCE_S + after:.1f} s and "
                               f"{after:.1f} s of it after the pin went: slow, not blocked "
                               "by the pin")
        return Observation("blocked", f"{trial.case.mutation} was still waiting after "
                           f"{PATIENCE_S:.0f} s with the pin held, and finished "
                           f"{after:.2f} s after the pin or reference was dropped")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["effect"]  # type: ignore[return-value]


def observe(case: Case, worker: Worker) -> Observation:
    backing = worker.backing(case.backing)
    mechanism = worker.mechanism(case.pin)
    subject = Subject(backing, worker.file_name(), case.mapping)
    try:
        subject.prepare(case.state)
        try:
            pinned = mechanism.pin(subject, case.access)
        except OSError as e:
            return Observation("refused", e.strerror or str(e), errno_name(e.errno))
        trial = Trial(case, subject, pinned, worker)
        try:
            base = Baseline(subject.file_view(), subject.file_view(subject.offset + subject.length),
                            pinned.read())
            try:
                effect = mutate(trial, base)
            except OSError as e:
                return Observation("unsupported", f"{case.mutation}: {e.strerror or e}",
                                   errno_name(e.errno) if e.errno else None)
            if isinstance(effect, Observation):
                return effect
            try:
                return CHECKS[case.check](trial, base, effect)
            except PinRefused as e:  # a short-term pin, retaken after the mutation, was refused
                return Observation("refused", e.strerror or str(e), errno_name(e.errno))
        finally:
            pinned.release()
            for undo in reversed(trial.cleanup):
                undo()
    finally:
        subject.close()


def run_case(case: Case, worker: Worker, spec: Spec) -> Result:
    start = time.monotonic()
    worker.monitor.begin(case.id)
    try:
        seen = observe(case, worker)
    except Skip as e:
        worker.monitor.end()
        result = Result(case, "skip", reason=str(e))
    except Exception as e:
        log = worker.monitor.end()
        where = traceback.extract_tb(e.__traceback__)[-1]
        result = Result(case, "error", reason=f"{type(e).__name__}: {e} "
                        f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
                        dmesg=log.excerpt() if log.bad else "", taint=log.new_taint)
    else:
        result = judge(case, seen, spec.expect(case, running().number), worker.monitor.end())
    result.duration_s = round(time.monotonic() - start, 6)
    return result
