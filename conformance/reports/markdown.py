"""matrix.md: the matrix as plain-text tables that read the same in a terminal, an email and a
Markdown viewer, with a legend and numbered footnotes for the reasons."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable
from string import ascii_lowercase

from .. import results
from ..dimensions import VOCABULARY
from . import about, grid
from .findings import spec_name

# matrix.md is pasted into mail: no line may pass WIDTH. Wider tables name their mutation
# columns by letter and split by mutation family; the reasons column keeps REASONS of room.
WIDTH = WRAP = 100
REASONS = 24


class Footnotes:
    """Distinct reasons, numbered in order of first reference."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        # The cells that gave each reason, once each, in order: a table is measured with
        # throw-away notes several times before it is drawn, so their cases are read at render.
        self.cells: dict[str, dict[int, grid.Cell]] = {}

    def refer(self, cell: grid.Cell, reason: str) -> int:
        self.cells.setdefault(reason, {}).setdefault(id(cell), cell)
        return self.numbers.setdefault(reason, len(self.numbers) + 1)

    def render(self) -> str:
        lines = ["## Reasons", ""]
        for reason, n in self.numbers.items():
            cases = [c for cell in self.cells[reason].values() for c in cell.cases
                     if c.get("reason") == reason]
            verdicts = ", ".join(sorted({c["verdict"] for c in cases}, key=grid.rank))
            spec = compact([spec_name(s) for c in cases for s in c.get("spec", [])])
            text = f"[{n}] {verdicts}: {reason}" + (f" (spec {spec})" if spec else "")
            lines += textwrap.wrap(text, WRAP, subsequent_indent="    ", break_long_words=False,
                                   break_on_hyphens=False)
        return "\n".join(lines)


def compact(where: list[str]) -> str:
    """['a.toml:4', 'a.toml:11', 'b.toml:2'] -> 'a.toml:4,11 b.toml:2'."""
    lines: dict[str, list[str]] = {}
    for w in dict.fromkeys(where):
        name, _, line = w.rpartition(":")
        lines.setdefault(name, []).append(line)
    return " ".join(f"{name}:{','.join(n)}" for name, n in lines.items())


def legend(symbols: dict[str, str], several: bool) -> str:
    verdicts = " ".join(f"{s}={v}" for v, s in symbols.items())
    outcomes = " ".join(f"{code}={name}" for name, code in grid.OUTCOME_CODES.items())
    lines = [
        f"Each cell: the worst verdict of its checks, {verdicts};",
        f"then what they saw, {outcomes}.",
        f"Column {grid.PIN_COLUMN}: the admission and zeropage checks, with the errno of a refusal "
        "(R:EFAULT). Mutation columns: file-to-pin and pin-to-file after that mutation, two "
        "letters when they differ (file-to-pin first); too many to name, they go by letter, "
        "with the key under each table. Each pin has a table per family of mutations. States "
        "that saw the same share a row: 'all', or a range such as hole..stored. Reasons: the "
        "numbered notes at the end, the row's own first, then columns:number for cells whose "
        "reason differs from it. matrix.html has every check of every cell.",
    ]
    if several:
        lines.append("*: the kernels saw different things in this cell, or not all of them ran it.")
    return "\n".join(textwrap.fill(line, WRAP, break_on_hyphens=False) for line in lines)


def item(text: str) -> list[str]:
    return textwrap.wrap(text, WRAP, initial_indent="- ", subsequent_indent="  ",
                         break_on_hyphens=False)


def head(docs: list[dict]) -> str:
    if len(docs) == 1:
        doc = docs[0]
        k = doc["kernel"]
        lines = [
            f"kernel: {k.get('release', '?')} ({k.get('version', '?')}), {k.get('machine', '?')}",
            f"run: {about.run(doc)}",
            f"pins: {about.available(doc, 'pins')}",
            f"backings: {about.available(doc, 'backings')}",
            f"totals: {about.totals(doc)}",
        ]
        env = about.environment(doc)
        return "\n".join(line for text in lines + ([f"environment: {env}"] if env else [])
                         for line in item(text))
    lines = [f"{label}: {d['kernel'].get('release', '?')} {d['kernel'].get('machine', '?')}, "
             f"{about.run(d)}; {about.totals(d)}"
             for label, d in zip(grid.kernel_labels(docs), docs, strict=True)]
    for what in ("pins", "backings", "environment"):
        said = [about.environment(d) if what == "environment" else about.available(d, what)
                for d in docs]
        if len(set(said)) == 1:
            lines += [f"{what}: {said[0]}"] if said[0] else []
            continue
        lines += [f"{what} on {label}: {text}"
                  for label, text in zip(grid.kernel_labels(docs), said, strict=True) if text]
    return "\n".join(line for text in lines for line in item(text))


def label_widths(rows: list[list[str]]) -> list[int]:
    """The width of every column but the last (the reasons)."""
    return [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]


def text_table(rows: list[list[str]], width: int = WIDTH) -> str:
    """Columns padded and one space apart, in a code block so every viewer keeps them aligned;
    the last column (the reasons) wraps onto lines of its own to keep within width."""
    widths = label_widths(rows)
    room = width - sum(widths) - len(widths)
    lines = []
    for r in rows:
        tail = textwrap.wrap(r[-1], max(room, 12), break_on_hyphens=False) or [""]
        pad = " ".join(c.ljust(w) for c, w in zip(r, widths, strict=False))
        lines.append(f"{pad} {tail[0]}".rstrip())
        lines += [" " * (len(pad) + 1) + t for t in tail[1:]]
    lines.insert(1, " ".join("-" * w for w in widths))
    return "\n".join(["```", *lines, "```"])


def runs(indices: list[int], names: list[str]) -> str:
    """Column positions as names, consecutive ones as a range: [4, 5, 6, 9] -> 'e-g,j'."""
    groups: list[list[int]] = []
    for i in indices:
        if groups and groups[-1][-1] == i - 1:
            groups[-1].append(i)
        else:
            groups.append([i])
    return ",".join(names[g[0]] if len(g) == 1 else f"{names[g[0]]}-{names[g[-1]]}"
                    for g in groups)


class Drawing:
    """One table as matrix.md draws it: what each cell shows and which cells of a row give
    reasons, worked out once however many times the table is measured and drawn."""

    def __init__(self, table: grid.Table, symbols: dict[str, str]) -> None:
        self.table, self.symbols = table, symbols
        self.texts: dict[tuple[grid.Row, int, str], str] = {}
        self.reasoned: dict[tuple[grid.Row, int], list[tuple[str, grid.Cell]]] = {}

    def text(self, row: grid.Row, k: int, column: str) -> str:
        key = (row, k, column)
        if key not in self.texts:
            t = self.table
            cell = t.cell(row, k, column)
            # The pin cell carries the row's errno; mutation cells show it only if it differs.
            errno = column == grid.PIN_COLUMN or t.cell(row, k, grid.PIN_COLUMN) is None
            differs = cell is not None and t.kernels > 1 and t.differs(row, column)
            self.texts[key] = (cell.text(self.symbols, errno) + "*" * differs) if cell else ""
        return self.texts[key]

    def notes(self, row: grid.Row, k: int, at: dict[str, int], notes: Footnotes,
              names: list[str]) -> str:
        """The row's reasons in the columns at these positions: its own by number (the pin
        cell's, or else the one most of its cells give), then columns:number for the cells
        whose reason differs."""
        if (row, k) not in self.reasoned:
            self.reasoned[row, k] = [(c, cell) for c in self.table.columns
                                     if (cell := self.table.cell(row, k, c)) and cell.reasons]
        # In the table's order, which every column list drawn keeps.
        cells = {c: cell for c, cell in self.reasoned[row, k] if c in at}
        pin = self.table.cell(row, k, grid.PIN_COLUMN) if grid.PIN_COLUMN in at else None
        if pin is not None:
            own = pin.reasons
        else:
            tally = Counter(cell.reasons[0] for cell in cells.values())
            own = [tally.most_common(1)[0][0]] if tally else []
        refs = [str(notes.refer(next(c for c in cells.values() if r in c.reasons), r))
                for r in own]
        where: dict[int, list[int]] = {}
        for column, cell in cells.items():
            for r in cell.reasons if column != grid.PIN_COLUMN else []:
                if r not in own:
                    where.setdefault(notes.refer(cell, r), []).append(at[column])
        # Notes cited by the same columns share one entry: 'b:2,3'.
        shared: dict[tuple[int, ...], list[str]] = {}
        for n, places in where.items():
            shared.setdefault(tuple(places), []).append(str(n))
        return " ".join(refs + [f"{runs(list(places), names)}:{','.join(ns)}"
                                for places, ns in shared.items()])


def state_label(states: list[str], every: list[str]) -> str:
    if len(states) == 1:
        return states[0]
    return "all" if states == every else f"{states[0]}..{states[-1]}"


def body(drawing: Drawing, columns: list[str], labels: list[str], notes: Footnotes,
         headers: dict[str, str], dims: list[int]) -> list[list[str]]:
    """The table's rows; consecutive states that saw the same in every column, on every
    kernel, share one row."""
    table, text = drawing.table, drawing.text
    at = {c: i for i, c in enumerate(columns)}
    names = [headers[c] for c in columns]
    several = table.kernels > 1
    state = grid.ROW_DIMENSIONS.index("state")
    every = grid.order("state", (r[state] for r in table.rows))
    merged: list[tuple[grid.Row, list[str], list[list[str]]]] = []
    for row in table.rows:
        seen = [[text(row, k, c) for c in columns]
                + [drawing.notes(row, k, at, notes, names)] for k in range(table.kernels)]
        last = merged[-1] if merged else None
        if last and last[0][:state] == row[:state] and last[2] == seen:
            last[1].append(row[state])
        else:
            merged.append((row, [row[state]], seen))
    rows = [[grid.ROW_DIMENSIONS[i] for i in dims] + ["kernel"] * several
            + [headers[c] for c in columns] + ["reasons"]]
    previous: tuple[str, ...] = ()
    for row, states, seen in merged:
        key = tuple(state_label(states, every) if i == state else row[i] for i in dims)
        for k, line in enumerate(seen):
            # Repeated leading labels are left blank so each group reads as one block.
            rows.append([v if not k and previous[:i + 1] != key[:i + 1] else ""
                         for i, v in enumerate(key)] + [labels[k]] * several + line)
        previous = key
    return rows


def letters(n: int) -> list[str]:
    single = list(ascii_lowercase)
    return (single + [a + b for a in single for b in single])[:n]


# The mutations' letters, the same in every table of every report.
KEYS = dict(zip(VOCABULARY["mutation"], letters(len(VOCABULARY["mutation"])), strict=True))


def family(column: str) -> str:
    if column == grid.PIN_COLUMN:
        return "baseline"
    from ..mutations import MUTATIONS as REGISTRY  # the family is the registry's word

    m = REGISTRY.get(column)
    return m.family if m else "other"


FAMILY_TITLES = {"baseline": "pin checks", "data": "data", "size": "size and extents",
                 "reclaim": "reclaim", "io": "I/O paths", "process": "mappings and processes"}


def families(columns: list[str]) -> list[tuple[str, list[str]]]:
    """Columns by mutation family, in the order they come."""
    out: dict[str, list[str]] = {}
    for c in columns:
        out.setdefault(family(c), []).append(c)
    return list(out.items())


def split(table: grid.Table, width: int,
          measure: Callable[[list[str]], int]) -> list[tuple[list[str], list[str]]]:
    """Families packed into as few tables as keep every line within width (the reasons column
    may wrap). A family is split only when it is too wide on its own (many kernels, wide
    cells). Returns (family names, columns) per table."""
    parts: list[tuple[list[str], list[str]]] = []
    for name, columns in families(table.columns):
        if parts and measure(parts[-1][1] + columns) <= width:
            parts[-1][0].append(name)
            parts[-1][1].extend(columns)
        elif measure(columns) <= width:
            parts.append(([name], list(columns)))
        else:
            for column in columns:
                if parts and parts[-1][0][-1] == name and measure(parts[-1][1] + [column]) <= width:
                    parts[-1][1].append(column)
                else:
                    parts.append(([name], [column]))
    return parts


def all_skipped(table: grid.Table) -> str | None:
    """A pin whose every case skipped, as a few lines instead of a table of dashes."""
    cases = [c for cell in table.cells.values() for c in cell.cases]
    if any(c["verdict"] != "skip" for c in cases):
        return None
    why = Counter(c.get("reason") or "no reason given" for c in cases)
    lines = [f"## {table.pin}: all {len(cases):,} cases skipped", ""]
    for reason, n in why.most_common():
        lines += textwrap.wrap(f"- {n:,}: {reason}", WRAP, subsequent_indent="  ",
                               break_on_hyphens=False)
    return "\n".join(lines)


def section(table: grid.Table, labels: list[str], notes: Footnotes,
            symbols: dict[str, str]) -> str:
    skipped = all_skipped(table)
    if skipped:
        return skipped
    # A row dimension with one value in this table goes to the title instead of a column.
    dims = [i for i in range(len(grid.ROW_DIMENSIONS)) if len({r[i] for r in table.rows}) > 1]
    fixed = [f"{grid.ROW_DIMENSIONS[i]} {table.rows[0][i]}" for i in
             range(len(grid.ROW_DIMENSIONS)) if i not in dims]
    title = f"## {table.pin}" + (f" ({', '.join(fixed)})" if fixed else "")
    names = {c: c for c in table.columns}
    lettered = {**names, **{m: KEYS.get(m, m) for m in table.columns if m != grid.PIN_COLUMN}}
    drawing = Drawing(table, symbols)

    def width(columns: list[str], headers: dict[str, str]) -> int:
        # Measured without the reasons column: it wraps, and keeps at least REASONS of room.
        widths = label_widths(body(drawing, columns, labels, Footnotes(), headers, dims))
        return sum(widths) + len(widths) + REASONS

    # Whole names when the whole table fits; else letters, in as few tables as fit.
    if width(table.columns, names) <= WIDTH:
        return f"{title}\n\n" + text_table(body(drawing, table.columns, labels, notes,
                                                 names, dims))
    parts = [title]
    for fams, columns in split(table, WIDTH, lambda cols: width(cols, lettered)):
        what = ", ".join(FAMILY_TITLES.get(f, f) for f in fams)
        key = ", ".join(f"{lettered[c]}={c}" for c in columns if c != grid.PIN_COLUMN)
        drawn = text_table(body(drawing, columns, labels, notes, lettered, dims))
        parts.append(f"### {table.pin}: {what}\n\n{drawn}\n\n"
                     + textwrap.fill(f"Columns: {key}.", WRAP, break_on_hyphens=False))
    return "\n\n".join(parts)


def render(docs: list[dict], *, ascii: bool = False) -> str:
    symbols = grid.ASCII_SYMBOLS if ascii else grid.SYMBOLS
    labels = grid.kernel_labels(docs)
    notes = Footnotes()
    tables = grid.tables(docs)
    warnings = [f"**{line}**" for line in results.incomplete_lines(docs)]
    parts = ["# pinhole matrix", *warnings, head(docs), legend(symbols, len(docs) > 1)]
    if len(docs) > 1:
        differ = sum(t.differs(r, c) for t in tables for r in t.rows for c in t.columns)
        parts.append(f"{differ} cells differ between kernels (marked *)." if differ
                     else "The kernels saw the same in every cell.")
    parts += [section(t, labels, notes, symbols) for t in tables]
    if notes.numbers:
        parts.append(notes.render())
    return "\n\n".join(parts) + "\n"
