"""Reports from results.json.gz: summary.md, matrix.md and matrix.html for people, results.ktap
and kcidb.json.gz for tools, a regression diff, and the summary at the end of a run."""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

from ..results import collector_paused
from ..results import write_atomic as write

__all__ = ["FILES", "diff", "link_all", "load_baseline", "merge", "prepare", "summary",
           "write_all"]
# Imported on first use: a run's processes (a VM's under TCG, for seconds) need only terminal.
SUBMODULES = frozenset(m.name for m in pkgutil.iter_modules(__path__))


def __getattr__(name: str) -> object:
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# What write_all() writes, in its order: what a reused --out directory must clear.
FILES = ("summary.md", "matrix.md", "matrix.html", "results.ktap", "junit.xml", "kcidb.json.gz")


def write_all(out: Path, docs: list[dict], baseline: list[dict] | None = None) -> list[Path]:
    """FILES in out: summary.md (with what changed since baseline, when given), matrix.md,
    matrix.html, results.ktap (one subtest per kernel when several), junit.xml and a validated
    kcidb.json.gz (one checkout and build per kernel). The two matrices, the largest work,
    are written by two forked children while this process writes the rest."""
    from . import html, junit, kcidb, ktap, mail, markdown

    out.mkdir(parents=True, exist_ok=True)
    # The reports make millions of objects and no garbage cycles: the collector's passes
    # over them were 0.2 s of a host run's 1.1 s of reports (its children inherit the pause).
    with collector_paused():
        children = {forked(out / "matrix.md", lambda: markdown.render(docs)): "matrix.md"}
        try:
            children[forked(out / "matrix.html", lambda: html.render(docs))] = "matrix.html"
            sub = kcidb.validate(kcidb.build_all(docs))
            written = [
                write(out / "summary.md", mail.render(docs, baseline)),
                write(out / "results.ktap", ktap.render(docs[0]) if len(docs) == 1
                      else ktap.render_many(docs)),
                write(out / "junit.xml", junit.render(docs)),
                write(out / "kcidb.json.gz", kcidb.dump(sub)),
            ]
        finally:
            failed = [name for pid, name in children.items()
                      if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]
    if failed:
        raise RuntimeError(f"writing {' and '.join(failed)} failed (the traceback is above)")
    # A plain kcidb.json of an older run in the same directory would say something else.
    (out / "kcidb.json").unlink(missing_ok=True)
    return [written[0], out / "matrix.md", out / "matrix.html", *written[1:]]


def prepare() -> None:
    """Import what write_all() uses (0.08 s), for a caller with time to spare: pinhole run does
    while pytest runs, instead of after it. A module missing is write_all()'s to report."""
    with contextlib.suppress(ImportError):
        from . import html, junit, kcidb, ktap, mail, markdown  # noqa: F401

        kcidb.schema()


def link_all(out: Path, kdir: Path, docs: list[dict],
             baseline: list[dict] | None = None) -> list[Path]:
    """FILES in out for a one-kernel matrix: hard links to what write_all() wrote in the
    kernel's own directory, byte for byte the same; only summary.md is written again when it
    has a baseline to compare with."""
    from . import mail

    paths = []
    for name in FILES:
        path = out / name
        path.unlink(missing_ok=True)
        if name == "summary.md" and baseline:
            write(path, mail.render(docs, baseline))
        else:
            try:
                os.link(kdir / name, path)
            except OSError:  # a filesystem without hard links (vfat, some FUSE): copy
                shutil.copyfile(kdir / name, path)
        paths.append(path)
    (out / "kcidb.json").unlink(missing_ok=True)
    return paths


def forked(path: Path, render: Callable[[], str]) -> int:
    """Write render()'s text to path in a forked child; returns the child's pid."""
    child = os.fork()
    if child == 0:
        code = 1
        try:
            write(path, render())
            code = 0
        except BaseException:  # noqa: BLE001 - shown here, reported by the parent
            traceback.print_exc()
        finally:
            os._exit(code)
    return child


def load_baseline(path: Path) -> list[dict]:
    """--baseline DIR: a run's directory (or its results.json.gz), or a `pinhole matrix` output
    whose kernels sit in subdirectories. Raises ValueError or OSError when DIR holds no run."""
    from . import merge

    return sorted(merge.load_many([Path(path)]), key=lambda d: d["started"])


def summary(docs: list[dict]) -> str:
    """What failed and why, the skips by reason, and the totals: at most 30 lines."""
    from . import terminal

    return "\n".join(terminal.final(docs)) + "\n"

