"""matrix.md: the matrix as plain-text tables that read the same in a terminal, an email and a
Markdown viewer, with a legend and numbered footnotes for the reasons."""

from __future__ import annotations

import textwrap
from pathlib import Path
from string import ascii_lowercase

from .. import results
from . import about, grid

# Wider tables name their mutation columns by letter, with a key under the table.
MAX_WIDTH = 120
WRAP = 100


class Footnotes:
    """Distinct reasons, numbered in order of first reference."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.verdicts: dict[str, list[str]] = {}
        self.spec: dict[str, list[str]] = {}

    def refer(self, cell: grid.Cell, reason: str) -> int:
        n = self.numbers.setdefault(reason, len(self.numbers) + 1)
        for c in cell.cases:
            if c.get("reason") == reason:
                self.verdicts.setdefault(reason, []).append(c["verdict"])
                self.spec.setdefault(reason, []).extend(Path(s).name for s in c.get("spec", []))
        return n

    def render(self) -> str:
        lines = ["## Reasons", ""]
        for reason, n in self.numbers.items():
            verdicts = ", ".join(sorted(set(self.verdicts[reason]), key=grid.rank))
            spec = compact(self.spec[reason])
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
        "letters when they differ (file-to-pin first). Reasons: the numbered notes below, the "
        "pin cell's first, then columns:number for cells whose reason differs from it.",
    ]
    if several:
        lines.append("*: the kernels saw different things in this cell, or not all of them ran it.")
    return "\n".join(textwrap.fill(line, WRAP, break_on_hyphens=False) for line in lines)


def head(docs: list[dict]) -> str:
    if len(docs) == 1:
        doc = docs[0]
        k = doc["kernel"]
        lines = [
            f"- kernel: {k.get('release', '?')} ({k.get('version', '?')}), {k.get('machine', '?')}",
            f"- run: {about.run(doc)}",
            f"- pins: {about.available(doc, 'pins')}",
            f"- backings: {about.available(doc, 'backings')}",
            f"- totals: {about.totals(doc)}",
        ]
        env = about.environment(doc)
        return "\n".join(lines + ([f"- environment: {env}"] if env else []))
    rows = [["kernel", "release", "machine", "run", "totals"]]
    rows += [[label, d["kernel"].get("release", "?"), d["kernel"].get("machine", "?"),
              about.run(d), about.totals(d)]
             for label, d in zip(grid.kernel_labels(docs), docs, strict=True)]
    lines = [pipe_table(rows), ""]
    for what in ("pins", "backings", "environment"):
        said = [about.environment(d) if what == "environment" else about.available(d, what)
                for d in docs]
        if len(set(said)) == 1:
            lines += [f"- {what}: {said[0]}"] if said[0] else []
            continue
        lines += [f"- {what} on {label}: {text}"
                  for label, text in zip(grid.kernel_labels(docs), said, strict=True) if text]
    return "\n".join(lines)


def pipe_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]])


def text_table(rows: list[list[str]]) -> str:
    """Columns padded and one space apart, in a code block so every viewer keeps them aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
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


def notes_of(table: grid.Table, row: grid.Row, k: int, notes: Footnotes,
             headers: dict[str, str]) -> str:
    """The row's reasons: its pin cell's by number, then columns:number for the other cells."""
    pin_cell = table.cell(row, k, grid.PIN_COLUMN)
    cited = pin_cell.reasons if pin_cell else []
    refs = [str(notes.refer(pin_cell, r)) for r in cited]
    columns: dict[int, list[int]] = {}
    for i, column in enumerate(table.columns):
        cell = table.cell(row, k, column)
        if cell is not None and column != grid.PIN_COLUMN:
            for r in cell.reasons:
                if r not in cited:
                    columns.setdefault(notes.refer(cell, r), []).append(i)
    # Notes cited by the same columns share one entry: 'pwrite:2,3'.
    shared: dict[tuple[int, ...], list[str]] = {}
    for n, where in columns.items():
        shared.setdefault(tuple(where), []).append(str(n))
    names = [headers[c] for c in table.columns]
    return " ".join(refs + [f"{runs(list(where), names)}:{','.join(ns)}"
                            for where, ns in shared.items()])


def body(table: grid.Table, labels: list[str], notes: Footnotes, symbols: dict[str, str],
         headers: dict[str, str], dims: list[int]) -> list[list[str]]:
    several = table.kernels > 1
    rows = [[grid.ROW_DIMENSIONS[i] for i in dims] + ["kernel"] * several
            + [headers[c] for c in table.columns] + ["reasons"]]
    previous: tuple[str, ...] = ()
    for row in table.rows:
        for k in range(table.kernels):
            key = tuple(row[i] for i in dims)
            # Repeated leading labels are left blank so each group reads as one block.
            line = [v if not k and previous[:i + 1] != key[:i + 1] else ""
                    for i, v in enumerate(key)] + [labels[k]] * several
            pin_cell = table.cell(row, k, grid.PIN_COLUMN)
            for column in table.columns:
                cell = table.cell(row, k, column)
                # The pin cell carries the row's errno; mutation cells show it only if it differs.
                errno = column == grid.PIN_COLUMN or pin_cell is None
                text = cell.text(symbols, errno) if cell else ""
                mark = "*" if cell and several and table.differs(row, column) else ""
                line.append(text + mark)
            line.append(notes_of(table, row, k, notes, headers))
            rows.append(line)
            previous = key
    return rows


def letters(n: int) -> list[str]:
    single = list(ascii_lowercase)
    return (single + [a + b for a in single for b in single])[:n]


def section(table: grid.Table, labels: list[str], notes: Footnotes,
            symbols: dict[str, str]) -> str:
    # A row dimension with one value in this table goes to the title instead of a column.
    dims = [i for i in range(len(grid.ROW_DIMENSIONS)) if len({r[i] for r in table.rows}) > 1]
    fixed = [f"{grid.ROW_DIMENSIONS[i]} {table.rows[0][i]}" for i in
             range(len(grid.ROW_DIMENSIONS)) if i not in dims]
    title = f"## {table.pin}" + (f" ({', '.join(fixed)})" if fixed else "")
    mutations = [c for c in table.columns if c != grid.PIN_COLUMN]
    names = {c: c for c in table.columns}
    full = text_table(body(table, labels, Footnotes(), symbols, names, dims))
    if max(map(len, full.splitlines())) <= MAX_WIDTH:
        return f"{title}\n\n" + text_table(body(table, labels, notes, symbols, names, dims))
    keys = dict(zip(mutations, letters(len(mutations)), strict=True))
    text = text_table(body(table, labels, notes, symbols, {**names, **keys}, dims))
    key = ", ".join(f"{k}={m}" for m, k in keys.items())
    return f"{title}\n\n{text}\n\n" + textwrap.fill(f"Mutations: {key}.", WRAP,
                                                         break_on_hyphens=False)


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
