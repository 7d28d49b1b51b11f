"""The matrix's dimensions, read from the registries (pins, backings, start states,
mutations, checks), and the cells and cases they cross. Names given by a user or a spec file
are checked here and nowhere else."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .backings import BACKINGS
from .checks import CHECKS, OPT_IN, PIN_CHECKS
from .model import Case, Cell
from .mutations import MUTATIONS
from .pins import MECHANISMS
from .subject import STATES

MAPPINGS = ("shared", "private")
ACCESS = ("ro", "rw")

VOCABULARY: dict[str, tuple[str, ...]] = {
    "pin": tuple(MECHANISMS), "backing": tuple(BACKINGS), "mapping": MAPPINGS,
    "access": ACCESS, "state": STATES, "mutation": tuple(MUTATIONS), "check": tuple(CHECKS),
}

KCIDB_PATH = re.compile(r"^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$")

Selection = dict[str, set[str]]


class UnknownName(ValueError):
    """A name outside the vocabulary; the message lists the valid ones."""


def unknown(dimension: str, names: Iterable[str]) -> None:
    valid = VOCABULARY[dimension]
    bad = [n for n in names if n not in valid]
    if bad:
        raise UnknownName(f"unknown {dimension} {', '.join(map(repr, bad))}; "
                          f"valid: {', '.join(valid)}")


def names(dimension: str, values: Iterable[str]) -> list[str]:
    """Repeated or comma-separated option values as checked names."""
    flat = [n for v in values for n in v.split(",") if n]
    unknown(dimension, flat)
    return flat


def parse_case(case_id: str) -> Case:
    """The case an id names, every part checked against the vocabulary."""
    case = Case.from_id(case_id)
    for dimension in VOCABULARY:
        unknown(dimension, [getattr(case, dimension)])
    return case


def is_group_id(text: str) -> bool:
    """Whether text names a group of cells (a case id without mutation and check), every
    part known."""
    parts, dims = text.split("."), [d for d in VOCABULARY if d not in ("mutation", "check")]
    return len(parts) == len(dims) and all(
        p in VOCABULARY[d] for d, p in zip(dims, parts, strict=True))


def writes_through_pin(check: str, mutation: str) -> bool:
    """Only a pin with access 'rw' can be written through."""
    return check == "pin-to-file" or mutation == "pin-write"


def _checks(mutation: str, no_writes: bool, checks: tuple[str, ...]) -> list[str]:
    """A cell's checks: the pin checks only before any change; no writes through a pin that
    cannot take them."""
    return [c for c in checks
            if (c not in PIN_CHECKS or mutation == "none")
            and not (no_writes and writes_through_pin(c, mutation))]


def cells(selection: Selection | None = None, extra_checks: Iterable[str] = (),
          every_access: bool = False) -> list[Cell]:
    """Every cell of the registered pins over the registered backings, narrowed by a
    selection (dimension → names; an absent or empty set means all). Opt-in checks
    (kernel-view) join only when named in extra_checks; every_access crosses each pin with
    both access modes and writes, as the spec's universe does."""
    want = {d: (selection or {}).get(d) or set(v) for d, v in VOCABULARY.items()}
    checks = tuple(c for c in CHECKS if c in want["check"]
                   and (c not in OPT_IN or c in extra_checks or every_access))
    out = []
    mutations = [m for m in MUTATIONS if m in want["mutation"]]
    # A cell's checks follow from its mutation and whether the pin takes writes alone.
    found = {(m, no): _checks(m, no, checks) for m in mutations for no in (False, True)}
    for pin, mech in MECHANISMS.items():
        if pin not in want["pin"]:
            continue
        accesses = ACCESS if every_access else mech.access
        for backing in (b for b in BACKINGS if b in want["backing"]):
            for mapping in (m for m in MAPPINGS if m in want["mapping"]):
                for access in (a for a in accesses if a in want["access"]):
                    no_writes = access == "ro" or not (mech.writable or every_access)
                    for state in (s for s in STATES if s in want["state"]):
                        for mutation in mutations:
                            if found[mutation, no_writes]:
                                out.append(Cell(tuple([
                                    Case(pin, backing, mapping, access, state, mutation, c)
                                    for c in found[mutation, no_writes]])))
    return out


def universe() -> list[Case]:
    """Every case the vocabulary allows, on any kernel: what spec entries are checked against."""
    return [case for cell in cells(every_access=True) for case in cell.cases]


Product = tuple[dict[str, tuple[str, ...]], list[tuple[str, str]]]


def universe_products() -> list[Product]:
    """universe() as products, one an access mode: every pin, backing, mapping and state by
    the (mutation, check) pairs the mode allows. The spec is checked against these, not the
    82,000 cases they make (0.17 s of pinhole's start); tests/test_spec.py holds them equal."""
    products = []
    for access in ACCESS:
        no_writes = access == "ro"  # as in cells(every_access=True): every pin takes writes
        names = {d: v for d, v in VOCABULARY.items() if d not in ("mutation", "check")}
        products.append(({**names, "access": (access,)},
                         [(m, c) for m in MUTATIONS for c in _checks(m, no_writes, CHECKS)]))
    return products
