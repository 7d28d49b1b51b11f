"""From outcome and expectation to verdict, exit codes, ids."""

import pytest

from conformance import results
from conformance.dimensions import (
    KCIDB_PATH,
    UnknownName,
    cells,
    is_group_id,
    parse_case,
    universe,
)
from conformance.expectations import Spec, parse
from conformance.kmsg import Slice
from conformance.model import Case, Observation, grouped
from conformance.verdict import judge

QUIET = Slice([], [], 0, 0)
CASE = Case.from_id("io_uring.ext4.shared.rw.hole.none.admission")


def expect(text, case=CASE):
    return Spec(parse(text, "t.toml")).expect(case, (6, 18, 0))


REFUSED = '[[expect]]\noutcome = "refused"\nerrno = "EFAULT"\nreason = "rule"\n'


def test_pass_fail_and_errno():
    exp = expect(REFUSED)
    assert judge(CASE, Observation("refused", "", "EFAULT"), exp, QUIET).verdict == "pass"
    wrong = judge(CASE, Observation("refused", "", "EINVAL"), exp, QUIET)
    assert wrong.verdict == "fail" and "expected refused EFAULT, saw refused EINVAL" in wrong.reason
    assert judge(CASE, Observation("pinned"), exp, QUIET).verdict == "fail"


@pytest.mark.parametrize("sometimes,absent", [("", "xpass"), ("sometimes = true\n", "pass")])
def test_known_limitation_is_xfail(sometimes, absent):
    """Where the limitation does not show: xpass, or pass if it shows in some cells only."""
    coherent = Case.from_id("rdma.ext4.shared.ro.hole.odirect-write.file-to-pin")
    exp = expect('[[expect]]\noutcome = "coherent"\nreason = "r"\nknown = "detached"\n'
                 f'known_reason = "invalidate_inode_pages2_range()"\n{sometimes}', coherent)
    assert judge(coherent, Observation("detached"), exp, QUIET).verdict == "xfail"
    assert judge(coherent, Observation("coherent"), exp, QUIET).verdict == absent
    assert judge(coherent, Observation("lost-write"), exp, QUIET).verdict == "fail"


def test_kernel_warning_fails_a_case_that_otherwise_passed():
    log = Slice(["WARNING: CPU: 0 PID: 1 at mm/gup.c:1"], ["WARNING: CPU: 0 PID: 1 at mm/gup.c:1"],
                0, 1 << 9)
    r = judge(CASE, Observation("refused", "", "EFAULT"), expect(REFUSED), log)
    assert r.verdict == "fail" and r.outcome == "kernel-warning" and r.taint == "W"
    assert "mm/gup.c" in r.dmesg


def test_unmatched_case_is_an_error():
    assert judge(CASE, Observation("pinned"), None, QUIET).verdict == "error"


@pytest.mark.parametrize("verdicts,code", [
    (["pass", "xfail", "skip"], 0), (["pass", "fail"], 1), (["pass", "error"], 1),
    (["pass", "xpass"], 3), (["skip", "skip"], 4), ([], 125),
])
def test_exit_codes(verdicts, code):
    assert results.exit_code([{"verdict": v} for v in verdicts]) == code


def test_ids_are_kcidb_paths_and_round_trip():
    io_uring = [case for cell in cells({"pin": {"io_uring"}}) for case in cell.cases]
    for case in universe()[:500] + io_uring:
        assert KCIDB_PATH.match(case.id), case.id
        assert parse_case(case.id) == case
    with pytest.raises(UnknownName, match="valid: memfd, memfd-hugetlb"):
        parse_case("io_uring.ext5.shared.rw.hole.none.admission")



def test_groups_hold_a_cell_per_mutation_and_lose_no_case():
    every = cells({"pin": {"io_uring"}, "backing": {"memfd", "ext4"}})
    groups = grouped(every)
    assert [c for g in groups for c in g.cells] == every, "every cell once, in order"
    for g in groups:
        assert is_group_id(g.id) and not is_group_id(g.cells[0].id)
        assert {c.id.rsplit(".", 1)[0] for c in g.cells} == {g.id}
        assert len({c.first.mutation for c in g.cells}) == len(g.cells)
    assert len(groups) == len({c.id.rsplit(".", 1)[0] for c in every})
