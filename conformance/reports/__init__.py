"""Reports from results.json: matrix.md and matrix.html for people, results.ktap and kcidb.json
for tools, a regression diff, and a short summary for the end of a run."""

from __future__ import annotations

import json
from pathlib import Path

from .. import results
from ..results import write_atomic as write
from . import about, diff, kcidb, ktap, matrix_html, matrix_md, merge

__all__ = ["diff", "merge", "summary", "write_all"]


def write_all(out: Path, docs: list[dict]) -> list[Path]:
    """matrix.md, matrix.html, results.ktap (one subtest per kernel when several) and a
    validated kcidb.json (one checkout and build per kernel) in out."""
    out.mkdir(parents=True, exist_ok=True)
    sub = kcidb.validate(kcidb.build_all(docs))
    return [
        write(out / "matrix.md", matrix_md.render(docs)),
        write(out / "matrix.html", matrix_html.render(docs)),
        write(out / "results.ktap", ktap.render(docs[0]) if len(docs) == 1
              else ktap.render_many(docs)),
        write(out / "kcidb.json", json.dumps(sub, indent=1) + "\n"),
    ]


def summary(docs: list[dict]) -> str:
    """What failed and why, per kernel."""
    lines = []
    for doc in docs:
        lines.append(f"{about.kernel(doc)}:" if len(docs) > 1 else about.kernel(doc))
        lines += [("  " if len(docs) > 1 else "") + line for line in results.summary(doc["cases"])]
        if doc.get("cut_off"):
            lines.append(f"cut off, running when the run died: {', '.join(doc['cut_off'])}")
    return "\n".join(lines) + "\n"
