"""From what a case saw and what the spec expects to a verdict, with the reason a reader needs."""

from __future__ import annotations

from .expectations import Expectation
from .kmsg import Slice
from .model import KERNEL_VIEW_OF, Case, Observation, Result

# Taint letters that mean the kernel went wrong (kernel/panic.c): machine check, bad page,
# died, warning, soft lockup.
SERIOUS_TAINT = set("MBDWL")


def expected_text(exp: Expectation) -> str:
    outcomes = "|".join(exp.outcomes)
    return f"{outcomes} {exp.errno}" if exp.errno else outcomes


def known_as(check: str, known: str) -> tuple[str, ...]:
    """A known limitation's outcome as this check shows it (the kernel view names folios)."""
    return KERNEL_VIEW_OF.get(known, (known,)) if check == "kernel-view" else (known,)


def judge(case: Case, seen: Observation, exp: Expectation | None, log: Slice) -> Result:
    r = Result(case, "fail", seen.outcome, errno=seen.errno, detail=seen.detail,
               dmesg=log.excerpt() if log.bad else "", taint=log.new_taint)
    if log.bad or SERIOUS_TAINT & set(r.taint):
        r.outcome = "kernel-warning"
        r.detail = f"{'; '.join(log.bad[:3]) or 'new taint ' + r.taint} (while: {seen.detail})"
    if exp is None:
        r.verdict, r.reason = "error", "no spec entry decides this case: add one to the spec"
        return r
    r.expected, r.spec = expected_text(exp), [e.where for e in exp.entries]
    as_expected = r.outcome in exp.outcomes and (exp.errno is None or r.errno == exp.errno)
    if as_expected:
        r.verdict = "xpass" if exp.known and not exp.sometimes else "pass"
        r.reason = exp.reason
    elif exp.known and r.outcome in known_as(case.check, exp.known):
        r.verdict, r.reason = "xfail", exp.known_reason or ""
    else:
        seen_text = f"{r.outcome} {r.errno}" if r.errno else r.outcome
        r.reason = (f"expected {r.expected}, saw {seen_text}: {r.detail}. "
                    f"Expected because: {exp.reason}")
    return r
