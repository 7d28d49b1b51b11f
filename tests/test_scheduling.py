"""Which work unit xdist gets each item in (scheduling.py), on the node ids pytest makes."""

from conformance.dimensions import VOCABULARY, cells
from conformance.model import grouped
from conformance.plugin import make_plan
from conformance.scheduling import HUGETLB, scope_of

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
