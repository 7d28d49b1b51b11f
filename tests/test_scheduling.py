"""Which work unit xdist gets each item in (scheduling.py), on the node ids pytest makes."""

from conformance.dimensions import cells
from conformance.model import grouped
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
