"""The shared model, at the bottom of the import order: what a case is, what a trial of one
cell holds, what a check saw, and the record a case leaves.

A case id joins pin.backing.mapping.access.state.mutation.check, e.g.
``io_uring.ext4.shared.rw.hole.none.file-to-pin``: selectable with ``-k`` and a valid KCIDB
test path. A cell is a case without its check: one trial (prepare, pin, mutate) answers all
the checks of a cell. A group is a cell without its mutation: one pytest item runs its cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pins.base import Pinned
    from .subject import Subject
    from .worker import Worker

# A case's verdict, in the order reports count them.
VERDICTS = ("pass", "fail", "xfail", "xpass", "skip", "error")
# What a case can see: the pin (pinned, refused), the mutation (unsupported, blocked), the
# coherence checks, the kernel log, and the kernel's own view of the pinned folios.
OUTCOMES = ("pinned", "refused", "unsupported", "blocked", "coherent", "detached",
            "stale-cache", "disconnected", "lost-write", "resurrected", "kernel-warning",
            "same-folio", "private-copy", "orphan", "other-folio", "zeropage")
# What the kernel view must show where user space expects an outcome: the folio the pin
# holds is the file's (coherent), or not (detached: a private copy, a folio taken out of the
# file, or one the file replaced); the outcomes where the kernel said no carry over.
KERNEL_VIEW_OF = {
    "pinned": ("same-folio",), "coherent": ("same-folio",), "lost-write": ("same-folio",),
    "detached": ("private-copy", "orphan", "other-folio"),
    "disconnected": ("zeropage", "orphan", "other-folio"),
    # A failed invalidation (dio_warn_stale_pagecache()) leaves the pinned folio in i_pages.
    "stale-cache": ("same-folio", "orphan", "other-folio"), "resurrected": ("private-copy",),
    "refused": ("refused",), "unsupported": ("unsupported",), "blocked": ("blocked",),
    "kernel-warning": ("kernel-warning",),
}


@dataclass(frozen=True, order=True)
class Case:
    pin: str
    backing: str
    mapping: str
    access: str
    state: str
    mutation: str
    check: str

    @cached_property  # asked for on every record and report line
    def id(self) -> str:
        # Spelled out: 5 times faster than a join over the fields, for the plan's 36,504 ids
        # in every process (2 s of a guest's start under TCG).
        return (f"{self.pin}.{self.backing}.{self.mapping}.{self.access}.{self.state}."
                f"{self.mutation}.{self.check}")

    def dimensions(self) -> dict[str, str]:
        # Spelled out, as id is: 2.5 times faster than splitting the id, for 23,400 known skips.
        return {"pin": self.pin, "backing": self.backing, "mapping": self.mapping,
                "access": self.access, "state": self.state, "mutation": self.mutation,
                "check": self.check}

    @property
    def cell(self) -> str:
        return self.id.rsplit(".", 1)[0]

    def __str__(self) -> str:
        return self.id

    @classmethod
    def from_id(cls, case_id: str) -> Case:
        """The case an id names; dimensions.parse_case() also checks every name."""
        parts = case_id.split(".")
        if len(parts) != len(CASE_FIELDS):
            raise ValueError(f"a case id has {len(CASE_FIELDS)} parts "
                             f"({'.'.join(CASE_FIELDS)}): {case_id}")
        return cls(*parts)


CASE_FIELDS = tuple(f.name for f in fields(Case))


@dataclass(frozen=True)
class Cell:
    """The cases of one pin, backing, mapping, access, start state and mutation, answered by
    one trial: the checks in the order they run."""

    cases: tuple[Case, ...]

    @property
    def id(self) -> str:
        return self.cases[0].cell

    @property
    def first(self) -> Case:
        return self.cases[0]


@dataclass(frozen=True)
class Group:
    """The cells of one pin, backing, mapping, access and start state: one pytest item, whose
    cells (a mutation each) run in turn and are recorded one by one. Per-item costs (pytest's
    protocol, xdist's messages) are paid once for them all, not once a cell."""

    cells: tuple[Cell, ...]

    @property
    def id(self) -> str:
        return group_of(self.cells[0].id)

    @property
    def cases(self) -> tuple[Case, ...]:
        return tuple(case for cell in self.cells for case in cell.cases)


def group_of(cell_id: str) -> str:
    """A cell's group id: the cell id without its mutation."""
    return cell_id.rsplit(".", 1)[0]


def grouped(cells: list[Cell]) -> list[Group]:
    """Cells into groups, in the order their first cell comes."""
    by: dict[str, list[Cell]] = {}
    for cell in cells:
        by.setdefault(group_of(cell.id), []).append(cell)
    return [Group(tuple(members)) for members in by.values()]


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str

    @classmethod
    def yes(cls, reason: str = "available") -> Availability:
        return cls(True, reason)

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class Observation:
    outcome: str
    detail: str = ""
    errno: str | None = None


@dataclass(frozen=True)
class Baseline:
    """The pinned range just before the mutation. What the pin holds is not read: no check
    needs it (fork-write reads it itself), and on a huge page through rdma under TCG it was a
    quarter of the cell."""

    file: bytes  # read() of the pinned range


@dataclass(frozen=True)
class Effect:
    file: bytes  # what read() of the pinned range must return now (b"" past EOF)
    detaches: bool = False  # the operation removes the pinned page from the file or mapping
    pin: bytes | None = None  # what the pin must hold, where the operation wrote into it
    direct: bytes | None = None  # an O_DIRECT read taken after the operation


@dataclass
class Trial:
    """One cell's file, pin and worker while its mutation and checks run."""

    case: Case
    subject: Subject
    pinned: Pinned
    worker: Worker
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def private_copy(self) -> bool:
        """The pin was taken through a MAP_PRIVATE mapping, so it may hold a private copy (a
        file pinner such as udmabuf pins the file's folios whatever maps them)."""
        return self.case.mapping == "private" and self.pinned.through_mapping

    @property
    def holds_private_copy(self) -> bool:
        """A long-term pin through a MAP_PRIVATE mapping holds the exclusive copy the mapping
        keeps mapping, so later stores through the mapping reach the pin."""
        return self.private_copy and self.pinned.longterm


@dataclass
class Result:
    """One case's record, as results.json stores it."""

    case: Case
    verdict: str
    outcome: str | None = None
    expected: str | None = None
    reason: str = ""
    errno: str | None = None
    detail: str = ""
    dmesg: str = ""
    taint: str = ""
    spec: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        case = self.case
        return {"id": case.id, **case.dimensions(),
                **{name: getattr(self, name) for name in RESULT_FIELDS},
                "spec": list(self.spec), "duration_s": self.duration_s}


# A record's own fields besides its case, in results.json's order.
RESULT_FIELDS = tuple(f.name for f in fields(Result) if f.name not in ("case", "spec",
                                                                        "duration_s"))
