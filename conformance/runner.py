"""Runs one case: prepare the file, pin it, apply the mutation, check, judge."""

from __future__ import annotations

import time
import traceback

from .checks import CHECKS, Observation, Trial
from .errors import PinRefused, Skip
from .kernel import running
from .matrix import Case
from .mutations import MUTATIONS, Baseline
from .spec import Spec
from .subject import Subject
from .syscalls import errno_name
from .verdict import Result, judge
from .worker import Worker


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
                effect = MUTATIONS[case.mutation](trial, base)
            except OSError as e:
                return Observation("unsupported", f"{case.mutation}: {e.strerror or e}",
                                   errno_name(e.errno) if e.errno else None)
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
