"""The spec loader: validation with file and line, layers and traits, version ranges, and the
decisions of the built-in spec as recorded."""

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from conformance.backings import BACKINGS
from conformance.dimensions import VOCABULARY, Case, universe, universe_products
from conformance.expectations import (
    LAYER_NAMES,
    Range,
    Spec,
    SpecError,
    collect_traits,
    parse,
    traits,
)
from conformance.pins import MECHANISMS

ADMIT = "io_uring.ext4.shared.rw.hole.none.admission"


def entries(text):
    return parse(text, "t.toml")


def test_builtin_spec_is_valid_and_cites_reasons():
    spec = Spec.load(checked=True)
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
    Spec.load([f], checked=True)  # ro io_uring is in the vocabulary's universe
    f.write_text('[[expect]]\npin = "io_uring"\nbacking = []\noutcome = "pinned"\nreason = "r"\n')
    with pytest.raises(SpecError, match=r"extra.toml:1: entry matches no case"):
        Spec.load([f], checked=True)
    # Each name is in the matrix, the pair is not: nothing is written through a read-only pin.
    f.write_text('[[expect]]\naccess = "ro"\ncheck = "pin-to-file"\noutcome = "coherent"\n'
                 'reason = "r"\n')
    with pytest.raises(SpecError, match=r"extra.toml:1: entry matches no case"):
        Spec.load([f], checked=True)


def test_the_products_the_spec_is_checked_against_are_the_universe():
    made = {tuple({**dict(zip(names, combo, strict=True)), "mutation": m, "check": c}[d]
                  for d in VOCABULARY)
            for names, pairs in universe_products()
            for combo in itertools.product(*names.values()) for m, c in pairs}
    assert made == {tuple(getattr(case, d) for d in VOCABULARY) for case in universe()}


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


# The decisions of the built-in spec, recorded: an edit that changes what any case expects on
# any of these kernels shows here; after checking that the change is meant, run RECORD.
RECORD = ".venv/bin/python -c 'import tests.test_spec as t; t.record()' (in the checkout)"
DECISIONS = Path(__file__).parent / "data" / "spec-decisions.json"
VERSIONS = [(5, 10, 0), (5, 15, 0), (5, 16, 0), (6, 1, 0), (6, 2, 0), (6, 4, 0), (6, 5, 0),
            (6, 6, 0), (6, 11, 0), (6, 12, 0), (6, 18, 0)]


def digests(spec: Spec, vocabulary: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """sha256 per kernel and pin of every decision (outcomes, errno, known, sometimes) and,
    apart, of its reasons, over the cases within the recorded vocabulary."""
    cases = sorted((c for c in universe()
                    if all(getattr(c, d) in names for d, names in vocabulary.items())),
                   key=lambda c: tuple(getattr(c, d) for d in vocabulary))
    # Each pin's case ids are hashed once; a kernel's decisions continue that hash, one
    # line per case in the same order.
    rows: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        rows.setdefault(c.pin, []).append(i)
    ids = {pin: hashlib.sha256("\n".join(".".join(getattr(cases[i], d) for d in vocabulary)
                                         for i in rows[pin]).encode()) for pin in rows}
    says = {"decisions": lambda e: (e.outcomes, e.errno, e.known, e.sometimes),
            "reasons": lambda e: (e.reason, e.known_reason)}
    out: dict[str, dict[str, str]] = {kind: {} for kind in says}
    for version, expected in spec.expect_many(cases, VERSIONS).items():
        distinct = {id(e): e for e in expected}
        for kind, say in says.items():
            said = {key: repr(e and say(e)) for key, e in distinct.items()}
            for pin, row in rows.items():
                h = ids[pin].copy()
                h.update("\n".join([said[id(expected[i])] for i in row]).encode())
                out[kind][f"{'.'.join(map(str, version))} {pin}"] = h.hexdigest()[:16]
    return out


def record() -> None:
    vocabulary = {d: list(v) for d, v in VOCABULARY.items()}
    doc = {"versions": VERSIONS, "vocabulary": vocabulary, **digests(Spec.load(), vocabulary)}
    DECISIONS.parent.mkdir(exist_ok=True)
    DECISIONS.write_text(json.dumps(doc, indent=1) + "\n")


def test_the_spec_decides_as_recorded():
    doc = json.loads(DECISIONS.read_text())
    assert [tuple(v) for v in doc["versions"]] == VERSIONS
    now = digests(Spec.load(), doc["vocabulary"])
    changed = [g for g in doc["decisions"] if now["decisions"].get(g) != doc["decisions"][g]]
    assert not changed, (f"the spec decides differently for {', '.join(changed)}: if that is "
                         f"meant, record again: {RECORD}")
    reworded = [g for g in doc["reasons"] if now["reasons"].get(g) != doc["reasons"][g]]
    assert not reworded, (f"reasons changed for {', '.join(reworded)} (the decisions did not): "
                          f"if that is meant, record again: {RECORD}")


def test_traits_stand_for_their_names():
    (e,) = entries('[[coherence]]\nbacking = ["dax", "tmpfs"]\nmutation = "detaches"\n'
                   'outcome = "coherent"\nreason = "r"\n')
    assert e.match["backing"] == ("tmpfs", "ext4-dax", "xfs-dax")
    assert "reflink" in e.match["mutation"] and "pwrite" not in e.match["mutation"]
    assert e.written["backing"] == ("dax", "tmpfs")


def test_traits_come_from_the_registries_and_agree_with_their_flags():
    named = traits()
    assert named["backing"]["dirty-tracked"] == ("ext4", "xfs", "btrfs")
    assert named["pin"]["longterm"] == ("io_uring", "udmabuf", "rdma", "gup_test")
    assert "reflink" in named["mutation"]["detaches"]
    for name, cls in BACKINGS.items():
        flags = {"persistent": cls.persistent, "hugetlb": cls.hugetlb, "reflink": cls.reflinks}
        assert {t for t, on in flags.items() if on} == cls.traits & set(flags), name
    for name, mech in MECHANISMS.items():
        assert ("writable" in mech.traits) == mech.writable, name


def test_a_trait_may_not_share_a_name():
    with pytest.raises(SpecError, match="backing trait 'ext4' is also a backing name: rename"):
        collect_traits("backing", {"ext4": frozenset({"dirty-tracked"}),
                                   "xfs": frozenset({"ext4"})})


@pytest.mark.parametrize("text,message", [
    ('[[refusal]]\noutcome = "refused"\nerrno = "EFAULT"\nreason = "r"\n',
     r"t.toml:1: unknown layer \[\[refusal\]\]; layers, lowest first: coherence, mutation"),
    ('[[coherence]]\nbacking = "dirty"\noutcome = "coherent"\nreason = "r"\n',
     "t.toml:1: unknown backing 'dirty'; valid: memfd.*; traits: dax, dirty-tracked"),
    ('[[mutation]]\noutcome = "coherent"\nreason = "r"\n',
     "t.toml:1: a \\[\\[mutation\\]\\] entry says outcome = \"unsupported\""),
    ('[[admission]]\noutcome = "unsupported"\nerrno = "EPERM"\nreason = "r"\n',
     "says outcome = \"refused\""),
    ('[[warning]]\noutcome = "coherent"\nknown = "kernel-warning"\nknown_reason = "k"\n'
     'reason = "r"\n', "only adds a known limitation: drop 'outcome'"),
    ('[[limitation]]\noutcome = "coherent"\nreason = "r"\n', "needs 'known' and 'known_reason'"),
    ('[[coherence]]\noutcome = "coherent"\nknown = "detached"\nknown_reason = "k"\nreason = "r"\n',
     "has no 'known': known limitations go in"),
    ('pin = "io_uring"\n[[admission]]\npin = "rdma"\noutcome = "refused"\nerrno = "EFAULT"\n'
     'reason = "r"\n', "t.toml:2: every entry of this file is about pin io_uring"),
    ('pin = "dma"\n[[coherence]]\noutcome = "coherent"\nreason = "r"\n',
     "t.toml: the top-level 'pin' names the one pin this file is about"),
    ('title = "x"\n', "a spec file holds only \\[\\[layer\\]\\] tables"),
])
def test_bad_layers_and_traits_are_one_line(text, message):
    with pytest.raises(SpecError, match=message) as e:
        entries(text)
    assert "\n" not in str(e.value)


def test_a_pin_file_is_about_its_pin(tmp_path):
    f = tmp_path / "patch.toml"
    f.write_text('pin = "io_uring"\n[[coherence]]\nbacking = "dax"\noutcome = "coherent"\n'
                 'reason = "r"\n')
    (e,) = parse(f.read_text(), str(f))
    assert e.match["pin"] == ("io_uring",) and e.pin_file


def test_layers_decide_in_order_whatever_the_file_order(tmp_path):
    """A --spec file's [[coherence]] comes after the built-in coherence rules but under the
    built-in refusals; its [[expect]] is over everything."""
    f = tmp_path / "patch.toml"
    f.write_text('[[expect]]\npin = "io_uring"\nbacking = "ext4"\noutcome = "detached"\n'
                 'reason = "over all"\n'
                 '[[coherence]]\npin = "io_uring"\nbacking = "dirty-tracked"\n'
                 'outcome = "coherent"\nreason = "a patch set promise"\n')
    spec = Spec.load([f])
    layers = [e.layer for e in spec.entries]
    assert layers == sorted(layers, key=LAYER_NAMES.index)
    xfs = Case.from_id("io_uring.xfs.shared.rw.hole.none.admission")
    assert spec.expect(xfs, (6, 18, 0)).errno == "EFAULT"  # the built-in admission still refuses
    private = Case.from_id("io_uring.xfs.private.rw.hole.pwrite.file-to-pin")
    assert spec.expect(private, (6, 18, 0)).reason == "a patch set promise"
    assert spec.expect(Case.from_id(ADMIT), (6, 18, 0)).reason == "over all"


def test_explain_names_every_matching_entry_and_its_role():
    spec = Spec.load()
    steps = spec.explain(Case.from_id(ADMIT), (6, 1, 0))
    roles = {(Path(s.entry.file).name, s.role) for s in steps}
    assert ("coherence.toml", "overridden") in roles
    decides = [s.entry for s in steps if s.role == "decides"]
    assert [(e.layer, e.kernel.text) for e in decides] == [("admission", "<6.5")]
    later = [s.entry for s in steps if s.role == "other kernels"]
    assert [e.kernel.text for e in later] == [">=6.5"]
    warned = spec.explain(Case.from_id("odirect.xfs-dax.shared.rw.written.none.zeropage"),
                          (6, 12, 0))
    assert [s.role for s in warned][-1] == "adds known"


def test_explain_says_which_known_limitation_counts():
    text = ('[[warning]]\nknown = "kernel-warning"\nknown_reason = "first"\nreason = "r"\n'
            '[[warning]]\nknown = "kernel-warning"\nknown_reason = "second"\nreason = "r"\n'
            '[[coherence]]\noutcome = "coherent"\nreason = "the rule"\n'
            '[[expect]]\nknown = "kernel-warning"\nknown_reason = "over all"\nreason = "r"\n')
    spec = Spec(parse(text, "t.toml"))
    case = Case.from_id(ADMIT)
    roles = [(s.entry.line, s.role, s.by and s.by.line) for s in spec.explain(case, (6, 18, 0))]
    assert roles == [(9, "decides", None), (1, "superseded", 12), (5, "superseded", 12),
                     (12, "adds known", None)]
    assert spec.expect(case, (6, 18, 0)).known_reason == "over all"


def test_pinhole_spec_shows_layers_traits_and_the_deciding_entry(capsys):
    from conformance.cli import main

    assert main(["spec"]) == 0
    out = capsys.readouterr().out
    assert "coherence < mutation < limitation < admission < warning < expect" in out
    assert "dirty-tracked = ext4, xfs, btrfs" in out and "io_uring.toml (6)" in out
    assert main(["spec", "--explain", ADMIT, "--kernel", "6.1"]) == 0
    out = capsys.readouterr().out
    assert "backing = dirty-tracked (ext4, xfs, btrfs)" in out
    assert "not on 6.1.0: kernel >=6.5" in out and "decides" in out
    assert "because (spec/io_uring.toml:" in out


def test_the_rules_for_one_pin_live_in_its_file():
    """A built-in pin file is named after its pin; a general file holds no rule for one pin."""
    for e in Spec.load().entries:
        name = Path(e.file).stem
        if e.pin_file:
            assert e.match["pin"] == (name,), f"{e.where}: a file about one pin is named after it"
        else:
            assert len(e.match.get("pin", VOCABULARY["pin"])) > 1, (
                f"{e.where}: a rule for one pin goes in that pin's file")
