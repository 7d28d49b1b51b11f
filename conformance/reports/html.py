"""matrix.html: the matrix as one self-contained page (inline CSS and JS, nothing fetched), a
colour per verdict, each cell's checks in full on click, and filters by pin, backing, verdict
and kernel."""

from __future__ import annotations

import json
from html import escape
from operator import itemgetter

from .. import results
from . import about, findings, grid

# A case as the page stores it: [suffix, duration_ms, record]. Its id is its cell's prefix
# (pin.backing.mapping.access.state) and its suffix (mutation.check), its kernel its row's. The
# record holds what thousands of cases share (verdict, reason, ...), so it is stored once, as
# positions in FIELDS up to its last non-empty one; every text is stored once in "strings".
FIELDS = ("verdict", "reason", "outcome", "expected", "spec", "errno", "detail", "dmesg", "taint")
EMPTY = (None, "", [])
FIELDS_OF = itemgetter(*FIELDS)
SPEC = FIELDS.index("spec")


class Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.records: dict[tuple, int] = {}
        self.seen: dict[tuple, int] = {}  # a record's fields as they are → its position

    def __call__(self, text: str | None) -> int | None:
        return None if text in EMPTY else self.index.setdefault(text, len(self.index))

    def record(self, c: dict) -> int:
        # Thousands of cases share a record: look its fields up before indexing each text.
        try:
            fields = FIELDS_OF(c)
            fields = (*fields[:SPEC], tuple(fields[SPEC]), *fields[SPEC + 1:])
        except KeyError:  # a record without some field (an older pinhole's)
            fields = tuple(tuple(v) if isinstance(v := c.get(f), list) else v for f in FIELDS)
        found = self.seen.get(fields)
        if found is None:
            found = self.seen[fields] = self._record(c)
        return found

    def _record(self, c: dict) -> int:
        values = [[self(s) for s in c.get(f) or []] if f == "spec" else self(c.get(f))
                  for f in FIELDS]
        while values and values[-1] in EMPTY:
            values.pop()
        key = tuple(tuple(v) if isinstance(v, list) else v for v in values)
        return self.records.setdefault(key, len(self.records))

    def cell(self, cases: list[dict]) -> list:
        return [self(split_id(cases[0]["id"])[0]), *([self(split_id(c["id"])[1]),
                                                      round((c.get("duration_s") or 0) * 1000),
                                                      self.record(c)] for c in cases)]


def split_id(case_id: str) -> tuple[str, str]:
    """A case id as its cell's prefix (pin.backing.mapping.access.state) and its suffix
    (mutation.check); an id of two parts or fewer is all suffix."""
    parts = case_id.rsplit(".", 2)
    return (parts[0], f"{parts[1]}.{parts[2]}") if len(parts) == 3 else ("", case_id)


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
const strings = data.strings, fields = data.fields;
const $ = id => document.getElementById(id);
// Each matrix cell's checks, by the order of the coloured cells on the page.
const tds = [...document.querySelectorAll('table.m td[class]')];
const records = data.records.map(row => Object.fromEntries(fields.map((f, i) => {
  const v = row[i];
  return [f, f === 'spec' ? (v || []).map(j => strings[j])
    : v === undefined || v === null ? null : strings[v]];
})));
const cases = data.cells.map(([prefix, ...rows], i) => rows.map(([suffix, ms, r]) => {
  const c = {...records[r], suffix: strings[suffix], duration_ms: ms};
  c.id = strings[prefix] + '.' + c.suffix;
  c.kernel = data.kernels[+tds[i].closest('tr').dataset.kernel] || null;
  return c;
}));
const byId = new Map();
cases.forEach((cs, i) => cs.forEach(c => byId.set(c.id + (c.kernel ? ' ' + c.kernel : ''), i)));
tds.forEach((td, i) => { td.dataset.cell = i; });
function apply() {
  const pin = $('f-pin').value, backing = $('f-backing').value;
  const kernel = $('f-kernel') ? $('f-kernel').value : '';
  const wanted = new Set([...document.querySelectorAll('.f-verdict:checked')].map(e => e.value));
  for (const sec of document.querySelectorAll('section.pin')) {
    let rows = 0;
    for (const tr of sec.querySelectorAll('tr[data-backing]')) {
      let any = false;
      for (const td of tr.querySelectorAll('td[data-cell]')) {
        const hit = cases[+td.dataset.cell].some(c => wanted.has(c.verdict));
        td.classList.toggle('dim', !hit);
        any = any || hit;
      }
      tr.hidden = !any || (backing !== '' && tr.dataset.backing !== backing)
        || (kernel !== '' && tr.dataset.kernel !== kernel);
      rows += !tr.hidden;
    }
    // A pin with nothing left to show goes away whole, heading and column heads included.
    sec.hidden = (pin !== '' && sec.dataset.pin !== pin) || rows === 0;
    relabel(sec);
  }
  $('nothing').hidden = !!document.querySelector('section.pin:not([hidden])');
}
// A row label repeated from the row above is grey; the row above is the one left visible.
function relabel(sec) {
  let above = [];
  for (const tr of sec.querySelectorAll('tr[data-backing]:not([hidden])')) {
    const ths = [...tr.querySelectorAll('th')], now = ths.map(th => th.textContent);
    ths.forEach((th, i) => th.classList.toggle('rep',
      i < now.length - 1 && now.slice(0, i + 1).every((v, j) => v === above[j])));
    above = now;
  }
}
function only(verdicts) {
  document.querySelectorAll('.f-verdict').forEach(e => { e.checked = verdicts.includes(e.value); });
  apply();
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
  for (const c of cases[+td.dataset.cell]) {
    const h = document.createElement('h3');
    h.textContent = (c.kernel ? c.kernel + ' ' : '') + c.id;
    const dl = document.createElement('dl');
    for (const k of ['verdict', 'expected', 'outcome', 'errno', 'detail', 'reason', 'spec',
                     'dmesg', 'taint', 'duration_ms']) {
      const v = c[k];
      if (v === null || v === '' || (Array.isArray(v) && !v.length)) continue;
      const dt = document.createElement('dt'), dd = document.createElement('dd');
      dt.textContent = k;
      dd.textContent = Array.isArray(v) ? v.join('\\n') : String(v);
      dl.append(dt, dd);
    }
    panel.append(h, dl);
  }
  panel.hidden = false;
}
function reveal(key) {
  const td = tds[byId.get(key)];
  if (!td) return;
  if (td.closest('[hidden]')) only([...new Set([...document.querySelectorAll(
    '.f-verdict:checked')].map(e => e.value).concat([cases[+td.dataset.cell][0].verdict]))]);
  td.scrollIntoView({block: 'center'});
  show(td);
}
document.addEventListener('click', e => {
  const td = e.target.closest('td[data-cell]');
  if (td) show(td);
  const a = e.target.closest('a[data-case]');
  if (a) { e.preventDefault(); reveal(a.dataset.case); }
});
// The checks of a cell as its tooltip, made when first hovered.
document.addEventListener('mouseover', e => {
  const td = e.target.closest('td[data-cell]');
  if (td && !td.title)
    td.title = cases[+td.dataset.cell].map(c => `${c.suffix.split('.').pop()}: ${c.verdict}, `
      + `${c.outcome || '-'}${c.errno ? ' ' + c.errno : ''}`).join('\\n');
});
document.querySelectorAll('#filters select, #filters input')
  .forEach(e => e.addEventListener('change', apply));
$('only-failures').onclick = () => only(['fail', 'error']);
$('everything').onclick = () => only(Object.keys(data.symbols));
// matrix.html#failures opens filtered to failures; #verdict=fail,xfail to those verdicts;
// #case=ID (or #case=ID k2) at that case's checks, so a mail can point at one.
function fromHash() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash === 'failures') only(['fail', 'error']);
  else if (hash.startsWith('verdict=')) only(hash.slice(8).split(','));
  else apply();
  if (hash.startsWith('case=')) reveal(hash.slice(5));
}
window.addEventListener('hashchange', fromHash);
fromHash();
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
    parts += ['<button id="only-failures">only failures</button>',
              '<button id="everything">everything</button>']
    return f'<div id="filters">{" ".join(parts)}</div>'


def folded(text: str) -> str:
    """What is available, with the long reasons for what is not folded away: the head stays
    short and the matrix near the top."""
    shown, _, rest = text.partition("; ")
    if not rest:
        return f"<div>{escape(shown)}</div>"
    return f"<details><summary>{escape(shown)}; ...</summary>{escape(rest)}</details>"


def head(docs: list[dict]) -> str:
    env = any(about.environment(d) for d in docs)
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td>{escape(d['kernel'].get('release', '?'))}</td>"
        f"<td>{escape(d['kernel'].get('version', '?'))}</td>"
        f"<td>{escape(d['kernel'].get('machine', '?'))}</td><td>{escape(about.run(d))}</td>"
        f"<td>{escape(about.totals(d))}</td><td>{folded(about.available(d, 'pins'))}"
        f"{folded(about.available(d, 'backings'))}</td>"
        + (f"<td>{folded(about.environment(d))}</td>" if env else "") + "</tr>"
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
            "frame marks a cell where the kernels differ. Click a cell for its checks; "
            '<a href="#failures">#failures</a> in the address shows only what failed, '
            "#case=ID opens that case's checks.</p>")


def section(table: grid.Table, docs: list[dict], cells: list[list], strings: Strings) -> str:
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
                # Only a cell with checks has a class: the page finds its checks by that order.
                cells.append(strings.cell(cell.cases))
                diff = " diff" if several and table.differs(row, column) else ""
                # As in matrix.md: the pin cell shows the errno, the row's other cells inherit it.
                errno = column == grid.PIN_COLUMN or table.cell(row, k, grid.PIN_COLUMN) is None
                tds.append(f'<td class="v-{escape(cell.verdict)}{diff}">'
                           f"{escape(cell.text(grid.SYMBOLS, errno))}</td>")
            out.append(f'<tr data-backing="{escape(row[0])}" data-kernel="{k}">{labels_html}'
                       f"{kernel}{''.join(tds)}</tr>")
            previous = row
    out.append("</table></section>")
    return "\n".join(out)


def case_link(k: int, case: dict, docs: list[dict]) -> str:
    label = grid.kernel_labels(docs)[k] if len(docs) > 1 else ""
    key = case["id"] + (f" {label}" if label else "")
    return f'<a href="#" data-case="{escape(key)}">{escape(key)}</a>'


def findings_block(docs: list[dict]) -> str:
    """The failures by spec rule and the known limitations, each with a link to an example."""
    parts = []
    for title, groups in (("Failures by spec rule", findings.failures(docs)),
                          ("Known kernel limitations that showed (xfail)",
                           findings.limitations(docs))):
        if not groups:
            continue
        items = "".join(
            f'<li title="{escape(findings.rule_text(g.example))}"><b>{escape(g.label)}</b>, '
            f"{findings.plural(len(g.cases), 'case')}: {escape(g.what.rstrip('.'))}; e.g. "
            f"{case_link(*g.cases[0], docs)}</li>" for g in groups)
        parts.append(f"<h2>{escape(title)}</h2><ul>{items}</ul>")
    return "".join(parts) or "<p>No failures.</p>"


def render(docs: list[dict]) -> str:
    tables = grid.tables(docs)
    cells: list[list] = []
    strings = Strings()
    sections = "\n".join(section(t, docs, cells, strings) for t in tables)
    data = {"fields": FIELDS, "symbols": grid.SYMBOLS, "strings": list(strings.index),
            "records": list(strings.records),
            "kernels": grid.kernel_labels(docs) if len(docs) > 1 else [], "cells": cells}
    title = "pinhole matrix: " + ", ".join(about.kernel(d) for d in docs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(title)}</h1>
{"".join(f'<p class="incomplete"><strong>{escape(w)}</strong></p>'
         for w in results.incomplete_lines(docs))}
{head(docs)}
{findings_block(docs)}
{legend()}
{filters(docs, tables)}
<p id="nothing" hidden>No cell has the verdicts chosen.</p>
{sections}
<div id="panel" hidden></div>
<script id="cells" type="application/json">{script_json(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""
