"""matrix.html: the matrix as one self-contained page (inline CSS and JS, nothing fetched), a
colour per verdict, each cell's checks in full on click, and filters by pin, backing, verdict
and kernel."""

from __future__ import annotations

import json
from html import escape

from .. import results
from . import about, grid

FIELDS = ("id", "verdict", "expected", "outcome", "errno", "detail", "reason", "spec", "dmesg",
          "taint", "duration_s")
# Reasons and details repeat across thousands of cases: the page stores each text once.
INTERNED = ("verdict", "expected", "outcome", "errno", "detail", "reason", "dmesg", "taint")


class Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int | None:
        return None if text is None else self.index.setdefault(text, len(self.index))

    def case(self, c: dict, kernel: str) -> list:
        """The case's FIELDS in order, then its kernel label: positions, not repeated keys."""
        values = [self(c.get(f)) if f in INTERNED else c.get(f) for f in FIELDS]
        values[FIELDS.index("spec")] = [self(s) for s in c.get("spec") or []]
        return [*values, kernel]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:1px 5px;text-align:left;vertical-align:top}
table.m td,table.m th{white-space:nowrap}
table.m th{vertical-align:bottom}
table.m th.col div{writing-mode:vertical-rl;transform:rotate(180deg)}
table.m td{font-family:ui-monospace,monospace;cursor:pointer;text-align:center}
table.m th.rep{color:#bbb;font-weight:normal}
.v-pass{background:#c8e6c9}.v-fail{background:#ef5350;color:#fff;font-weight:bold}
.v-xfail{background:#ffe082}.v-xpass{background:#b39ddb}.v-skip{background:#eee;color:#777}
.v-error{background:#ff9800;color:#fff;font-weight:bold}
td.diff{outline:2px solid #1565c0;outline-offset:-3px}
td.dim{opacity:.2}
td.sel{outline:3px solid #000;outline-offset:-3px}
#filters{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ccc}
#filters label{margin-right:.8em}
#panel{position:fixed;right:0;top:0;bottom:0;width:38%;overflow:auto;background:#fafafa;
border-left:2px solid #888;padding:.5em 1em;box-sizing:border-box}
#panel dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:.3em 0 1em}
#panel dt{font-weight:bold}#panel dd{margin:0;white-space:pre-wrap;word-break:break-word}
#panel h3{margin:.8em 0 0;font-size:1em;font-family:ui-monospace,monospace}
.legend span{display:inline-block;padding:0 6px;margin-right:4px}
"""

SCRIPT = """
const data = JSON.parse(document.getElementById('cells').textContent);
const cells = data.cells, strings = data.strings, interned = new Set(data.interned);
const fields = [...data.fields, 'kernel'];
const text = (k, v) => k === 'spec' ? v.map(i => strings[i]) : interned.has(k) && v !== null
  ? strings[v] : v;
const $ = id => document.getElementById(id);
function apply() {
  const pin = $('f-pin').value, backing = $('f-backing').value;
  const kernel = $('f-kernel') ? $('f-kernel').value : '';
  const wanted = new Set([...document.querySelectorAll('.f-verdict:checked')].map(e => e.value));
  for (const sec of document.querySelectorAll('section.pin'))
    sec.hidden = pin !== '' && sec.dataset.pin !== pin;
  for (const tr of document.querySelectorAll('tr[data-backing]')) {
    let any = false;
    for (const td of tr.querySelectorAll('td[data-cell]')) {
      const hit = td.dataset.verdicts.split(' ').some(v => wanted.has(v));
      td.classList.toggle('dim', !hit);
      any = any || hit;
    }
    tr.hidden = !any || (backing !== '' && tr.dataset.backing !== backing)
      || (kernel !== '' && tr.dataset.kernel !== kernel);
  }
}
function show(td) {
  document.querySelectorAll('td.sel').forEach(e => e.classList.remove('sel'));
  td.classList.add('sel');
  const panel = $('panel');
  panel.replaceChildren();
  const close = document.createElement('button');
  close.textContent = 'close';
  close.onclick = () => { panel.hidden = true; td.classList.remove('sel'); };
  panel.append(close);
  for (const row of cells[+td.dataset.cell]) {
    const c = Object.fromEntries(fields.map((f, i) => [f, text(f, row[i])]));
    const h = document.createElement('h3');
    h.textContent = (c.kernel ? c.kernel + ' ' : '') + c.id;
    const dl = document.createElement('dl');
    for (const [k, v] of Object.entries(c)) {
      if (k === 'id' || k === 'kernel' || v === null || v === '' ||
          (Array.isArray(v) && !v.length)) continue;
      const dt = document.createElement('dt'), dd = document.createElement('dd');
      dt.textContent = k;
      dd.textContent = Array.isArray(v) ? v.join('\\n') : String(v);
      dl.append(dt, dd);
    }
    panel.append(h, dl);
  }
  panel.hidden = false;
}
document.addEventListener('click', e => {
  const td = e.target.closest('td[data-cell]');
  if (td) show(td);
});
document.querySelectorAll('#filters select, #filters input')
  .forEach(e => e.addEventListener('change', apply));
apply();
"""


def script_json(value: object) -> str:
    """JSON that cannot end its <script> element or open a comment inside it."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def select(name: str, label: str, values: list[tuple[str, str]]) -> str:
    options = "".join(f'<option value="{escape(v)}">{escape(t)}</option>' for v, t in values)
    return (f'<label>{escape(label)} <select id="f-{name}"><option value="">all</option>'
            f"{options}</select></label>")


def filters(docs: list[dict], tables: list[grid.Table]) -> str:
    pins = [(t.pin, t.pin) for t in tables]
    backings = grid.order("backing", (c["backing"] for d in docs for c in d["cases"]))
    parts = [select("pin", "pin", pins), select("backing", "backing", [(b, b) for b in backings])]
    if len(docs) > 1:
        labels = grid.kernel_labels(docs)
        parts.append(select("kernel", "kernel", [
            (str(k), f"{labels[k]} {about.kernel(d)}") for k, d in enumerate(docs)]))
    parts += [f'<label class="v-{v}"><input type="checkbox" class="f-verdict" value="{v}" '
              f"checked> {grid.SYMBOLS[v]} {v}</label>" for v in grid.SYMBOLS]
    return f'<div id="filters">{" ".join(parts)}</div>'


def head(docs: list[dict]) -> str:
    env = any(about.environment(d) for d in docs)
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td>{escape(d['kernel'].get('release', '?'))}</td>"
        f"<td>{escape(d['kernel'].get('version', '?'))}</td>"
        f"<td>{escape(d['kernel'].get('machine', '?'))}</td><td>{escape(about.run(d))}</td>"
        f"<td>{escape(about.totals(d))}</td><td>{escape(about.available(d, 'pins'))}<br>"
        f"{escape(about.available(d, 'backings'))}</td>"
        + (f"<td>{escape(about.environment(d))}</td>" if env else "") + "</tr>"
        for label, d in zip(grid.kernel_labels(docs), docs, strict=True))
    return ("<table><tr><th>kernel</th><th>release</th><th>version</th><th>machine</th>"
            "<th>run</th><th>totals</th><th>pins, backings</th>"
            + ("<th>environment</th>" if env else "") + f"</tr>{rows}</table>")


def legend() -> str:
    verdicts = "".join(f'<span class="v-{v}">{grid.SYMBOLS[v]} {v}</span>' for v in grid.SYMBOLS)
    outcomes = ", ".join(f"{c} {escape(o)}" for o, c in grid.OUTCOME_CODES.items())
    return (f'<p class="legend">{verdicts}</p><p>Each cell shows the worst verdict of its checks '
            f"and what they saw: {outcomes}. Column {grid.PIN_COLUMN}: the admission and zeropage "
            "checks; mutation columns: file-to-pin and pin-to-file after that mutation. A blue "
            "frame marks a cell where the kernels differ. Click a cell for its checks.</p>")


def section(table: grid.Table, docs: list[dict], cells: list[list[dict]], strings: Strings) -> str:
    several = len(docs) > 1
    labels = grid.kernel_labels(docs)
    heads = [f"<th>{escape(h)}</th>" for h in (*grid.ROW_DIMENSIONS, *["kernel"] * several)]
    heads += [f'<th class="col"><div>{escape(c)}</div></th>' for c in table.columns]
    out = [f'<section class="pin" data-pin="{escape(table.pin)}"><h2>{escape(table.pin)}</h2>'
           f'<table class="m"><tr>{"".join(heads)}</tr>']
    previous: grid.Row | None = None
    for row in table.rows:
        for k in range(table.kernels):
            labels_html = "".join(
                f'<th class="rep">{escape(v)}</th>' if previous and previous[:i + 1] == row[:i + 1]
                else f"<th>{escape(v)}</th>" for i, v in enumerate(row))
            kernel = f"<th>{escape(labels[k])}</th>" if several else ""
            tds = []
            for column in table.columns:
                cell = table.cell(row, k, column)
                if cell is None:
                    tds.append("<td></td>")
                    continue
                cells.append([strings.case(c, labels[k] * several) for c in cell.cases])
                diff = " diff" if several and table.differs(row, column) else ""
                # As in matrix.md: the pin cell shows the errno, the row's other cells inherit it.
                errno = column == grid.PIN_COLUMN or table.cell(row, k, grid.PIN_COLUMN) is None
                title = "\n".join(
                    f"{c['check']}: {c['verdict']}, {c['outcome'] or '-'}"
                    + (f" {c['errno']}" if c.get("errno") else "") for c in cell.cases)
                verdicts = " ".join(dict.fromkeys(c["verdict"] for c in cell.cases))
                tds.append(f'<td class="v-{escape(cell.verdict)}{diff}" '
                           f'data-cell="{len(cells) - 1}" data-verdicts="{escape(verdicts)}" '
                           f'title="{escape(title)}">{escape(cell.text(grid.SYMBOLS, errno))}</td>')
            out.append(f'<tr data-backing="{escape(row[0])}" data-kernel="{k}">{labels_html}'
                       f"{kernel}{''.join(tds)}</tr>")
            previous = row
    out.append("</table></section>")
    return "\n".join(out)


def render(docs: list[dict]) -> str:
    tables = grid.tables(docs)
    cells: list[list[dict]] = []
    strings = Strings()
    sections = "\n".join(section(t, docs, cells, strings) for t in tables)
    data = {"fields": FIELDS, "interned": INTERNED, "strings": list(strings.index), "cells": cells}
    title = "pinhole matrix: " + ", ".join(about.kernel(d) for d in docs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(title)}</h1>
{"".join(f'<p class="incomplete"><strong>{escape(w)}</strong></p>'
         for w in results.incomplete_lines(docs))}
{head(docs)}
{legend()}
{filters(docs, tables)}
{sections}
<div id="panel" hidden></div>
<script id="cells" type="application/json">{script_json(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""
