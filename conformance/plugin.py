"""The pytest side of pinhole: options, the plan of a run (its cells, and the cases known to
skip before any runs), one pytest item per group of cells, verdicts as pytest outcomes, and
results.json.gz written by the controller (the xdist master, or the only process). The process
that runs a cell writes its progress.jsonl lines itself, as the cell begins and ends."""

from __future__ import annotations

import functools
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from . import cgroups, cpus, guest, hugepages, lifetime, probe, results
from .availability import availability, missing
from .checks import OPT_IN, unavailable
from .dimensions import VOCABULARY, UnknownName, cells, is_group_id, names
from .expectations import Spec, SpecError
from .model import Case, Cell, Group, Result, group_of, grouped
from .reports import terminal
from .runner import reraise_interrupt, run_cell, settle
from .running_kernel import running
from .scratch import scratch_problem
from .worker import Worker

SPEC = pytest.StashKey[Spec]()
PLAN = pytest.StashKey["Plan"]()
XPASS = pytest.StashKey[str | None]()  # a group item's first xpass, from conclude()
RECORD = "pinhole"
# Hugepages per worker: a three-page file, a private copy, a copy source, and one spare.
HUGEPAGES_PER_WORKER = 6
# A run of at most this many cases prints what the kernel view saw of each pinned page.
SHOW_KERNEL_VIEW = 40
# Names every case item's keywords hold besides its id: pytest's -k matches them too.
ITEM_NAMES = ("cases", "test_matrix.py", "test_group")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("pinhole")
    for dimension in VOCABULARY:
        g.addoption(f"--{dimension}", action="append", default=[], metavar="NAME",
                    help=f"run only these {dimension} values (repeat or comma-separate)")
    g.addoption("--kernel-view", action="store_true",
                help=f"add the opt-in checks ({', '.join(OPT_IN) or 'none'}) to every cell")
    g.addoption("--spec", action="append", default=[], metavar="FILE",
                help="layer a spec file over the built-in expectations")
    g.addoption("--pinhole-out", metavar="DIR", help="write results.json.gz into DIR")
    g.addoption("--pinhole-done", metavar="FILE", help="case ids (one a line) an earlier boot "
                "of this run recorded: neither run nor recorded again (pinhole matrix after a "
                "panic)")
    g.addoption("--shard", metavar="K/N", help="run the K-th of N equal slices of the cells "
                "(CI jobs; merge their results with pinhole report)")


def shard(config: pytest.Config) -> tuple[int, int]:
    """--shard K/N as (K-1, N); (0, 1) when absent."""
    text = config.getoption("shard")
    if not text:
        return 0, 1
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise UnknownName(f"--shard takes K/N with 1 <= K <= N, not {text!r}")
    return int(k) - 1, int(n)


def keyword_filter(expression: str):
    """pytest's -k, applied to each case id of a cell as it would be to a case's own item."""
    expression = (expression or "").lstrip()
    if not expression:
        return lambda case_id: True
    try:
        compiled = Expression.compile(expression)
    except SyntaxError:
        return lambda case_id: True  # pytest itself reports the bad expression

    def matches(case_id: str) -> bool:
        found = (case_id.lower(), *ITEM_NAMES)
        return compiled.evaluate(lambda sub, **_: any(sub.lower() in n for n in found))
    return matches


@dataclass
class Plan:
    """What a run will do, worked out the same way in every process of it: the cells to run,
    and the cases known to skip here, each with why (their pin or backing is missing, or an
    opt-in check this kernel cannot run at all), which need no item, no worker and no trial:
    only the controller makes their records."""

    cells: list[Cell]
    skipped: list[tuple[Case, str]]
    groups: list[Group] = field(init=False)

    def __post_init__(self) -> None:
        self.groups = grouped(self.cells)


MATRIX = Path(__file__).resolve().parent.parent / "cases" / "test_matrix.py"


def collects_matrix(config: pytest.Config) -> bool:
    """Whether this session's paths take in the matrix module (not so for `pytest tests/`)."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == MATRIX or MATRIX.is_relative_to(path):
            return True
    return False


def earlier_boots(config: pytest.Config) -> tuple[set[str], dict[str, str]]:
    """What --pinhole-done says an earlier boot of this run did: the case and control ids it
    recorded, and group id → the cell of it in which the kernel panicked."""
    done = config.getoption("pinhole_done")
    lines = Path(done).read_text().splitlines() if done else []
    panicked = [line.split()[1:3] for line in lines if line.startswith(results.PANICKED)]
    return ({line for line in lines if line and not line.startswith(results.PANICKED)},
            dict(panicked))


def panic_skip_reason(cell_id: str) -> str:
    return (f"not run: the kernel panicked in {cell_id}, a cell of the same pin, backing, "
            "mapping, access and state, in an earlier boot of this run (a boot a cell would "
            f"follow): run it alone, pinhole matrix ... -k {group_of(cell_id)}")


def selected(config: pytest.Config) -> dict[str, set[str]]:
    """--pin, --backing, ... as names, each checked (UnknownName)."""
    return {d: set(names(d, config.getoption(d))) for d in VOCABULARY}


def starts_workers(config: pytest.Config) -> bool:
    """Whether this process is an xdist controller, which runs no cell itself."""
    return (not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"
            and bool(config.getoption("tx", None)))  # xdist's own test (_is_distribution_mode)


def plan(config: pytest.Config) -> Plan:
    """The run's plan, worked out once a process."""
    if PLAN not in config.stash:
        # 36,000 cases made and no cycles: 0.09 s with the collector paused, 0.13 s without.
        with results.collector_paused():
            config.stash[PLAN] = make_plan(config) if collects_matrix(config) else Plan([], [])
    return config.stash[PLAN]


def make_plan(config: pytest.Config) -> Plan:
    selection = selected(config)
    extra = OPT_IN if config.getoption("kernel_view") else ()
    keyword = config.getoption("keyword")
    chosen = keyword_filter(keyword)
    done, panicked = earlier_boots(config)
    # Every process plans the whole matrix as it starts, beside the others: filter case by
    # case only when -k or an earlier boot asks, and ask once per pin and backing.
    filtering = bool(done or (keyword or "").strip())
    absent_here = functools.cache(missing)

    def wanted(case_id: str) -> bool:
        return case_id not in done and chosen(case_id)

    part, parts = shard(config)
    if hasattr(config, "workerinput") and parts == 1:
        # An xdist worker runs cells and never records the known skips (its controller does):
        # it plans only the pins and backings this machine has, a third of the host's cells.
        # (--shard slices by a cell's place in the whole matrix, so every cell is needed.)
        for dimension in ("pin", "backing"):
            selection[dimension] = {n for n in selection[dimension] or VOCABULARY[dimension]
                                    if availability(dimension, n).ok}
            if not selection[dimension]:  # an empty set would select every name
                return Plan([], [])
    run, skipped = [], []
    lacking = {c: why for c in extra if (why := unavailable(c))}
    for i, cell in enumerate(cells(selection, extra)):
        if i % parts != part:
            continue
        cases = [c for c in cell.cases if wanted(c.id)] if filtering else cell.cases
        if not cases:
            continue
        absent = absent_here(cell.first.pin, cell.first.backing)
        if panicked and group_of(cell.id) in panicked:
            absent = panic_skip_reason(panicked[group_of(cell.id)])
        if absent:
            skipped += [(c, absent) for c in cases]
            continue
        why = {c: lacking.get(c.check) for c in cases} if lacking else {}
        skipped += [(c, r) for c, r in why.items() if r]
        left = tuple(c for c in cases if not why.get(c))
        if left:
            run.append(Cell(left))
    return Plan(run, skipped)


def pytest_configure(config: pytest.Config) -> None:
    try:
        if starts_workers(config):  # its plan waits until they have started (Controller.plan)
            selected(config)  # but a bad name is a usage error now
            shard(config)
        else:
            plan(config)
        # Every entry checked against the whole matrix by the controller; its workers were
        # started with the same files.
        config.stash[SPEC] = Spec.load(config.getoption("spec"),
                                       checked=not hasattr(config, "workerinput"))
    except (UnknownName, SpecError) as e:
        raise pytest.UsageError(str(e)) from None
    problem = scratch_problem()
    if problem:  # one usage error, not an error verdict for every block-backed case
        raise pytest.UsageError(problem)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(Controller(config), "pinhole-controller")
    else:
        lifetime.die_with_parent()  # an xdist worker must not outlive a killed controller
        cpus.keep_to_own_cpu(config.workerinput)
        if os.environ.get(guest.IN_GUEST):  # the main process: guest.main()
            cgroups.enter_worker(str(config.workerinput.get("workerid", "worker")))
            guest.lock_in_background(lambda _: None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The matrix module's one test function is parametrized with the plan's groups."""
    if "group" in metafunc.fixturenames:
        groups = plan(metafunc.config).groups
        metafunc.parametrize("group", [pytest.param(g, id=g.id) for g in groups])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A group's item answers to -k with the ids of its cases. An empty plan parametrizes with
    nothing, which pytest turns into a skipped test_group[NOTSET] placeholder: deselect it, and
    the controls --pinhole-done names."""
    empty = []
    done, _ = earlier_boots(config)
    where: tuple[str, int | None] | None = None
    for item in items:
        param = getattr(item, "callspec", None) and item.callspec.params.get("group", item)
        if isinstance(param, Group):
            item.extra_keyword_matches.update(c.id for c in param.cases)
            # The items of one function share its file and line; pytest finds them for each
            # (Item.location, a cached_property) with a stat of the file: 12 ms over a TCG
            # guest's 9p, for each of a worker's hundreds of groups.
            if where is None:
                where = item.location[:2]
            else:
                item.__dict__["location"] = (*where, item.getmodpath())
        elif param is not None and param is not item:
            empty.append(item)
        elif done and param_id_of(item.nodeid) in done:
            empty.append(item)  # a control an earlier boot of this run recorded
    if empty:
        items[:] = [i for i in items if i not in empty]
        config.hook.pytest_deselected(items=empty)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # The plan and its items live as long as the run: frozen, the cyclic GC's full collections
    # stop walking them (the workers' user time on the host matrix 7 % less).
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # And the run's records: the interpreter's exit then skips the GC's walk of everything
    # (a full host run's pytest exited 0.45-0.5 s after this hook, now 0.01 s).
    gc.freeze()


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # a hook of xdist's, when it is loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under -n with xdist's default --dist load, the groups on hugetlb backings go to one
    worker (scheduling.py); another --dist is the user's choice."""
    if config.getvalue("dist") != "load":
        return None
    from .scheduling import HugetlbTogether

    return HugetlbTogether(config, log)


@functools.lru_cache(maxsize=1 << 16)  # each item's node id is asked about four times
def param_id_of(nodeid: str) -> str | None:
    """The group or control id in a node id's brackets; None for any other parameter."""
    if "[" not in nodeid:
        return None
    found = nodeid.rsplit("[", 1)[-1].rstrip("]")
    return found if results.is_control(found) or is_group_id(found) else None


@pytest.fixture(scope="session")
def pinhole_worker() -> Worker:
    worker = Worker()
    yield worker
    worker.close()


@pytest.fixture(scope="session")
def pinhole_progress(request: pytest.FixtureRequest) -> results.Progress | None:
    """This process's handle on the run's progress.jsonl (the controller started it)."""
    out = request.config.getoption("pinhole_out")
    if not out:
        yield None
        return
    progress = results.Progress(Path(out))
    yield progress
    progress.close()


@pytest.fixture
def pinhole(request: pytest.FixtureRequest, pinhole_worker: Worker,
            pinhole_progress: results.Progress | None):
    """Run a group's cells in turn, each recorded as it ends (in progress.jsonl and on the
    item), and turn their cases' verdicts into the item's pytest outcome."""
    spec = request.config.stash[SPEC]

    def run(group: Group) -> None:
        judged: list[dict] = []
        recs = run_group(group, pinhole_worker, spec, pinhole_progress,
                         request.node.user_properties, judged,
                         wire=hasattr(request.config, "workerinput"))
        if pinhole_progress:
            pinhole_progress.record(*recs)
        request.node.stash[XPASS] = conclude(judged)

    return run


def run_group(group: Group, worker: Worker, spec: Spec, progress: results.Progress | None,
              properties: list[tuple[str, object]], judged: list[dict],
              wire: bool) -> list[dict]:
    """The group's cells in turn, then the remount their pin-to-file files wait for
    (runner.settle()); each step's records go on the item's properties (carried(), for the
    wire to xdist's controller if `wire`) and into judged as it ends, and to progress.jsonl
    with the next step's begin. Returns the last step's records, not yet written there."""
    recs: list[dict] = []
    waiting: list[str] = []  # pin-to-file cases whose files wait for the remount
    new: list[str] = []  # those of the cell before
    where = ""
    try:
        for cell in group.cells:
            where = cell.id
            if progress:  # the cell before's records go out with this cell's begin
                progress.begin(cell.id, [c.id for c in cell.cases], *recs, waiting=new)
            panic_if_asked(cell)
            hold_if_asked(cell)
            try:
                recs = [r.as_dict() for r in run_cell(cell, worker, spec)]
            except Exception as e:  # noqa: BLE001 - this cell's error; the group goes on
                reraise_interrupt(e)
                reason = f"the cell broke: {type(e).__name__}: {e}"
                recs = [bare_record(c.id, "error", reason) for c in cell.cases]
            done = {r["id"] for r in recs}
            new = [c.id for c in cell.cases if c.id not in done]
            waiting += new
            properties.append(carried(recs, wire))
            judged += recs
        if waiting:
            where = "the remount"
            if progress:
                progress.begin(f"remount for {group.id}", waiting, *recs)
            recs = [r.as_dict() for r in settle(worker, spec)]
            waiting = []
            properties.append(carried(recs, wire))
            judged += recs
    except BaseException as e:
        # Cases that wait for a remount that will not come: not the ones that were running.
        # A timeout outside a cell leaves the run going: no later group's remount judges them.
        worker.waiting.clear()
        unjudged = [bare_record(i, "error", f"not judged: its group stopped in {where} "
                                f"({type(e).__name__}) before the remount that ends its check")
                    for i in waiting]
        properties.append(carried(unjudged, wire))
        if progress and unjudged:  # Ctrl-C leaves no report to carry them
            progress.record(*unjudged)
        raise
    return recs


def panic_if_asked(cell: Cell) -> None:
    """Test-only (tests/test_panic.py): panic the kernel as the cell of the case PANIC_IN
    names begins, so the host sees a real panic mid-run. Honoured only inside a pinhole VM."""
    target = os.environ.get(guest.PANIC_IN)
    if target and os.environ.get(guest.IN_GUEST) and cell.id in (
            target, target.rsplit(".", 1)[0]):
        Path("/proc/sysrq-trigger").write_text("c")


def hold_if_asked(cell: Cell) -> None:
    """Test-only (tests/test_robustness.py, test_panic.py): the cell HOLD_IN names waits a
    minute as it begins, so a test's signal, or another worker's panic, lands while a cell
    runs however fast the rest of the run is."""
    if os.environ.get(guest.HOLD_IN) == cell.id:
        time.sleep(60)


def conclude(done: list[dict]) -> str | None:
    """The item's outcome is its worst case's: a failure names every failing case. Returns
    the reason of its first xpass, for its report (pytest_runtest_makereport())."""
    bad = [r for r in done if r["verdict"] in ("fail", "error")]
    if bad:
        pytest.fail("\n".join(f"[{r['verdict']}] {r['id']}: {r['reason']}"
                              + (f"\nkernel log:\n{r['dmesg']}" if r.get("dmesg") else "")
                              for r in bad), pytrace=False)
    if all(r["verdict"] == "skip" for r in done):
        pytest.skip(done[0]["reason"])
    xfail = [r for r in done if r["verdict"] == "xfail"]
    if xfail and not any(r["verdict"] == "xpass" for r in done):
        # Without a traceback: pytest formats one for every xfail (seconds under TCG), and
        # the reason says all.
        raise pytest.xfail.Exception(xfail[0]["reason"], pytrace=False)
    return next((r["reason"] for r in done if r["verdict"] == "xpass"), None)


def carried(recs: list[dict], wire: bool) -> tuple[str, str | list[dict]]:
    """Records as an item's property; for the wire (an xdist worker's) one JSON string,
    which execnet carries to the controller 8 times faster than the lists of dicts it encodes
    value by value (3.8 ms to 0.5 ms for a group's 48 records on the host; a tenth of a
    worker's time under TCG). A single process keeps the lists."""
    return RECORD, json.dumps(recs) if wire else recs


def records_of(properties: list[tuple[str, object]]) -> list[dict]:
    """The records an item's report carries (carried())."""
    return [rec for k, v in properties if k == RECORD
            for rec in (json.loads(v) if isinstance(v, str) else v)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    # The report gets its own list, and the item's records go with the call report only:
    # carried again on the teardown report they cost the controller a second decoding.
    rep.user_properties = list(item.user_properties)
    if rep.when == "call":
        item.user_properties[:] = [p for p in item.user_properties if p[0] != RECORD]
        xpass = item.stash.get(XPASS, None)
        if xpass and rep.passed:
            rep.wasxfail = xpass  # pytest shows XPASS
    control_id = getattr(item, "callspec", None) and item.callspec.params.get("control")
    if control_id and (rep.when == "call" or (rep.when == "setup" and not rep.passed)):
        record = control_record(item, rep, control_id)
        rep.user_properties.append(carried([record], hasattr(item.config, "workerinput")))


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
    """The record of a case or control that never produced its own (crashed, cut off)."""
    if results.is_control(case_id):
        return results.control(case_id, verdict, reason)
    return Result(Case.from_id(case_id), verdict, reason=reason).as_dict()


def broken_reason(config: pytest.Config, report: pytest.TestReport) -> str:
    """Why an item ended without records: a timeout, a dead worker, a broken fixture."""
    text = str(report.longrepr)
    why = text.strip().splitlines()[-1:] or ["unknown"]
    if "Timeout" in text:
        limit = config.getoption("timeout", None) or config.getini("timeout")
        return f"TIMEOUT: longer than {limit} s (pytest-timeout), stopped at {why[0]}"
    if "crashed" in text:
        return f"the worker running this case died (killed, or by a signal): {why[0]}"
    return f"the case broke in {report.when}: {why[0][:500]}"


class Controller:
    """Collects every case's record from the workers and writes the run's results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cases: dict[str, dict] = {}
        self.started = time.time()
        self.reservation: hugepages.Reservation | None = None
        self.begun: dict[str, None] = {}
        self.ready = results.ready_fd()
        out = config.getoption("pinhole_out")
        self.progress = (results.Progress(Path(out), {"kernel": running().as_dict(),
                                                      "started": self.started})
                         if out else None)
        self.planned: int | None = None
        self.collected: list[str] | None = None  # a worker's node ids, not counted yet
        self.terminal: terminal.Terminal | None = None
        self.doc: dict | None = None

    # Worked out when first asked for: under xdist, after its workers have started (the
    # plan took 3-4 s of a TCG guest's start, which the workers then waited for).
    @functools.cached_property
    def plan(self) -> Plan:
        return plan(self.config)

    @functools.cached_property
    def skipped(self) -> list[dict]:
        with results.collector_paused():
            return [results.skip_record(c, why) for c, why in self.plan.skipped]

    @functools.cached_property
    def groups(self) -> dict[str, Group]:
        return {g.id: g for g in self.plan.groups}

    def record(self, *recs: dict, logged: bool = False) -> None:
        """Records that arrived together, written to progress.jsonl at once (in as few writes
        as framing.py allows: each is a 9p round trip in a VM without ports) unless the
        process that ran them already did."""
        if self.progress and not logged:
            self.progress.record(*recs)
        for rec in recs:
            self.cases[rec["id"]] = rec
            if not self.terminal:
                continue
            self.terminal.record(rec)
            if rec.get("check") == "kernel-view" and (self.planned or 0) <= SHOW_KERNEL_VIEW:
                self.write_line(f"{rec['id']}: {rec['outcome'] or rec['verdict']}")
                for line in (rec["detail"] or rec["reason"]).splitlines():
                    self.write_line(f"  {line}")

    def ids(self, param: str) -> list[str]:
        """A group item's case ids; a control's id is its own."""
        group = self.groups.get(param)
        return [c.id for c in group.cases] if group else [param]

    def pytest_runtest_logstart(self, nodeid: str, location: tuple) -> None:
        self.count_collected()
        param = param_id_of(nodeid)
        if param:
            self.begun.update(dict.fromkeys(self.ids(param)))
            if self.progress and param not in self.groups:  # a group's cells log their own
                self.progress.begin(param, self.ids(param))

    def count(self, nodeids: list[str]) -> None:
        """How many cases and controls the run means to record, so a cut-short run shows:
        the known skips, and the cases of the cells and controls collected (after -k, --lf
        and the like deselected theirs)."""
        if self.planned is not None:
            return
        with results.collector_paused():
            params = [p for p in map(param_id_of, nodeids) if p]
            self.planned = len(self.skipped) + sum(len(self.ids(p)) for p in params)
            if self.progress:
                self.progress.planned(self.planned)
            if self.terminal and self.planned:  # pinhole's own tests plan no case
                self.terminal.plan([*self.skipped, *(
                    {"id": i, "pin": results.CONTROL} for i in params if i not in self.groups),
                    *({"id": c.id, "pin": c.pin, "backing": c.backing}
                      for p in params if p in self.groups for c in self.groups[p].cases)])
        # The terminal's plan lives as long as the run, as the plan (pytest_sessionstart).
        gc.freeze()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items:  # under xdist the controller collects nothing; its workers do
            self.count([i.nodeid for i in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        # Counted once the first item has begun: xdist hands out no work before every
        # worker's collection has come and this hook returned (0.06 s of each start).
        if self.collected is None:
            self.collected = ids

    def count_collected(self) -> None:
        if self.collected is not None:
            self.count(self.collected)
            self.collected = None

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionstart(self, session: pytest.Session):
        """After the other plugins' session start, xdist's included: its workers start
        while this process plans the run. Until the reservation below, the pool's trial lock
        keeps their hugetlb trials waiting for its pages."""
        held = hugepages.hold_pool()
        try:
            result = yield
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter:
                self.write_line = reporter.write_line
                self.terminal = terminal.Terminal(reporter.write_line,
                                                  self.config.option.verbose, reporter.isatty)
            for rec in self.skipped:  # the terminal has them from its plan
                self.cases[rec["id"]] = rec
            if self.progress:
                self.progress.skipped((c.id, why) for c, why in self.plan.skipped)
            # The plan and its known skips (23,400 records on a host) live as long as the run:
            # frozen, the collector's next passes, beside the starting workers, skip them.
            gc.freeze()
            workers = self.config.getoption("numprocesses", None) or 1
            hugetlb = {c.first.backing for c in self.plan.cells} & {"memfd-hugetlb",
                                                                    "hugetlbfs"}
            wanted = HUGEPAGES_PER_WORKER * int(workers) + 2 if hugetlb else 0
        except BaseException:
            if held is not None:
                os.close(held)  # else the workers' hugetlb trials would wait for ever
            raise
        self.reservation = hugepages.Reservation(wanted, held)
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A group's records ride on its call report (those of the cells it finished, should
        # it fail part way); a control's on the report that decided it.
        records = records_of(report.user_properties)
        param = param_id_of(report.nodeid)
        if records and (report.when == "call" or records[0]["pin"] == results.CONTROL):
            self.record(*records, logged=param in self.groups)
        # Only a failed report can leave cases without records: the others skip the ids.
        if param is None or not report.failed or all(i in self.cases for i in self.ids(param)):
            return
        self.lost(param, broken_reason(self.config, report), report.when == "call")

    def lost(self, param: str, reason: str, reported: bool) -> None:
        """The cases of an item that ended without all its records. A group's finished cells
        are on its call report (reported), or in progress.jsonl when its worker died; the
        cell then running (progress.jsonl's cut-off cases, else the first unfinished cell)
        gets the reason, the cells after it never ran, and pin-to-file cases of the cells
        before it were never judged (their files waited for the group's remount)."""
        group = self.groups.get(param)
        if group is None:
            self.record(*(bare_record(i, "error", reason) for i in self.ids(param)))
            return
        cut_off = set()
        if self.progress and not reported:
            cut_off = set(self.recover(set(self.ids(param))))
        known = reported or self.progress is not None
        unfinished = [c for c in group.cells if any(x.id not in self.cases for x in c.cases)]
        if not unfinished:  # it died after its last cell: progress.jsonl had every record
            return
        stopped = next((c for c in unfinished if any(x.id in cut_off for x in c.cases)),
                       unfinished[0])
        after, recs = False, []
        for cell in group.cells:
            after = after or cell is stopped
            for case in cell.cases:
                if case.id in self.cases:
                    continue
                if case.id in cut_off or cell is stopped or not known:
                    why = reason
                elif after:
                    why = f"never ran: its group stopped in {stopped.id}: {reason}"
                else:
                    why = (f"not judged: its group stopped in {stopped.id} before the remount "
                           f"that ends its check: {reason}")
                recs.append(bare_record(case.id, "error", why))
        self.record(*recs)

    def recover(self, wanted: set[str] | None = None) -> list[str]:
        """Take the records that workers wrote to progress.jsonl but never reported (a dead
        worker, an interrupted run); returns the ids begun there and never finished."""
        _, recs, cut_off = results.read_progress(self.progress.path.parent)
        self.record(*(r for r in recs if r["id"] not in self.cases
                      and (wanted is None or r["id"] in wanted)), logged=True)
        return cut_off

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # The records live until the process ends: frozen, the collections that making the
        # record sets off stop walking them (a host run's record: 0.32-0.42 s, now 0.24 s).
        gc.freeze()
        if self.reservation:
            self.reservation.release()
        stop = session.shouldfail or session.shouldstop  # -x, --maxfail, xdist's own stop
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(stop)
        self.count_collected()  # a run stopped before its first item
        cut_off = []
        if interrupted:  # the cells begun and not finished, where progress.jsonl tells them
            cut_off = (self.recover() if self.progress
                       else [i for i in self.begun if i not in self.cases])
        for case_id in cut_off:
            self.record(results.cut_off_record(case_id, "the run was interrupted while this "
                                               "case ran"))
        if self.progress:
            self.progress.close()
        doc = results.document(list(self.cases.values()), running().as_dict(),
                               probe.probe(), self.started, time.time())
        short = self.planned is not None and len(self.cases) < self.planned
        if interrupted or short:
            what = (f"the run was stopped ({stop})" if isinstance(stop, str)
                    else "the run was interrupted")
            done = len(self.cases) - len(cut_off)
            doc["incomplete"] = results.incomplete_text(what, done, self.planned, cut_off)
            doc["cut_off"], doc["planned"] = cut_off, self.planned
        self.doc = doc
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.plan.skipped:
            session.exitstatus = pytest.ExitCode.OK  # every case was known to skip: recorded
        out = self.config.getoption("pinhole_out")
        if out:
            results.write(Path(out), doc)
            if "incomplete" not in doc and self.progress:
                self.progress.remove()  # what it kept for a run that dies is in results.json.gz
            results.say_written(self.ready)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.cases or not self.doc or not self.terminal:
            return
        terminalreporter.section("pinhole summary")
        for line in self.terminal.summary(self.doc):
            terminalreporter.write_line(line)


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A cell's or control's item shows no letter unless -v: the controller prints progress
    by pin and backing instead."""
    if param_id_of(report.nodeid):
        return terminal.teststatus(report, config.option.verbose)
    return None
