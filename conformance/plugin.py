"""The pytest side of pinhole: options, the per-worker fixture, verdicts as pytest outcomes,
and results.json written by the controller (the xdist master, or the only process)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from . import guest, hugepages, lifetime, probe, results
from .backings import BACKINGS
from .backings.blockfs import scratch_problem
from .dimensions import VOCABULARY, Case, UnknownName, cases_for, universe, unknown
from .expectations import Spec, SpecError
from .pins import MECHANISMS
from .runner import run_case
from .running_kernel import running
from .verdict import Result
from .worker import Worker

SPEC = pytest.StashKey[Spec]()
MISSING = pytest.StashKey["Missing"]()
RECORD = "pinhole"
# Hugepages per worker: a three-page file, a private copy, a copy source, and one spare.
HUGEPAGES_PER_WORKER = 6


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("pinhole")
    for dimension in VOCABULARY:
        g.addoption(f"--{dimension}", action="append", default=[], metavar="NAME",
                    help=f"run only these {dimension} values (repeat or comma-separate)")
    g.addoption("--spec", action="append", default=[], metavar="FILE",
                help="layer a spec file over the built-in expectations")
    g.addoption("--pinhole-out", metavar="DIR", help="write results.json into DIR")
    g.addoption("--shard", metavar="K/N", help="run the K-th of N equal slices of the cases "
                "(CI jobs; merge their results with pinhole report)")


def selected(config: pytest.Config, dimension: str) -> list[str]:
    names = [n for opt in config.getoption(dimension) for n in opt.split(",") if n]
    unknown(dimension, names)
    return names


def shard(config: pytest.Config) -> tuple[int, int]:
    """--shard K/N as (K-1, N); (0, 1) when absent."""
    text = config.getoption("shard")
    if not text:
        return 0, 1
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise UnknownName(f"--shard takes K/N with 1 <= K <= N, not {text!r}")
    return int(k) - 1, int(n)


def pytest_configure(config: pytest.Config) -> None:
    try:
        shard(config)
        for dimension in VOCABULARY:
            selected(config, dimension)
        config.stash[SPEC] = Spec.load(config.getoption("spec"), universe())
    except (UnknownName, SpecError) as e:
        raise pytest.UsageError(str(e)) from None
    problem = scratch_problem()
    if problem:  # one usage error, not an error verdict for every block-backed case
        raise pytest.UsageError(problem)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(Controller(config), "pinhole-controller")
    else:
        lifetime.die_with_parent()  # an xdist worker must not outlive a killed controller


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A case module names its pin (PIN = "io_uring"); its cases are that pin's matrix,
    narrowed by --pin, --backing, ... before any item exists (collection is costly in a VM)."""
    pin = getattr(metafunc.module, "PIN", None)
    if pin is None or "case" not in metafunc.fixturenames:
        return
    wanted = {d: set(selected(metafunc.config, d)) for d in VOCABULARY}
    missing = metafunc.config.stash.setdefault(MISSING, Missing())
    params = []
    part, parts = shard(metafunc.config)
    for i, case in enumerate(cases_for(pin)):
        if i % parts != part:
            continue
        if all(not names or getattr(case, d) in names for d, names in wanted.items()):
            why = missing(case)  # what this machine lacks does not change mid-run
            params.append(pytest.param(case, id=case.id,
                                       marks=[pytest.mark.skip(reason=why)] if why else []))
    metafunc.parametrize("case", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A pin with no selected case is parametrized with nothing, which pytest turns into a
    skipped test_<pin>[NOTSET] placeholder: deselect it, it is not a case."""
    empty = [i for i in items if hasattr(i, "callspec") and "case" in i.callspec.params
             and not isinstance(i.callspec.params["case"], Case)]
    if empty:
        items[:] = [i for i in items if i not in empty]
        config.hook.pytest_deselected(items=empty)


def case_id_of(nodeid: str) -> str | None:
    """The case or control id in a node id's brackets; None for any other parameter."""
    if "[" not in nodeid:
        return None
    found = nodeid.rsplit("[", 1)[-1].rstrip("]")
    if results.is_control(found):
        return found
    try:
        Case.from_id(found)
    except (ValueError, UnknownName):
        return None
    return found


class Missing:
    """Why a case's pin mechanism or backing is unavailable here, asked once per name."""

    def __init__(self) -> None:
        self.reasons: dict[str, str | None] = {}

    def __call__(self, case) -> str | None:
        return self._why(case.pin, MECHANISMS) or self._why(case.backing, BACKINGS)

    def _why(self, name: str, registry: dict) -> str | None:
        if name not in self.reasons:
            available = registry[name]().availability()
            self.reasons[name] = None if available.ok else available.reason
        return self.reasons[name]


@pytest.fixture(scope="session")
def pinhole_worker() -> Worker:
    worker = Worker()
    yield worker
    worker.close()


@pytest.fixture
def pinhole(request: pytest.FixtureRequest, pinhole_worker: Worker):
    """Run a case and turn its verdict into the pytest outcome."""
    spec = request.config.stash[SPEC]

    def run(case) -> None:
        result = run_case(case, pinhole_worker, spec)
        request.node.user_properties.append((RECORD, json.dumps(result.as_dict())))
        conclude(result)

    return run


def pytest_runtest_call(item: pytest.Item) -> None:
    """Test-only (tests/test_panic.py): panic the kernel while the case PANIC_IN names runs,
    so the host sees a real panic mid-run. Honoured only inside a pinhole VM."""
    target = os.environ.get(guest.PANIC_IN)
    if target and os.environ.get(guest.IN_GUEST) and case_id_of(item.nodeid) == target:
        Path("/proc/sysrq-trigger").write_text("c")


def conclude(r: Result) -> None:
    message = r.reason + (f"\nkernel log:\n{r.dmesg}" if r.dmesg else "")
    if r.verdict in ("fail", "error"):
        pytest.fail(f"[{r.verdict}] {message}", pytrace=False)
    if r.verdict == "skip":
        pytest.skip(r.reason)
    if r.verdict == "xfail":
        pytest.xfail(r.reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    records = [json.loads(r) for k, r in item.user_properties if k == RECORD]
    if records and records[0]["verdict"] == "xpass" and rep.when == "call":
        rep.wasxfail = records[0]["reason"]  # pytest shows XPASS
    control_id = getattr(item, "callspec", None) and item.callspec.params.get("control")
    if control_id and (rep.when == "call" or (rep.when == "setup" and not rep.passed)):
        rep.user_properties.append((RECORD, json.dumps(control_record(item, rep, control_id))))


def control_record(item: pytest.Item, rep: pytest.TestReport, control_id: str) -> dict:
    """A positive control's result as a record: it passes when its detector saw the problem."""
    doc = (getattr(item, "obj", None).__doc__ or "").strip()
    if rep.passed:
        return results.control(control_id, "pass", " ".join(doc.split()), "", rep.duration)
    if rep.skipped:
        reason = rep.longrepr[2].removeprefix("Skipped: ")
        return results.control(control_id, "skip", reason, "", rep.duration)
    text = str(rep.longrepr)
    crash = getattr(rep.longrepr, "reprcrash", None)
    last = (crash.message if crash else text.strip().splitlines()[-1]).splitlines()[0][:500]
    if rep.when == "call":
        reason = f"the control failed, so its detector's passes cannot be trusted: {last}"
        return results.control(control_id, "fail", reason, text[-4000:], rep.duration)
    reason = f"the control broke in {rep.when}: {last}"
    return results.control(control_id, "error", reason, text[-4000:], rep.duration)


def bare_record(case_id: str, verdict: str, reason: str) -> dict:
    """The record of a case or control that never produced its own (skipped, crashed)."""
    if results.is_control(case_id):
        return results.control(case_id, verdict, reason)
    return Result(Case.from_id(case_id), verdict, reason=reason).as_dict()


class Controller:
    """Collects every case's record from the workers and writes the run's results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cases: dict[str, dict] = {}
        self.started = time.time()
        self.reservation: hugepages.Reservation | None = None
        self.planned: int | None = None
        self.begun: dict[str, None] = {}
        out = config.getoption("pinhole_out")
        self.progress = (results.Progress(Path(out), running().as_dict(), self.started)
                         if out else None)

    def pytest_runtest_logstart(self, nodeid: str, location: tuple) -> None:
        case_id = case_id_of(nodeid)
        if case_id:
            self.begun[case_id] = None
        if self.progress and case_id:
            self.progress.begin(case_id)

    def plan(self, nodeids: list[str]) -> None:
        """How many cases and controls the run means to record, so a cut-short run shows."""
        if self.planned is None:
            self.planned = sum(case_id_of(n) is not None for n in nodeids)
            if self.progress:
                self.progress.planned(self.planned)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items:  # under xdist the controller collects nothing; its workers do
            self.plan([i.nodeid for i in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        self.plan(ids)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        workers = self.config.getoption("numprocesses", None) or 1
        wanted = selected(self.config, "backing")
        if not wanted or {"memfd-hugetlb", "hugetlbfs"} & set(wanted):
            self.reservation = hugepages.Reservation(HUGEPAGES_PER_WORKER * int(workers) + 2)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A case's record rides on the call report and, again, on the teardown report; a
        # control's only on the report that decided it.
        records = [json.loads(r) for k, r in report.user_properties if k == RECORD]
        if records and (report.when == "call" or records[0]["pin"] == results.CONTROL):
            self.cases[records[0]["id"]] = records[0]
            if self.progress:
                self.progress.record(records[0])
            return
        case_id = case_id_of(report.nodeid)
        if records or case_id is None or case_id in self.cases:
            return
        if report.skipped and report.when == "setup":  # skipped at collection: see Missing
            reason = report.longrepr[2].removeprefix("Skipped: ")
            self.cases[case_id] = bare_record(case_id, "skip", reason)
        elif report.failed:
            text = str(report.longrepr)
            why = text.strip().splitlines()[-1:] or ["unknown"]
            limit = self.config.getoption("timeout", None) or self.config.getini("timeout")
            if "Timeout" in text:
                reason = f"TIMEOUT: longer than {limit} s (pytest-timeout), stopped at {why[0]}"
            elif "crashed" in text:
                reason = f"the worker running this case died (killed, or by a signal): {why[0]}"
            else:
                reason = f"the case broke in {report.when}: {why[0][:500]}"
            self.cases[case_id] = bare_record(case_id, "error", reason)
        else:
            return
        if self.progress:
            self.progress.record(self.cases[case_id])

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.reservation:
            self.reservation.release()
        stop = session.shouldfail or session.shouldstop  # -x, --maxfail, xdist's own stop
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(stop)
        cut_off = [i for i in self.begun if i not in self.cases] if interrupted else []
        why = "the run was interrupted while this case ran"
        for case_id in cut_off:
            self.cases[case_id] = results.cut_off_record(case_id, why)
            if self.progress:
                self.progress.record(self.cases[case_id])
        if self.progress:
            self.progress.close()
        out = self.config.getoption("pinhole_out")
        if out:
            doc = results.document(list(self.cases.values()), running().as_dict(),
                                   probe.probe(), self.started, time.time())
            short = self.planned is not None and len(self.cases) < self.planned
            if interrupted or short:
                what = (f"the run was stopped ({stop})" if isinstance(stop, str)
                        else "the run was interrupted")
                done = len(self.cases) - len(cut_off)
                doc["incomplete"] = results.incomplete_text(what, done, self.planned, cut_off)
                doc["cut_off"], doc["planned"] = cut_off, self.planned
            results.write(Path(out), doc)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.cases:
            return
        terminalreporter.section("pinhole summary")
        for line in results.summary(list(self.cases.values())):
            terminalreporter.write_line(line)
