"""validation/run.py's own logic, on the shipped mutants and recorded records: every mutant
says what it breaks and what to run, and a kill is counted only where the hazard shows."""

import importlib.util
import sys
from pathlib import Path

import pytest

from conformance.dimensions import VOCABULARY, Case
from conformance.expectations import Spec

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("validation_run", ROOT / "validation" / "run.py")
run = sys.modules["validation_run"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)
MUTANTS = [run.Mutant.load(p) for p in sorted(run.MUTANTS.glob("*.patch"))]


def test_at_least_eight_mutants_one_good_with_its_overlay():
    assert len(MUTANTS) >= 8
    assert [m.kind for m in MUTANTS].count("good") == 1
    for m in MUTANTS:
        assert {"Breaks", "Origin", "Cells", "Select"} <= m.fields.keys(), m.name
        assert (m.overlay is not None) == (m.kind == "good"), m.name


@pytest.mark.parametrize("m", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_is_a_patch_of_mm_with_a_valid_selection(m):
    body = m.path.read_text().split("\n---\n", 1)[1]
    assert body.startswith("diff --git a/") and "+++ b/mm/" in body
    # The selection must name real dimension values: pinhole would refuse it in the VM.
    for option, values in zip(m.select[::2], m.select[1::2], strict=True):
        for v in values.split(","):
            assert v in VOCABULARY[option.lstrip("-")], (option, v)


def test_overlay_loads_and_expects_the_zeropage_only_for_references():
    good = next(m for m in MUTANTS if m.kind == "good")
    s = Spec.load([good.overlay])
    ref = Case.from_id("vmsplice.memfd.shared.ro.hole.none.zeropage")
    pin = Case.from_id("gup_test.memfd.shared.ro.hole.none.zeropage")
    assert s.expect(ref, (6, 12, 0)).outcomes == ("disconnected",)
    assert s.expect(pin, (6, 12, 0)).outcomes == ("pinned",)


def test_union_keeps_open_what_any_selection_leaves_open():
    union = run.union_selection([["--pin", "a,b", "--mapping", "shared"], ["--pin", "b,c"]])
    assert union == ["--pin", "a,b,c"]


@pytest.mark.parametrize("record,killed", [
    ({"verdict": "fail", "outcome": "disconnected", "expected": "coherent"}, True),
    ({"verdict": "fail", "outcome": "pinned", "expected": "refused EFAULT"}, True),
    ({"verdict": "fail", "outcome": "coherent", "expected": "detached"}, False),
    ({"verdict": "pass", "outcome": "disconnected", "expected": "disconnected"}, False),
    ({"verdict": "error", "outcome": "kernel-warning", "expected": "coherent"}, True),
])
def test_a_kill_names_the_hazard(record, killed):
    assert run.hazard(record) is killed


def test_base_is_judged_on_each_mutant_cells():
    doc = {"cases": [
        {"id": "x", "pin": "udmabuf", "backing": "memfd", "mapping": "shared", "state": "hole",
         "mutation": "none", "verdict": "fail"},
        {"id": "y", "pin": "io_uring", "backing": "ext4", "mapping": "shared", "state": "hole",
         "mutation": "none", "verdict": "pass"}]}
    on = run.base_on(doc, MUTANTS)
    assert on["04-memfd-pin-zero-folio"] == {"cases": 1, "of": 6, "fails": ["x"]}
    assert on["03-writable-file-pin-allowed"] == {"cases": 1, "of": 96, "fails": []}
