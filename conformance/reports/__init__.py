"""Reports from results.json: matrix.md and matrix.html for people, results.ktap and kcidb.json
for tools, a regression diff, and a short summary for the end of a run."""

from __future__ import annotations

import json
from pathlib import Path

from .. import results
from ..results import write_atomic as write
from . import about, diff, html, kcidb, ktap, markdown, merge

__all__ = ["diff", "merge", "summary", "write_all"]


def write_all(out: Path, docs: list[dict]) -> list[Path]:
    """matrix.md, matrix.html, results.ktap (one subtest per kernel when several) and a
    validated kcidb.json (one checkout and build per kernel) in out."""
    out.mkdir(parents=True, exist_ok=True)
    sub = kcidb.validate(kcidb.build_all(docs))
    return [
        write(out / "matrix.md", markdown.render(docs)),
        write(out / "matrix.html", html.render(docs)),
        write(out / "results.ktap", ktap.render(docs[0]) if len(docs) == 1
              else ktap.render_many(docs)),
        write(out / "kcidb.json", json.dumps(sub, indent=1) + "\n"),
    ]


def summary(docs: list[dict]) -> str:
    """What failed and why, per kernel."""
    lines: list[str] = []
    for doc in docs:
        lines.append(f"{about.kernel(doc)}:" if len(docs) > 1 else about.kernel(doc))
        indent = "  " if len(docs) > 1 else ""
        ours = results.summary(doc["cases"]) + results.incomplete_lines([doc])
        lines += [indent + line for line in ours]
    return "\n".join(lines) + "\n"
