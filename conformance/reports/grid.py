"""The matrix as the renderers draw it: one table per pin, rows, columns and each cell's cases."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter

from ..dimensions import PIN_CHECKS, VOCABULARY

# The column of a row's pin checks (admission, zeropage); every other column is a mutation.
PIN_COLUMN = "pin"
ROW_DIMENSIONS = ("backing", "mapping", "access", "state")
# Worst first: a cell shows the first of its checks' verdicts in this order, so a cell reads
# pass only when every check in it passed.
SEVERITY = ("fail", "error", "xpass", "xfail", "skip", "pass")
SYMBOLS = {"pass": "✓", "fail": "✗", "xfail": "~", "xpass": "!", "skip": "-", "error": "E"}
ASCII_SYMBOLS = {**SYMBOLS, "pass": "+", "fail": "#"}
OUTCOME_CODES = {
    "pinned": "P", "refused": "R", "unsupported": "U", "blocked": "B", "coherent": "C",
    "detached": "D",
    "disconnected": "Z", "stale-cache": "S", "lost-write": "L", "resurrected": "X",
    "kernel-warning": "W",
}
# An outcome this module does not know yet still gets a visible code instead of vanishing.
OTHER_CODE = "?"

Row = tuple[str, str, str, str]


def order(dimension: str, seen: Iterable[str]) -> list[str]:
    """Distinct values, in vocabulary order where the vocabulary knows them, else as seen."""
    known = VOCABULARY.get(dimension, ())
    distinct = list(dict.fromkeys(seen))
    return sorted(distinct, key=lambda v: (known.index(v), 0) if v in known
                  else (len(known), distinct.index(v)))


row_of = itemgetter(*ROW_DIMENSIONS)


def column_of(case: dict) -> str:
    return PIN_COLUMN if case["check"] in PIN_CHECKS else case["mutation"]


def rank(verdict: str) -> int:
    # A verdict outside SEVERITY is newer than this module: show it rather than hide it.
    return SEVERITY.index(verdict) if verdict in SEVERITY else -1


def worst(verdicts: Iterable[str]) -> str:
    return min(verdicts, key=rank)


@dataclass
class Cell:
    """The checks of one row, one column and one kernel. Complete once tables() returns, so
    what it says is computed once: a renderer asks again for every column set it measures."""

    cases: list[dict] = field(default_factory=list)

    @cached_property
    def verdict(self) -> str:
        return worst(c["verdict"] for c in self.cases)

    @cached_property
    def codes(self) -> str:
        outcomes = [c["outcome"] for c in self.cases if c["outcome"]]
        return "".join(dict.fromkeys(OUTCOME_CODES.get(o, OTHER_CODE) for o in outcomes))

    @cached_property
    def errno(self) -> str:
        return next((c["errno"] for c in self.cases if c.get("errno")), "")

    @cached_property
    def reasons(self) -> list[str]:
        """Distinct reasons, the worst check's first."""
        ranked = sorted(self.cases, key=lambda c: rank(c["verdict"]))
        return list(dict.fromkeys(c["reason"] for c in ranked if c.get("reason")))

    @cached_property
    def signature(self) -> tuple:
        return tuple((c["check"], c["verdict"], c["outcome"], c.get("errno"))
                     for c in self.cases)

    def text(self, symbols: dict[str, str], errno: bool = True) -> str:
        shown = f":{self.errno}" if errno and self.errno and "R" in self.codes else ""
        return symbols.get(self.verdict, OTHER_CODE) + self.codes + shown


@dataclass
class Table:
    """One pin mechanism: rows × columns, with a cell per kernel where that kernel ran it."""

    pin: str
    kernels: int
    columns: list[str]
    rows: list[Row]
    cells: dict[tuple[Row, int, str], Cell]

    def cell(self, row: Row, kernel: int, column: str) -> Cell | None:
        return self.cells.get((row, kernel, column))

    def differs(self, row: Row, column: str) -> bool:
        """True when the kernels saw different things here (or only some of them ran it)."""
        seen = {c.signature if (c := self.cell(row, k, column)) else None
                for k in range(self.kernels)}
        return len(seen) > 1


def tables(docs: list[dict]) -> list[Table]:
    by_pin: dict[str, list[tuple[int, dict, Row]]] = {}
    for k, doc in enumerate(docs):
        for c in doc["cases"]:
            by_pin.setdefault(c["pin"], []).append((k, c, row_of(c)))
    out = []
    for pin in order("pin", by_pin):
        mine = by_pin[pin]
        cases = [c for _, c, _ in mine]
        # map() and dict.fromkeys() over 36,000 cases: a report's every table, at C speed.
        rank = {d: {v: i for i, v in enumerate(order(d, dict.fromkeys(map(itemgetter(d), cases))))}
                for d in (*ROW_DIMENSIONS, "check")}
        rows = sorted(dict.fromkeys(row for _, _, row in mine),
                      key=lambda r: [rank[d][v] for d, v in zip(ROW_DIMENSIONS, r, strict=True)])
        mutations = order("mutation", (c["mutation"] for c in cases
                                       if c["check"] not in PIN_CHECKS))
        has_pin = any(c["check"] in PIN_CHECKS for c in cases)
        cells: dict[tuple[Row, int, str], Cell] = {}
        check_rank = rank["check"]
        for k, c, row in sorted(mine, key=lambda kcr: check_rank[kcr[1]["check"]]):
            cells.setdefault((row, k, column_of(c)), Cell()).cases.append(c)
        columns = [PIN_COLUMN] * has_pin + mutations
        out.append(Table(pin, len(docs), columns, rows, cells))
    return out


def kernel_labels(docs: list[dict]) -> list[str]:
    return [f"k{i}" for i in range(1, len(docs) + 1)]

