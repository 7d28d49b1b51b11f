"""What `pinhole run` prints while it runs and when it ends: progress by pin and backing with
counts and time left, failures as they happen, and a final summary of at most 30 lines with the
skips rolled up by reason and the failures named under the spec rule they broke. pytest's
per-case letters are silenced unless -v."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import results
from . import about, findings
from .findings import Section, count, plural, wrap

if TYPE_CHECKING:  # only for the hint: the reports need no pytest
    import pytest

SUMMARY_LINES = 30
WIDTH = 100
# A skip line is never wrapped, but a reason gone wrong cannot flood the terminal either.
LONGEST = 300
# Failures printed as they happen; later ones wait for the summary, so a CI log stays bounded.
LIVE_FAILURES = 20
# How often a terminal's status line may be redrawn, in seconds.
REDRAW = 0.5
# Cursor up one line and clear it: the status line is redrawn in place on a terminal.
UP_CLEAR = "\x1b[1A\x1b[2K"
Group = tuple[str, str]


def group_of(case: dict) -> Group:
    # Controls are few and have no backing: one group.
    pin = case.get("pin", "?")
    return (pin, "") if pin == results.CONTROL else (pin, case.get("backing", "?"))


def name(group: Group) -> str:
    return " ".join(part for part in group if part)


def teststatus(report: pytest.TestReport, verbose: int) -> tuple[str, str, str] | None:
    """For pytest_report_teststatus: no per-case letter or word unless -v (None: pytest's own).
    The category stays pytest's, so its closing counts still add up."""
    if verbose > 0:
        return None
    if report.passed and report.when != "call":
        return "", "", ""
    if hasattr(report, "wasxfail"):
        return ("xfailed" if report.skipped else "xpassed"), "", ""
    if report.failed and report.when != "call":
        return "error", "", ""
    return report.outcome, "", ""


class Terminal:
    """Progress while the run goes: a line per pin × backing group as it finishes, failures as
    they come (the first LIVE_FAILURES), and on a terminal one status line redrawn in place."""

    def __init__(self, write_line: Callable[[str], None], verbose: int, isatty: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write_line, self.verbose, self.isatty, self.clock = write_line, verbose, isatty, clock
        self.groups: dict[Group, int] = {}  # planned cases per group, in plan order
        self.total = 0  # the planned cases: the sum of groups, kept
        self.done: dict[str, dict] = {}
        self.verdicts: dict[Group, Counter] = {}
        self.counted: dict[Group, int] = {}  # the sum of each group's verdicts, kept
        self.first: dict[Group, float] = {}
        self.known = 0  # known skips: done before the run starts
        self.started = clock()
        self.live = 0
        self.status_shown = False
        self.drawn = 0.0
        self.tenths = 0  # the last tenth of the run reported on a log
        self.reported = 0  # cases run when the last progress line was printed
        self.planned: set[str] = set()
        self.unplanned = 0  # records of cases the plan did not name

    @property
    def to_run(self) -> int:
        return self.total - self.known

    @property
    def ran(self) -> int:
        return len(self.done) - self.known

    def plan(self, cases: list[dict]) -> None:
        """Every case the run means to record; a second plan (another xdist worker's
        collection), or one after records came, changes nothing."""
        if self.groups or self.done:
            return
        for c in cases:
            g = group_of(c)
            self.groups[g] = self.groups.get(g, 0) + 1
            self.total += 1
            self.planned.add(c["id"])
            if c.get("verdict"):  # a known skip: a full record before anything runs
                self._count(c)
                self.known += 1
        self.started = self.clock()
        pins: dict[str, list[Group]] = {}
        for g in self.groups:
            pins.setdefault(g[0], []).append(g)
        self._emit(f"pinhole: {count(self.total)} cases planned, "
                   f"{count(self.to_run)} to run, {count(self.known)} known to skip")
        for pin, groups in pins.items():
            planned = sum(self.groups[g] for g in groups)
            skipped = sum(self.verdicts.get(g, Counter())["skip"] for g in groups)
            backings = [g[1] for g in groups if g[1]]
            line = f"  {pin:9} {count(planned):>6} cases" + (
                f" on {plural(len(backings), 'backing')}" if backings else "")
            if skipped:
                line += f" ({count(skipped)} known to skip)"
            self._emit(line[:WIDTH])

    def _count(self, rec: dict) -> Group:
        # Once for every record the controller gets (13,000 on a host), beside the workers.
        g = group_of(rec)
        self.done[rec["id"]] = rec
        if g not in self.verdicts:
            self.verdicts[g], self.counted[g], self.first[g] = Counter(), 0, self.clock()
        self.verdicts[g][rec["verdict"]] += 1
        self.counted[g] += 1
        return g

    def record(self, rec: dict) -> None:
        if rec["id"] in self.done:
            return
        g = self._count(rec)
        self.unplanned += rec["id"] not in self.planned
        if rec["verdict"] in findings.BAD and self.live < LIVE_FAILURES:
            self.live += 1
            self._emit(f"{rec['verdict'].upper()} {rec['id']}: {findings.head(rec.get('reason'))}"
                       [:WIDTH * 2])
            if self.live == LIVE_FAILURES:
                self._emit("(further failures are listed at the end)")
        if self.unplanned:
            return  # without a plan there is no progress to tell, only failures
        if self.counted[g] == self.groups.get(g):
            self._emit(self.group_line(g))
        elif (not self.isatty and self.to_run and self.ran * 10 // self.to_run > self.tenths
              and (self.ran - self.reported) * 20 >= self.to_run):
            # A tenth of the run passed with no group finishing for a twentieth of it.
            self._emit(self.progress_line())
        if (self.isatty and self.verbose <= 0 and self.ran < self.to_run
                and self.clock() - self.drawn >= REDRAW):
            self._status()

    def left(self) -> str:
        elapsed = self.clock() - self.started
        if self.ran < 10 or elapsed < 1:
            return "time left unknown yet"
        return f"{findings.duration((self.to_run - self.ran) * elapsed / self.ran)} left"

    def progress_line(self) -> str:
        self.tenths = self.ran * 10 // max(self.to_run, 1)
        self.reported = self.ran
        pct = 100 * self.ran // max(self.to_run, 1)
        bad = sum(v[b] for v in self.verdicts.values() for b in findings.BAD)
        return (f"[{count(self.ran):>6}/{count(self.to_run)} {pct:3}%] "
                f"{count(bad)} failed, {self.left()}")

    def group_line(self, g: Group) -> str:
        v = self.verdicts[g]
        # In results.json's order of verdicts (its totals' keys).
        seen = ", ".join(f"{count(v[k])} {k}" for k in results.totals([]) if v[k])
        took = findings.duration(self.clock() - self.first[g])
        return f"{self.progress_line()}: {name(g)} done, {seen} ({took})"[:WIDTH * 2]

    def _emit(self, line: str) -> None:
        # A permanent line takes the status line's place; the next record draws it again.
        self.write_line((UP_CLEAR if self.status_shown else "") + line)
        self.status_shown = False

    def _status(self) -> None:
        running = [g for g, n in self.groups.items()
                   if 0 < self.counted.get(g, 0) < n]
        now = ", ".join(f"{name(g)} {self.counted[g]}/{self.groups[g]}"
                        for g in running[:3])
        line = f"{self.progress_line()}" + (f" | {now}" if now else "")
        self.write_line((UP_CLEAR if self.status_shown else "") + line[:WIDTH])
        self.status_shown = True
        self.drawn = self.clock()

    def summary(self, doc: dict) -> list[str]:
        self.status_shown = False  # the status line stays, as the run's last progress
        return final([doc])


def skip_item(g: findings.Group) -> list[str]:
    """One line, however long: the reason says how to get the capability, and a terminal
    wraps a long line where it must."""
    scope = g.scope()
    line = f"  {plural(len(g.cases), scope + ' case' if scope else 'case')} skipped: {g.key}"
    return [line if len(line) <= LONGEST else line[:LONGEST - 4] + " ..."]


def failure_items(groups: list[findings.Group], docs: list[dict], budget: int) -> list[list[str]]:
    """Each rule's line, then its case ids one per line, as many as the budget allows, shared
    out so that every rule names some."""
    several = len(docs) > 1
    heads = [[f"  {g.label}: {plural(len(g.cases), 'case')}, {g.what}"[:WIDTH]] for g in groups]
    ids = [[f"    {c['id']}" + (f" ({docs[k]['kernel'].get('release', '?')})" if several else "")
            for k, c in g.cases] for g in groups]
    spare = budget - len(heads)
    shown = [0] * len(groups)
    while spare > 0 and any(s < len(i) for s, i in zip(shown, ids, strict=True)):
        for n, i in enumerate(ids):
            if spare > 0 and shown[n] < len(i):
                shown[n] += 1
                spare -= 1
    items = []
    for h, i, s in zip(heads, ids, shown, strict=True):
        more = [f"    ... and {count(len(i) - s)} more"] if s < len(i) else []
        # The "more" line takes the place of the last id it would hide.
        items.append(h + (i[:s - 1] + more if more and s else i[:s]))
    return items


def head_lines(docs: list[dict]) -> list[str]:
    out = [line for w in results.incomplete_lines(docs) for line in wrap(w, WIDTH, "", "  ")]
    for doc in docs:
        took = findings.duration(doc["finished"] - doc["started"])
        out += wrap(f"pinhole: {about.kernel(doc)}: {findings.run_word(doc)} in {took}; "
                    f"{findings.totals_line(doc['cases'])}", WIDTH, "", "  ")
    return out


def final(docs: list[dict], limit: int = SUMMARY_LINES) -> list[str]:
    """The end of a run (or of pinhole report): at most limit lines."""
    # The verdict and totals come last, just above the prompt, as kselftest's Totals line.
    top = Section("", [head_lines(docs)], gap=False)
    skips = findings.skips(docs)
    bad = findings.failures(docs)
    skipped = Section("skipped, by reason:" if skips else "", [skip_item(g) for g in skips],
                      lambda n: f"  ... and {n} more reasons: see summary.md", gap=False)
    known = findings.limitations(docs)
    xfail = [f"known limitations (xfail): {plural(sum(len(g.cases) for g in known), 'case')}, "
             f"{plural(len(known), 'rule')} ({', '.join(g.label for g in known[:3])}): "
             "see summary.md"[:WIDTH]] if known else []
    fixed = Section("", [xfail], gap=False)
    # Skips and limitations first within their share; the failures get every line left.
    shares = findings.fit([top, skipped, fixed], min(limit, 8 + len(top.items[0])))
    budget = limit - len(shares) - 1
    failed = Section(f"failed, by spec rule ({plural(len(bad), 'rule')}):" if bad else "",
                     failure_items(bad, docs, budget) if bad else [],
                     lambda n: f"  ... and {n} more rules: see summary.md", gap=False)
    return findings.fit([skipped, fixed, failed, top], limit)
