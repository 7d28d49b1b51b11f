"""Expectations as data: what the kernel should do for each case, per kernel version, and why.

Spec files are TOML with a list of ``[[expect]]`` tables, read in order; later entries
refine earlier ones. An entry matches on any of pin, backing, mapping, access, state,
mutation, check (a name or a list; absent means any) and an optional ``kernel`` range such
as ``">=6.5"`` or ``">=5.14, <6.5"``. It gives:

- ``outcome``: what a correct kernel shows (see OUTCOMES), or a list of outcomes that are
  all correct (a punch hole may detach the folio or, when it cannot split a large folio,
  zero it in place);
- ``errno``: for ``refused`` (the pin) and ``unsupported`` (the mutation), the errno name;
- ``reason``: the kernel function or commit that makes it so (required);
- ``known``/``known_reason``: an outcome the kernel is known to show instead, a limitation
  reported as an expected failure; ``sometimes = true`` where it shows in some cells only
  (cells without it then pass rather than xpass).

An entry that does not name a check sets the coherence outcome; the pin checks (admission,
zeropage) then expect ``pinned`` unless the outcome is ``refused``.
"""

from __future__ import annotations

import errno
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .dimensions import PIN_CHECKS, VOCABULARY, Case, UnknownName, unknown

SPEC_DIR = Path(__file__).parent / "spec"

OUTCOMES = ("pinned", "refused", "unsupported", "blocked", "coherent", "detached",
            "stale-cache", "disconnected", "lost-write", "resurrected", "kernel-warning")
# Outcomes where the kernel said no: the pin (refused) or the mutation (unsupported).
ERRNO_OUTCOMES = ("refused", "unsupported")
MATCH_KEYS = tuple(VOCABULARY)
ENTRY_KEYS = {*MATCH_KEYS, "kernel", "outcome", "errno", "reason", "known", "known_reason",
              "sometimes"}
RANGE_TERM = re.compile(r"^(>=|<|>|<=|==)\s*(\d+)\.(\d+)(?:\.(\d+))?$")


# Errno names a case can see: Python's, and the kernel-internal ones that reach user space
# from some paths (ENOTSUPP, 524, from drivers).
# errorcode keeps one name per number (ENOTSUP, not EOPNOTSUPP): take every name.
ERRNO_NAMES = frozenset(n for n in dir(errno) if n.startswith("E")) | {"ENOTSUPP"}


class SpecError(ValueError):
    """A spec file that cannot be used; the message names file and line."""


Version = tuple[int, int, int]


@dataclass(frozen=True)
class Range:
    text: str
    terms: tuple[tuple[str, Version], ...]

    @classmethod
    def parse(cls, text: str) -> Range:
        terms = []
        for part in text.split(","):
            m = RANGE_TERM.match(part.strip())
            if not m:
                raise ValueError(f"bad kernel range {text!r}: use terms like '>=6.5' joined by ','")
            terms.append((m[1], (int(m[2]), int(m[3]), int(m[4] or 0))))
        return cls(text, tuple(terms))

    def empty(self) -> bool:
        """True when no version satisfies every term (">=6.5,<6.1")."""
        lo, lo_open, hi, hi_open = (0, 0, 0), False, None, False
        for op, v in self.terms:
            if op in (">=", ">", "==") and (v > lo or (v == lo and op == ">")):
                lo, lo_open = v, op == ">"
            if op in ("<=", "<", "==") and (hi is None or v < hi or (v == hi and op == "<")):
                hi, hi_open = v, op == "<"
        return hi is not None and (lo > hi or (lo == hi and (lo_open or hi_open)))

    def contains(self, version: Version) -> bool:
        ops = {">=": version.__ge__, ">": version.__gt__, "<": version.__lt__,
               "<=": version.__le__, "==": version.__eq__}
        return all(ops[op](v) for op, v in self.terms)


@dataclass(frozen=True)
class Entry:
    file: str
    line: int
    match: dict[str, tuple[str, ...]]
    kernel: Range | None
    outcomes: tuple[str, ...]
    errno: str | None
    reason: str
    known: str | None = None
    known_reason: str | None = None
    sometimes: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def matches(self, case: Case, version: Version | None) -> bool:
        if version is not None and self.kernel and not self.kernel.contains(version):
            return False
        return all(getattr(case, k) in v for k, v in self.match.items())

    def outcomes_for(self, check: str) -> tuple[str, ...]:
        pin_check = "check" not in self.match and check in PIN_CHECKS
        if pin_check and not set(self.outcomes) & set(ERRNO_OUTCOMES):
            return ("pinned",)
        return self.outcomes


@dataclass(frozen=True)
class Expectation:
    outcomes: tuple[str, ...]
    errno: str | None
    reason: str
    known: str | None
    known_reason: str | None
    entries: tuple[Entry, ...] = field(default=())
    sometimes: bool = False


def _entry_lines(text: str) -> list[int]:
    return [i + 1 for i, line in enumerate(text.splitlines()) if line.strip() == "[[expect]]"]


def _names(path: str, line: int, key: str, value: object) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise SpecError(f"{path}:{line}: {key} must be a name or a list of names")
    try:
        unknown(key, list(values))
    except UnknownName as e:
        raise SpecError(f"{path}:{line}: {e}") from None
    return tuple(values)


def parse(text: str, path: str) -> list[Entry]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: {e}") from None
    raw = data.get("expect", [])
    lines = _entry_lines(text)
    if set(data) - {"expect"} or len(lines) != len(raw):
        raise SpecError(f"{path}: a spec file holds only [[expect]] tables")
    entries = []
    for table, line in zip(raw, lines, strict=True):
        where = f"{path}:{line}"
        extra = set(table) - ENTRY_KEYS
        if extra:
            raise SpecError(f"{where}: unknown key {', '.join(sorted(extra))}; "
                            f"valid: {', '.join(sorted(ENTRY_KEYS))}")
        if not isinstance(table.get("reason"), str) or not table["reason"].strip():
            raise SpecError(f"{where}: every entry needs 'reason'")
        outcomes = table.get("outcome")
        outcomes = (outcomes,) if isinstance(outcomes, str) else tuple(outcomes or ())
        # An entry with 'known' but no 'outcome' only adds a known limitation to what the
        # entries before it decide.
        if not outcomes and "known" not in table:
            raise SpecError(f"{where}: every entry needs 'outcome'")
        for outcome in (*outcomes, *([table["known"]] if "known" in table else [])):
            if outcome not in OUTCOMES:
                raise SpecError(f"{where}: unknown outcome {outcome!r}; "
                                f"valid: {', '.join(OUTCOMES)}")
        if ("errno" in table) != (len(outcomes) == 1 and outcomes[0] in ERRNO_OUTCOMES):
            raise SpecError(f"{where}: 'errno' goes with outcomes {' and '.join(ERRNO_OUTCOMES)}, "
                            "and only with them")
        if ("known" in table) != ("known_reason" in table):
            raise SpecError(f"{where}: 'known' and 'known_reason' go together")
        if "sometimes" in table and ("known" not in table or table["sometimes"] is not True):
            raise SpecError(f"{where}: 'sometimes = true' qualifies a 'known' limitation")
        try:
            kernel = Range.parse(table["kernel"]) if "kernel" in table else None
        except ValueError as e:
            raise SpecError(f"{where}: {e}") from None
        if kernel and kernel.empty():
            raise SpecError(f"{where}: kernel range {kernel.text!r} matches no version")
        if "errno" in table and table["errno"] not in ERRNO_NAMES:
            raise SpecError(f"{where}: unknown errno {table['errno']!r}; use a name like "
                            "EFAULT or EOPNOTSUPP")
        match = {k: _names(path, line, k, table[k]) for k in MATCH_KEYS if k in table}
        entries.append(Entry(path, line, match, kernel, outcomes, table.get("errno"),
                             table["reason"].strip(), table.get("known"),
                             table.get("known_reason"), table.get("sometimes", False)))
    return entries


class Spec:
    """Entries from the built-in spec files, then any layered files, in order."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, extra: list[str | Path] = (), universe: list[Case] | None = None) -> Spec:
        files = sorted(SPEC_DIR.glob("*.toml")) + [Path(p) for p in extra]
        entries: list[Entry] = []
        for f in files:
            try:
                text = f.read_bytes().decode()
            except OSError as e:
                raise SpecError(f"{f}: cannot read spec file: {e.strerror}") from None
            except UnicodeDecodeError as e:
                raise SpecError(f"{f}: not UTF-8 text (byte {e.start}): a spec file is TOML, "
                                "which is UTF-8") from None
            entries += parse(text, str(f))
        spec = cls(entries)
        if universe is not None:
            spec.validate(universe)
        return spec

    def validate(self, universe: list[Case]) -> None:
        """Every entry must match some case of the full matrix (on some kernel)."""
        for e in self.entries:
            if not any(e.matches(c, None) for c in universe):
                raise SpecError(f"{e.where}: entry matches no case of the matrix")

    def deciding(self, case: Case, version: Version) -> list[Entry]:
        return [e for e in self.entries if e.matches(case, version)]

    def expect(self, case: Case, version: Version) -> Expectation | None:
        entries = self.deciding(case, version)
        deciding = [e for e in entries if e.outcomes]
        if not deciding:
            return None
        last = deciding[-1]
        # A later entry without an outcome adds a known limitation to that decision.
        known = next((e for e in reversed(entries[entries.index(last):]) if e.known), last)
        return Expectation(last.outcomes_for(case.check), last.errno, last.reason,
                           known.known, known.known_reason, tuple(entries), known.sometimes)

