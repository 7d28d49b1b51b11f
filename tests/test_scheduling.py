"""Which work unit xdist gets each item in (scheduling.py), on the node ids pytest makes."""

from types import SimpleNamespace

from xdist.scheduler.loadscope import LoadScopeScheduling

from conformance.dimensions import VOCABULARY, cells
from conformance.model import grouped
from conformance.plugin import make_plan
from conformance.scheduling import AHEAD, DEEP, HUGETLB, HugetlbTogether, scope_of

MATRIX = "cases/test_matrix.py::test_group[{}]"


def test_every_group_on_a_hugetlb_backing_is_one_work_unit_and_nothing_else_is() -> None:
    groups = grouped(cells())
    together = [g.id for g in groups if scope_of(MATRIX.format(g.id)) == HUGETLB]
    assert together and {g.split(".")[1] for g in together} == {"memfd-hugetlb", "hugetlbfs"}
    assert len(together) == sum(g.id.split(".")[1] in ("memfd-hugetlb", "hugetlbfs")
                                for g in groups)


def test_other_items_are_each_their_own_unit() -> None:
    for nodeid in (MATRIX.format("io_uring.memfd.shared.rw.hole"),
                   "cases/test_controls.py::test_zeropage_detector_sees_the_shared_zeropage"
                   "[control.zeropage.anon]",
                   "cases/test_controls.py::test_something"):
        assert scope_of(nodeid) == nodeid


class Options:
    """What make_plan() asks of pytest's config: its options, and workerinput in a worker."""

    def __init__(self, worker: bool, **options: object) -> None:
        self.options = {d: [] for d in VOCABULARY} | {
            "kernel_view": False, "keyword": "", "pinhole_done": None, "shard": None, **options}
        if worker:
            self.workerinput = {"workerid": "gw0"}

    def getoption(self, name: str) -> object:
        return self.options[name]


def test_a_worker_plans_the_groups_its_controller_hands_out() -> None:
    """A worker plans only the pins and backings this machine has; its items must still be
    the controller's, item for item and in order (xdist refuses differing collections)."""
    for options in ({}, {"pin": ["io_uring,rdma"], "backing": ["memfd,ext4,ext4-dax"]},
                    {"keyword": "hole and not private"}, {"shard": "2/3"}):
        ours, theirs = make_plan(Options(True, **options)), make_plan(Options(False, **options))
        assert [(g.id, [c.id for c in g.cells]) for g in ours.groups] == [
            (g.id, [c.id for c in g.cells]) for g in theirs.groups]
        assert not ours.skipped or options.get("shard")  # the controller records them


class Node:
    """What the scheduler asks of an xdist worker: the items sent it, and its shutdown."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.first: list[int] = []  # what schedule() sent
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


class XdistsRule(HugetlbTogether):
    """The same units, handed out by xdist's own rule."""

    _reschedule = LoadScopeScheduling._reschedule


def run_out(sched: LoadScopeScheduling, units: int) -> list[Node]:
    """Two workers, each finishing its oldest item in turn (the one behind first), until the
    scheduler shuts both down; returns them with the items each was sent."""
    ids = [f"cases/test_x.py::test_{i}" for i in range(units)]
    workers = [Node("gw0"), Node("gw1")]
    for node in workers:
        sched.add_node(node)
        sched.add_node_collection(node, ids)
    sched.schedule()
    workers[0].first = list(workers[0].sent)
    done = {id(n): 0 for n in workers}
    while not all(n.shutting_down for n in workers):
        node = min((n for n in workers if done[id(n)] < len(n.sent)), key=lambda n: done[id(n)])
        sched.mark_test_complete(node, node.sent[done[id(node)]])
        done[id(node)] += 1
        assert len(node.sent) - done[id(node)] <= AHEAD + 1
    assert sorted(workers[0].sent + workers[1].sent) == list(range(units))
    return workers


def test_a_worker_is_kept_ahead_while_the_queue_is_long() -> None:
    """Each worker starts AHEAD + 1 items ahead (xdist's scope scheduling: 2), is topped up as
    it finishes them, and each item goes to one worker; a short queue (a small run, the end
    of a long one) is handed out as xdist does."""
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"],
                             option=SimpleNamespace(loadscopereorder=True))
    assert len(run_out(HugetlbTogether(config), 100)[0].first) == AHEAD + 1
    small = 2 * DEEP - 1
    ours, xdists = run_out(HugetlbTogether(config), small), run_out(XdistsRule(config), small)
    assert [n.sent for n in ours] == [n.sent for n in xdists]
    assert len(ours[0].first) == 2
