"""Expectations as data: what the kernel should do for each case, per kernel version, and why.

Spec files are TOML. Each rule is a table whose header names its **layer**; layers decide in
this order, each overriding the ones before it (``pinhole spec`` prints it):

- ``[[coherence]]``: what an admitted pin shows, by mapping, backing, state and mutation;
- ``[[mutation]]``: mutations the kernel refuses (``unsupported`` with the errno);
- ``[[limitation]]``: known kernel limitations of admitted pins (an outcome and a ``known``);
  below admission, which overrides them where the pin is refused;
- ``[[admission]]``: pins the kernel refuses (``refused`` with the errno);
- ``[[warning]]``: kernel warnings seen around a case: a ``known`` kernel-warning with no
  outcome, added to what the layers below decide;
- ``[[expect]]``: anything, over every layer: what a ``--spec`` file usually holds.

Within a layer the general files come first, then the pin files (a file whose top-level
``pin = "io_uring"`` makes every entry in it about that pin; an entry there names no pin),
then ``--spec`` files in the order given; files in name order; in a file, later entries win.
The last matching entry with an outcome decides; a later one with ``known`` and no outcome
adds a known limitation to that decision. Each layer checks what its entries say (LAYERS):
an [[admission]] entry that is not ``refused`` is an error naming the layer it belongs in.

An entry matches on any of pin, backing, mapping, access, state, mutation, check (a name or a
list; absent means any) and an optional ``kernel`` range such as ``">=6.5"`` or
``">=5.14, <6.5"``. A **trait** can stand wherever a name of its dimension can: it means every
name that has it. Traits come from the registries (``Mechanism.traits`` in conformance/pins,
``Backing.traits`` in conformance/backings, ``Mutation.traits`` in conformance/mutations.py),
e.g. ``backing = "dax"`` is ext4-dax and xfs-dax; a trait must not share a name of its
dimension. An entry gives:

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
import functools
import operator
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .dimensions import PIN_CHECKS, VOCABULARY, UnknownName, universe_products, unknown
from .model import KERNEL_VIEW_OF, OUTCOMES, Case

SPEC_DIR = Path(__file__).parent / "spec"
# Outcomes where the kernel said no: the pin (refused) or the mutation (unsupported).
ERRNO_OUTCOMES = ("refused", "unsupported")
MATCH_KEYS = tuple(VOCABULARY)
ENTRY_KEYS = {*MATCH_KEYS, "kernel", "outcome", "errno", "reason", "known", "known_reason",
              "sometimes"}
RANGE_TERM = re.compile(r"^(>=|<|>|<=|==)\s*(\d+)\.(\d+)(?:\.(\d+))?$")
TABLE_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_-]+)\s*\]\]\s*(#.*)?$")


# Errno names a case can see: Python's, and the kernel-internal ones that reach user space
# from some paths (ENOTSUPP, 524, from drivers).
# errorcode keeps one name per number (ENOTSUP, not EOPNOTSUPP): take every name.
ERRNO_NAMES = frozenset(n for n in dir(errno) if n.startswith("E")) | {"ENOTSUPP"}


class SpecError(ValueError):
    """A spec file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Layer:
    """One step of precedence, with what its entries may say."""

    name: str
    says: str
    outcome: str | None = None  # the one outcome its entries give, where the layer fixes it
    known: bool | None = None  # True: 'known' required; False: forbidden; None: either
    decides: bool = True  # False: entries add a known limitation only, no outcome


LAYERS = (
    Layer("coherence", "what an admitted pin shows: the general rules, then each pin's own",
          known=False),
    Layer("mutation", "mutations the kernel refuses, whatever the pin", outcome="unsupported",
          known=False),
    Layer("limitation", "known kernel limitations of admitted pins: the correct outcome and "
          "the one this kernel is known to show", known=True),
    Layer("admission", "pins the kernel refuses, whatever happens after",
          outcome="refused", known=False),
    Layer("warning", "kernel warnings seen around a case, added as known to the decision "
          "below", known=True, decides=False),
    Layer("expect", "anything, over every layer: what --spec files usually hold"),
)
LAYER_NAMES = tuple(layer.name for layer in LAYERS)
_LAYER = {layer.name: layer for layer in LAYERS}


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


# Where each dimension's traits are declared, for error messages.
TRAIT_SOURCES = {"pin": "Mechanism.traits in conformance/pins",
                 "backing": "Backing.traits in conformance/backings",
                 "mutation": "Mutation.traits in conformance/mutations.py"}


def collect_traits(dimension: str, having: dict[str, frozenset[str]]) -> dict[str, tuple[str, ...]]:
    """Trait → the names that have it (in vocabulary order), from name → its traits."""
    out: dict[str, list[str]] = {}
    for name in VOCABULARY[dimension]:
        for trait in sorted(having.get(name, ())):
            out.setdefault(trait, []).append(name)
    clash = sorted(set(out) & set(VOCABULARY[dimension]))
    if clash:
        raise SpecError(f"{dimension} trait {clash[0]!r} is also a {dimension} name: rename the "
                        f"trait ({TRAIT_SOURCES.get(dimension, 'its registry')})")
    return {t: tuple(names) for t, names in sorted(out.items())}


@functools.cache
def traits() -> dict[str, dict[str, tuple[str, ...]]]:
    """Dimension → trait → the names it stands for, read from the registries."""
    from .backings import BACKINGS
    from .mutations import MUTATIONS
    from .pins import MECHANISMS

    having = {"pin": {n: c.traits for n, c in MECHANISMS.items()},
              "backing": {n: c.traits for n, c in BACKINGS.items()},
              "mutation": {n: m.traits for n, m in MUTATIONS.items()}}
    return {d: collect_traits(d, having[d]) if d in having else {} for d in VOCABULARY}


@dataclass(frozen=True)
class Entry:
    file: str
    line: int
    match: dict[str, tuple[str, ...]]  # names, traits expanded
    kernel: Range | None
    outcomes: tuple[str, ...]
    errno: str | None
    reason: str
    known: str | None = None
    known_reason: str | None = None
    sometimes: bool = False
    layer: str = "expect"
    # Precedence within a layer: 0 built-in, 1.. the --spec files in order given.
    source: int = 0
    pin_file: bool = False  # from a file about one pin (its top-level 'pin')
    written: dict[str, tuple[str, ...]] = field(default_factory=dict)  # as the file says

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def precedence(self) -> tuple[int, int, bool]:
        """Sort key: layer, then built-in before --spec files, general before pin files."""
        return LAYER_NAMES.index(self.layer), self.source, self.pin_file

    def matches(self, case: Case, version: Version | None) -> bool:
        if version is not None and self.kernel and not self.kernel.contains(version):
            return False
        return all(getattr(case, k) in v for k, v in self.match.items())

    def outcomes_for(self, check: str) -> tuple[str, ...]:
        general = "check" not in self.match
        if general and check in PIN_CHECKS and not set(self.outcomes) & set(ERRNO_OUTCOMES):
            return ("pinned",)
        if check == "kernel-view":  # a user-space outcome, as the kernel sees the folio
            return tuple(dict.fromkeys(k for o in self.outcomes
                                       for k in KERNEL_VIEW_OF.get(o, (o,))))
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


def _table_lines(text: str) -> dict[str, list[int]]:
    """Line numbers of each array-of-tables header, per table name, in file order."""
    out: dict[str, list[int]] = {}
    for i, line in enumerate(text.splitlines()):
        m = TABLE_HEADER.match(line)
        if m:
            out.setdefault(m[1], []).append(i + 1)
    return out


def _names(where: str, key: str, value: object) -> tuple[str, ...]:
    """The names a match value stands for, traits expanded, in vocabulary order."""
    values = (value,) if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise SpecError(f"{where}: {key} must be a name or a list of names")
    named = traits()[key]
    bad = [v for v in values if v not in named]
    try:
        unknown(key, bad)
    except UnknownName as e:
        hint = f"; traits: {', '.join(named)}" if named else ""
        raise SpecError(f"{where}: {e}{hint}") from None
    wanted = {n for v in values for n in named.get(v, (v,))}
    return tuple(n for n in VOCABULARY[key] if n in wanted)


def _check_layer(where: str, layer: Layer, outcomes: tuple[str, ...], table: dict) -> None:
    """What a layer's entries may say: the one-line error says where the entry belongs."""
    header = f"a [[{layer.name}]] entry"
    if not layer.decides and outcomes:
        raise SpecError(f"{where}: {header} only adds a known limitation: drop 'outcome', or "
                        "move the entry to [[limitation]] or [[expect]]")
    if layer.outcome and outcomes != (layer.outcome,):
        raise SpecError(f"{where}: {header} says outcome = \"{layer.outcome}\" with its errno; "
                        "other outcomes go in [[coherence]] or [[limitation]]")
    if layer.known is False and "known" in table:
        raise SpecError(f"{where}: {header} has no 'known': known limitations go in "
                        "[[limitation]] (with an outcome) or [[warning]] (without)")
    if layer.known and "known" not in table:
        raise SpecError(f"{where}: {header} needs 'known' and 'known_reason': a rule without "
                        "a known limitation goes in [[coherence]]")


def _entry(table: dict, where: str, layer: Layer) -> tuple[tuple[str, ...], Range | None]:
    """Check one table; its outcomes and kernel range."""
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
    _check_layer(where, layer, outcomes, table)
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
    return outcomes, kernel


def _file_pin(data: dict, path: str) -> str | None:
    """The pin a file is about (its top-level 'pin'), if any."""
    if "pin" not in data:
        return None
    pin = data.pop("pin")
    if not isinstance(pin, str) or pin not in VOCABULARY["pin"]:
        raise SpecError(f"{path}: the top-level 'pin' names the one pin this file is about: "
                        f"one of {', '.join(VOCABULARY['pin'])}")
    return pin


def parse(text: str, path: str, source: int = 0) -> list[Entry]:
    """The entries of one spec file, in file order (Spec orders them by layer)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: {e}") from None
    pin = _file_pin(data, path)
    lines = _table_lines(text)
    for name, value in data.items():
        tables = isinstance(value, list) and all(isinstance(t, dict) for t in value)
        if tables and name not in _LAYER:
            raise SpecError(f"{path}:{lines.get(name, [0])[0]}: unknown layer [[{name}]]; "
                            f"layers, lowest first: {', '.join(LAYER_NAMES)}")
        if not tables or len(lines.get(name, ())) != len(value):
            raise SpecError(f"{path}: a spec file holds only [[layer]] tables "
                            f"({', '.join(LAYER_NAMES)}) and a top-level 'pin'")
    entries = []
    for name, tables in data.items():
        for table, line in zip(tables, lines[name], strict=True):
            where = f"{path}:{line}"
            if pin and "pin" in table:
                raise SpecError(f"{where}: every entry of this file is about pin {pin} (its "
                                "top-level 'pin'): drop 'pin' here, or move the entry to a "
                                "general file")
            outcomes, kernel = _entry(table, where, _LAYER[name])
            match = {k: _names(where, k, table[k]) for k in MATCH_KEYS if k in table}
            if pin:
                match = {"pin": (pin,), **match}
            written = {k: (table[k],) if isinstance(table[k], str) else tuple(table[k])
                       for k in MATCH_KEYS if k in table}
            written = {"pin": (pin,), **written} if pin else written
            entries.append(Entry(path, line, match, kernel, outcomes, table.get("errno"),
                                 table["reason"].strip(), table.get("known"),
                                 table.get("known_reason"), table.get("sometimes", False),
                                 name, source, pin is not None, written))
    return entries


@dataclass(frozen=True)
class Step:
    """One entry that matches a case, and what it does to the decision."""

    entry: Entry
    role: str  # decides, overridden, adds known, ignored, superseded, other kernels
    by: Entry | None = None  # the entry that takes over, where one does


class Spec:
    """Entries from the built-in spec files, then any layered files, in precedence order."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = sorted(entries, key=lambda e: e.precedence)  # stable: file order stays
        # name → bitmask of the entries that match it, per dimension: a case's entries are
        # the AND of its seven names' masks (and its kernel's), and the decision per mask
        # is computed once.
        everything = (1 << len(self.entries)) - 1
        self._free = {d: everything & ~self._bits(lambda e, d=d: d in e.match)
                      for d in MATCH_KEYS}
        self._by_name = {
            d: {n: self._free[d] | self._bits(lambda e, d=d, n=n: n in e.match.get(d, ()))
                for n in VOCABULARY[d]}
            for d in MATCH_KEYS}
        self._kernels: dict[Version | None, int] = {None: everything}
        self._decisions: dict[tuple[int, str], Expectation | None] = {}

    def _bits(self, pred: Callable[[Entry], bool]) -> int:
        return sum(1 << i for i, e in enumerate(self.entries) if pred(e))

    @classmethod
    def load(cls, extra: list[str | Path] = (), checked: bool = False) -> Spec:
        """The built-in spec files, then extra; checked: every entry must match some case of
        the full matrix."""
        files = [(f, 0) for f in sorted(SPEC_DIR.glob("*.toml"))]
        files += [(Path(p), i + 1) for i, p in enumerate(extra)]
        entries: list[Entry] = []
        for f, source in files:
            try:
                text = f.read_bytes().decode()
            except OSError as e:
                raise SpecError(f"{f}: cannot read spec file: {e.strerror}") from None
            except UnicodeDecodeError as e:
                raise SpecError(f"{f}: not UTF-8 text (byte {e.start}): a spec file is TOML, "
                                "which is UTF-8") from None
            # Built-in entries are named as in the source tree: short, and the same everywhere.
            entries += parse(text, f"spec/{f.name}" if source == 0 else str(f), source)
        spec = cls(entries)
        if checked:
            spec.validate()
        return spec

    def _kernel(self, version: Version | None) -> int:
        """The entries whose kernel range holds the version (None: any kernel)."""
        if version not in self._kernels:
            self._kernels[version] = self._bits(
                lambda e: e.kernel is None or e.kernel.contains(version))
        return self._kernels[version]

    def _mask(self, case: Case, version: Version | None) -> int:
        mask = self._kernel(version)
        for d in MATCH_KEYS:
            mask &= self._by_name[d].get(getattr(case, d), self._free[d])
        return mask

    def _listed(self, mask: int) -> list[Entry]:
        return [e for i, e in enumerate(self.entries) if mask >> i & 1]

    def validate(self) -> None:
        """Every entry must match some case of the full matrix (on some kernel). An entry
        matches a case of a product when each dimension has a name it matches, so a product's
        entries are the AND over its dimensions of the OR of their names' masks."""
        seen = 0
        for names, pairs in universe_products():
            mask = self._kernel(None) & functools.reduce(operator.or_, (
                self._by_name["mutation"][m] & self._by_name["check"][c] for m, c in pairs), 0)
            for d, values in names.items():
                mask &= functools.reduce(operator.or_, (self._by_name[d][n] for n in values), 0)
            seen |= mask
        for i, e in enumerate(self.entries):
            if not seen >> i & 1:
                raise SpecError(f"{e.where}: entry matches no case of the matrix")

    def deciding(self, case: Case, version: Version) -> list[Entry]:
        """The entries that match a case on a kernel, in precedence order."""
        return self._listed(self._mask(case, version))

    def expect(self, case: Case, version: Version) -> Expectation | None:
        return self._decision(self._mask(case, version), case.check)

    def expect_many(self, cases: list[Case],
                    versions: list[Version]) -> dict[Version, list[Expectation | None]]:
        """expect() for many cases on several kernels: each case's names are looked up once."""
        masks = [self._mask(c, None) for c in cases]
        return {v: [self._decision(m & self._kernel(v), c.check)
                    for m, c in zip(masks, cases, strict=True)] for v in versions}

    def _decision(self, mask: int, check: str) -> Expectation | None:
        key = (mask, check)
        if key not in self._decisions:
            self._decisions[key] = self._decide(self._listed(mask), check)
        return self._decisions[key]

    @staticmethod
    def _decide(entries: list[Entry], check: str) -> Expectation | None:
        deciding = [e for e in entries if e.outcomes]
        if not deciding:
            return None
        last = deciding[-1]
        # A later entry without an outcome adds a known limitation to that decision.
        known = next((e for e in reversed(entries[entries.index(last):]) if e.known), last)
        return Expectation(last.outcomes_for(check), last.errno, last.reason,
                           known.known, known.known_reason, tuple(entries), known.sometimes)

    def explain(self, case: Case, version: Version) -> list[Step]:
        """Every entry that matches the case on any kernel, in precedence order, with its
        role on this one: what decides, what it overrides, and what this kernel leaves out."""
        here = self.deciding(case, version)
        last = next((e for e in reversed(here) if e.outcomes), None)
        after = here[here.index(last):] if last else []
        known = next((e for e in reversed(after) if e.known), None)
        steps = []
        for e in self._listed(self._mask(case, None)):
            if e not in here:
                steps.append(Step(e, "other kernels"))
            elif e is last:
                steps.append(Step(e, "decides"))
            elif e.outcomes:
                steps.append(Step(e, "overridden", last))
            elif e not in after:
                steps.append(Step(e, "ignored", last))  # no decision yet to add to
            elif e is known:
                steps.append(Step(e, "adds known"))
            else:
                steps.append(Step(e, "superseded", known))
        return steps
