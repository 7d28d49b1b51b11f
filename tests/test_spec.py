"""The spec loader: validation with file and line, layering, version ranges."""

import pytest

from conformance.dimensions import Case, universe
from conformance.expectations import Range, Spec, SpecError, parse

ADMIT = "io_uring.ext4.shared.rw.hole.none.admission"


def entries(text):
    return parse(text, "t.toml")


def test_builtin_spec_is_valid_and_cites_reasons():
    spec = Spec.load(universe=universe())
    assert spec.entries and all(len(e.reason) > 40 for e in spec.entries)


@pytest.mark.parametrize("version,outcome,errno", [
    ((6, 18, 0), "refused", "EFAULT"), ((6, 5, 0), "refused", "EFAULT"),
    ((6, 1, 0), "refused", "EOPNOTSUPP"), ((5, 10, 0), "refused", "EOPNOTSUPP"),
])
def test_admission_follows_the_6_5_rule(version, outcome, errno):
    exp = Spec.load().expect(Case.from_id(ADMIT), version)
    assert (exp.outcomes, exp.errno) == ((outcome,), errno)


def test_pin_checks_expect_pinned_unless_refused():
    spec = Spec.load()
    memfd = Case.from_id("io_uring.memfd.shared.rw.hole.none.zeropage")
    assert spec.expect(memfd, (6, 18, 0)).outcomes == ("pinned",)
    assert spec.expect(memfd, (5, 10, 0)).outcomes == ("refused",)
    private = Case.from_id("io_uring.memfd.private.rw.hole.none.pin-to-file")
    assert spec.expect(private, (6, 18, 0)).outcomes == ("detached",)


@pytest.mark.parametrize("text,message", [
    ('[[expect]]\npin = "io_uring"\nbacking = "ext5"\noutcome = "coherent"\nreason = "r"\n',
     "t.toml:1: unknown backing 'ext5'; valid: memfd"),
    ('\n[[expect]]\noutcome = "fine"\nreason = "r"\n', "t.toml:2: unknown outcome 'fine'"),
    ('[[expect]]\noutcome = "coherent"\n', "t.toml:1: every entry needs 'reason'"),
    ('[[expect]]\noutcome = "coherent"\nreason = "r"\nkernel = "6.5+"\n', "bad kernel range"),
    ('[[expect]]\noutcome = "refused"\nreason = "r"\n',
     "'errno' goes with outcomes refused and unsupported"),
    ('[[expect]]\noutcome = "coherent"\nreason = "r"\ncolour = "red"\n', "unknown key colour"),
    ('[[expect]\n', "t.toml: "),
])
def test_bad_entries_are_refused_with_file_and_line(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("+", r"\+")):
        entries(text)


def test_an_entry_that_matches_nothing_is_refused(tmp_path):
    f = tmp_path / "extra.toml"
    f.write_text('# a layered file\n[[expect]]\npin = "io_uring"\naccess = "ro"\n'
                 'backing = "ext4"\ncheck = "admission"\nmutation = "none"\nstate = "hole"\n'
                 'mapping = "shared"\noutcome = "pinned"\nreason = "r"\n')
    Spec.load([f], universe())  # ro io_uring is in the vocabulary's universe
    f.write_text('[[expect]]\npin = "io_uring"\nbacking = []\noutcome = "pinned"\nreason = "r"\n')
    with pytest.raises(SpecError, match=r"extra.toml:1: entry matches no case"):
        Spec.load([f], universe())


def test_layered_spec_refines_builtin(tmp_path):
    f = tmp_path / "patch.toml"
    f.write_text('[[expect]]\npin = "io_uring"\nbacking = "ext4"\nmapping = "shared"\n'
                 'outcome = "coherent"\nreason = "the patch set allows it"\n'
                 'known = "refused"\nknown_reason = "not merged yet"\n')
    exp = Spec.load([f]).expect(Case.from_id(ADMIT), (6, 18, 0))
    assert exp.outcomes == ("pinned",) and exp.known == "refused"
    assert exp.entries[-1].file.endswith("patch.toml")


def test_ranges():
    r = Range.parse(">=5.14, <6.5")
    assert r.contains((5, 14, 0)) and r.contains((6, 4, 99)) and not r.contains((6, 5, 0))
    with pytest.raises(ValueError):
        Range.parse("~6.5")


def test_an_entry_without_outcome_only_adds_a_known_limitation():
    text = ('[[expect]]\noutcome = "refused"\nerrno = "EFAULT"\nreason = "rule"\n'
            '[[expect]]\nknown = "kernel-warning"\nknown_reason = "seen"\nsometimes = true\n'
            'reason = "r"\n')
    exp = Spec(parse(text, "t.toml")).expect(Case.from_id(ADMIT), (6, 18, 0))
    assert (exp.outcomes, exp.errno, exp.known, exp.sometimes) == (
        ("refused",), "EFAULT", "kernel-warning", True)
    later = text + '[[expect]]\noutcome = "coherent"\nreason = "a later decision"\n'
    exp = Spec(parse(later, "t.toml")).expect(Case.from_id(ADMIT), (6, 18, 0))
    assert exp.known is None and exp.outcomes == ("pinned",)
