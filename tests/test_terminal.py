"""The terminal during and after a run, fed a recorded full host run (/tmp/old/host when it is
there, else the full-size sample of test_reports) with some of its cases turned into failures."""

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_reports import full_size

from conformance import results
from conformance.reports import terminal
from conformance.reports.terminal import LIVE_FAILURES, UP_CLEAR, Terminal

RECORDED = Path("/tmp/old/host/results.json")


@pytest.fixture(scope="module")
def recorded():
    if RECORDED.exists():
        return json.loads(RECORDED.read_text())
    doc = full_size()
    for c in doc["cases"]:  # as clean as the recorded run: the failures are this file's own
        if c["verdict"] not in ("pass", "skip"):
            c.update(verdict="pass", spec=c["spec"] or ["/x/10-coherence.toml:4"])
    return doc


@pytest.fixture(scope="module")
def failing(recorded):
    """The recorded run with 24 io_uring ext4 cases failed (two rules) and two errors."""
    doc = copy.deepcopy(recorded)
    for c in doc["cases"]:
        if c["pin"] == "io_uring" and c["backing"] == "ext4" and c["verdict"] == "pass" \
                and c["mutation"] in ("punch-hole", "truncate-down") \
                and c["check"] == "file-to-pin":
            c.update(verdict="fail", outcome="resurrected",
                     reason=f"expected {c['expected']}, saw resurrected: old data. "
                            f"Expected because: {c['reason']}")
        elif c["pin"] == "vmsplice" and c["backing"] == "btrfs" and c["state"] == "hole" \
                and c["mutation"] == "reflink":
            c.update(verdict="error", outcome=None, spec=[],
                     reason="the case broke in call: OSError: [Errno 28] No space left")
    doc["totals"] = results.totals(doc["cases"])
    return doc


class Clock:
    """Time as the test says: each record takes 10 ms."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(doc: dict, verbose: int = 0, isatty: bool = False) -> tuple[list[str], Terminal]:
    """A run as the controller sees it: the plan (skips known ahead as full records), then
    every other case's record in id order, which is how xdist hands out one pin's cases."""
    lines: list[str] = []
    clock = Clock()
    t = Terminal(lines.append, verbose, isatty, clock=clock)
    t.plan([c if c["verdict"] == "skip" else {k: c[k] for k in ("id", "pin", "backing")}
            for c in doc["cases"]])
    for c in sorted((c for c in doc["cases"] if c["verdict"] != "skip"), key=lambda c: c["id"]):
        clock.now += 0.01
        t.record(c)
    return lines, t


def groups_run(doc: dict) -> set[str]:
    return {terminal.name(terminal.group_of(c)) for c in doc["cases"] if c["verdict"] != "skip"}


def test_a_log_gets_a_line_per_group_not_a_letter_per_case(failing):
    lines, _ = run(failing)
    pins = {c["pin"] for c in failing["cases"]}
    groups = {terminal.group_of(c) for c in failing["cases"]}
    # The plan, a line per group, tenths of the run, the first failures: bounded, whatever
    # the number of cases.
    assert len(lines) <= 1 + len(pins) + len(groups) + 10 + LIVE_FAILURES + 1
    assert not any(UP_CLEAR in line for line in lines)
    assert re.fullmatch(r"pinhole: 36,5\d\d cases planned, 1\d,\d{3} to run, 2\d,\d{3} known to "
                        r"skip", lines[0])
    assert any(re.fullmatch(r"  rdma +8,424 cases on 9 backings \(8,424 known to skip\)", line)
               for line in lines), lines[:8]
    for name in groups_run(failing):
        done = [line for line in lines if f"] {name} done, " not in line and f": {name} done, "
                in line]
        assert len(done) == 1, name
        assert re.search(r"^\[ *[\d,]+/[\d,]+ +\d+%\] [\d,]+ failed, ((\d+[hm])*\d+s left|"
                         r"time left unknown yet)", done[0]), done[0]
    assert re.search(r"io_uring ext4 done, [\d,]+ pass, 24 fail", "\n".join(lines))
    # Failures are named as they come, the first LIVE_FAILURES of them.
    live = [line for line in lines if line.startswith(("FAIL ", "ERROR "))]
    assert len(live) == LIVE_FAILURES
    assert live[0].startswith("FAIL io_uring.ext4.") and "saw resurrected" in live[0]
    assert "(further failures are listed at the end)" in lines
    assert max(map(len, lines)) <= 200


@pytest.mark.parametrize("verbose", [0, -1], ids=["plain", "quiet"])
def test_a_terminal_redraws_one_status_line(failing, verbose):
    lines, t = run(failing, verbose, isatty=True)
    status = [line for line in lines if " | " in line]
    # Whatever follows a status line is drawn over it.
    after = zip(lines, lines[1:], strict=False)
    assert status and all(now.startswith(UP_CLEAR) for was, now in after if " | " in was)
    # At most one redraw per REDRAW seconds (10 ms per case) plus what the groups print.
    seconds = sum(c["verdict"] != "skip" for c in failing["cases"]) * 0.01
    assert len(status) <= seconds / terminal.REDRAW + len(t.groups) + 2
    assert re.search(r"\| io_uring ext4 \d+/624", "\n".join(status))


def test_verbose_leaves_the_per_case_lines_to_pytest(recorded):
    lines, _ = run(recorded, verbose=1, isatty=True)
    assert not any(" | " in line for line in lines)
    assert any(": io_uring memfd done, " in line for line in lines)


def test_the_summary_rolls_skips_up_and_names_failures_by_rule(failing):
    _, t = run(failing)
    lines = t.summary(failing)
    skipped = [line for line in lines if " cases skipped: " in line]
    assert len(lines) <= terminal.SUMMARY_LINES
    assert max(len(line) for line in lines if line not in skipped) <= 100
    text = "\n".join(lines)
    # A line per skip reason, whole, with how to get the capability.
    assert lines[0] == "skipped, by reason:" and lines[1:len(skipped) + 1] == skipped
    assert len(skipped) == len({c["reason"] for c in failing["cases"] if c["verdict"] == "skip"})
    assert re.search(r"^  8,424 rdma cases skipped: no RDMA device: modprobe rdma_rxe", text,
                     re.M)
    assert re.search(r"^  3,744 ext4-dax, xfs-dax cases skipped: no fsdax-capable pmem", text,
                     re.M)
    assert "failed, by spec rule (3 rules):" in lines
    rules = [line for line in lines if re.match(r"  \S.*: \d+ cases?, ", line)]
    assert [r.split(":")[0] for r in rules][-1] == "  error (no spec rule)"
    assert all("saw resurrected" in r for r in rules[:-1])
    # Under each rule its case ids, one a line, and how many more there are.
    at = lines.index(rules[0])
    assert re.fullmatch(r"    io_uring\.ext4\.\S+\.(punch-hole|truncate-down)\.file-to-pin",
                        lines[at + 1])
    assert any(re.fullmatch(r"    \.\.\. and \d+ more", line) for line in lines)
    assert "    vmsplice.btrfs.private.ro.hole.reflink.file-to-pin" in lines
    assert re.fullmatch(r"pinhole: \S+ x86_64: FAIL \(exit 1\) in \d+m\d\ds; 36,5\d\d cases: .*",
                        lines[-2] if lines[-1].startswith("  ") else lines[-1])


def test_a_clean_run_ends_in_a_few_lines(recorded):
    clean = copy.deepcopy(recorded)
    clean["cases"] = [c for c in clean["cases"] if c["verdict"] in ("pass", "skip")]
    lines = terminal.final([clean])
    assert not any("failed" in line for line in lines)
    assert len(lines) <= 14
    assert re.match(r"pinhole: \S+ x86_64: PASS \(exit 0\)", lines[-1])


def test_teststatus_silences_pytest_letters_unless_verbose():
    def report(outcome, when="call", **more):
        return SimpleNamespace(outcome=outcome, when=when, passed=outcome == "passed",
                               failed=outcome == "failed", skipped=outcome == "skipped", **more)

    teststatus = terminal.teststatus  # not imported by name: pytest would collect it
    assert teststatus(report("passed"), 0) == ("passed", "", "")
    assert teststatus(report("passed", "setup"), 0) == ("", "", "")
    assert teststatus(report("skipped", "setup"), 0) == ("skipped", "", "")
    assert teststatus(report("failed"), 0) == ("failed", "", "")
    assert teststatus(report("failed", "setup"), 0) == ("error", "", "")
    assert teststatus(report("skipped", wasxfail="known"), 0) == ("xfailed", "", "")
    assert teststatus(report("passed", wasxfail="known"), 0) == ("xpassed", "", "")
    assert teststatus(report("passed"), 1) is None


def test_without_a_plan_only_failures_are_told(failing):
    lines: list[str] = []
    t = Terminal(lines.append, 0, True, clock=Clock())
    for c in failing["cases"][:-1]:
        t.record(c)
    assert lines and all(line.startswith(("FAIL ", "ERROR ", "(further")) for line in lines)
    t.plan([{"id": "a.b", "pin": "a", "backing": "b"}])  # too late: no progress follows
    t.record(failing["cases"][-1])
    assert len(lines) <= LIVE_FAILURES + 1
