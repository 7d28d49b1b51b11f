"""results.json.gz: the run's record, and what follows from it (exit code, summary)."""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import operator
import os
import stat
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import fields
from pathlib import Path

from . import framing, ports
from .model import VERDICTS, Case, Result

SCHEMA = "pinhole/2"
# Gzipped: only tools read it (pinhole report, diff, jq after zcat): Debian 6.12's whole run
# took 6.3 MB plain, 0.24 MB in 43 ms compressed. Runs of pinhole before 2026-11-28 wrote it
# plain; a run's directory may hold either, and load() reads both.
FILE = "results.json.gz"
PLAIN = "results.json"
# pinhole/1 stored every record in full; load() reads both.
READABLE = ("pinhole/1", SCHEMA)

# kselftest's codes for a run; 2 is a usage error (like argparse) and 125 means the
# harness itself could not run, so neither is mistaken for a kernel verdict.
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_XPASS, EXIT_SKIP, EXIT_HARNESS = 0, 1, 2, 3, 4, 125


# Positive controls are recorded like cases, under ids that are not case ids (7 parts) but are
# valid KCIDB paths; their pin is CONTROL so every report can group them.
CONTROL = "control"
CONTROL_FIELDS = ("backing", "mapping", "access", "state", "mutation", "check")


def is_control(case_id: str) -> bool:
    return case_id.startswith(CONTROL + ".")


def control(control_id: str, verdict: str, reason: str, detail: str = "",
            duration_s: float = 0.0) -> dict:
    """The record of a positive control: control.<detector>.<variant>."""
    _, detector, variant = control_id.split(".", 2)
    return {"id": control_id, "pin": CONTROL, "backing": detector, "mapping": variant,
            "access": "-", "state": "-", "mutation": CONTROL, "check": CONTROL,
            "verdict": verdict, "outcome": None, "expected": None, "reason": reason,
            "errno": None, "detail": detail, "dmesg": "", "taint": "", "spec": [],
            "duration_s": duration_s}


def totals(cases: list[dict]) -> dict[str, int]:
    counts = Counter(c["verdict"] for c in cases)
    return {v: counts.get(v, 0) for v in VERDICTS}


def exit_code(cases: list[dict]) -> int:
    t = totals(cases)
    if not cases:
        return EXIT_HARNESS
    if t["fail"] or t["error"]:
        return EXIT_FAIL
    if t["xpass"]:
        return EXIT_XPASS
    # Passing controls do not make a run whose every case skipped a pass.
    real = [c for c in cases if c.get("pin") != CONTROL] or cases
    if all(c["verdict"] == "skip" for c in real):
        return EXIT_SKIP
    return EXIT_PASS


def run_exit(doc: dict) -> int:
    """The exit code of a whole run: a run that did not finish is never a pass."""
    if not doc["cases"]:
        return EXIT_HARNESS
    return EXIT_FAIL if doc.get("incomplete") else exit_code(doc["cases"])


def incomplete_lines(docs: list[dict]) -> list[str]:
    """One warning per run that did not finish, for the top of every report."""
    several = len(docs) > 1
    return [f"INCOMPLETE{' ' + d['kernel'].get('release', '?') if several else ''}: "
            f"{d['incomplete']}" for d in docs if d.get("incomplete")]


def document(cases: list[dict], kernel: dict, probe: dict, started: float, finished: float) -> dict:
    return {
        "schema": SCHEMA,
        "kernel": kernel,
        "probe": probe,
        "started": started,
        "finished": finished,
        "totals": totals(cases),
        "cases": sorted(cases, key=lambda c: c["id"]),
    }


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Replace path in one step, so a reader or a killed run never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


# A record's fields after its id, with the value a stored record leaves out.
DEFAULTS = {"verdict": None, "outcome": None, "expected": None, "reason": "", "errno": None,
            "detail": "", "dmesg": "", "taint": "", "spec": [], "duration_s": 0.0}
DIMENSIONS = [f.name for f in fields(Case)]
# What a known skip's record leaves at DEFAULTS: pack() stores such a record by its id and
# reason alone, and tells it by these fields without making its stored form (23,400 on a host).
_UNSET = operator.itemgetter(*(k for k in DEFAULTS if k not in ("verdict", "reason")))
_UNSET_VALUES = _UNSET(DEFAULTS)
_FIELDS = {"id", *DIMENSIONS, *DEFAULTS}


def dimensions_of(case_id: str) -> dict[str, str]:
    parts = case_id.split(".")
    if len(parts) != len(DIMENSIONS):
        raise ValueError(f"not a case id: {case_id}")
    return dict(zip(DIMENSIONS, parts, strict=True))


def skip_record(case: Case | str, reason: str) -> dict:
    """The record of a case (or case id) known to skip before anything runs (its pin or
    backing missing)."""
    if isinstance(case, str):
        case_id, dims = case, dimensions_of(case)
    else:
        case_id, dims = case.id, case.dimensions()
    return {"id": case_id, **dims, **DEFAULTS, "verdict": "skip", "reason": reason, "spec": []}


def pack(doc: dict) -> dict:
    """results.json as stored, each thing written once: the spec entries' names and the
    details once in `strings` (records hold their index), a rule's reason once in `rules`,
    cases known to skip once per reason in `skipped` (by cell, with their checks), no field
    that is empty or that the case id already says, `expected` only where it is not the
    outcome seen. load() gives back every record in full."""
    strings: dict[str, int] = {}
    rules: dict[str, str] = {}
    skipped: dict[str, dict[str, str]] = {}  # reason → cell → its checks, comma-joined
    cases = []

    def index(text: str) -> int:
        return strings.setdefault(text, len(strings))

    for c in doc["cases"]:
        control_ = c["pin"] == CONTROL
        bare = (c["verdict"] == "skip" and c["reason"] and not control_ and c.keys() == _FIELDS
                and _UNSET(c) == _UNSET_VALUES)
        rec = c if bare else {k: v for k, v in c.items() if k == "id" or (
            v not in ("", None, [], 0.0) and (control_ or k not in DIMENSIONS))}
        if bare or rec["verdict"] == "skip" and rec.keys() <= {"id", "verdict", "reason"}:
            cell, check = rec["id"].rsplit(".", 1)
            cells_ = skipped.setdefault(rec["reason"], {})
            cells_[cell] = f"{cells_[cell]},{check}" if cell in cells_ else check
            continue
        if c["spec"] and rules.setdefault(c["spec"][-1], c["reason"]) == c["reason"]:
            rec.pop("reason", None)
        if "expected" in rec and rec["expected"] == c["outcome"]:
            del rec["expected"]
        if "spec" in rec:
            rec["spec"] = [index(w) for w in rec["spec"]]
        if "detail" in rec:
            rec["detail"] = index(rec["detail"])
        if "duration_s" in rec:
            rec["duration_s"] = round(rec["duration_s"], 4)
        cases.append(rec)
    body = {k: v for k, v in doc.items() if k != "cases"}
    return {**body, "schema": SCHEMA, "strings": list(strings), "rules": rules,
            "skipped": [{"reason": r, "cells": c} for r, c in skipped.items()], "cases": cases}


def unpack(stored: dict) -> dict:
    """Every record in full, in id order, as the run made them."""
    if stored.get("schema") == "pinhole/1":
        return stored
    rules, strings = stored.get("rules", {}), stored.get("strings", [])
    cases = []
    for rec in stored["cases"]:
        dims = {} if rec.get("pin") == CONTROL else dimensions_of(rec["id"])
        full = {"id": rec["id"], **dims, **DEFAULTS, **{k: v for k, v in rec.items()
                                                        if k != "id"}}
        full["spec"] = [strings[i] for i in full["spec"]]
        if isinstance(full["detail"], int):
            full["detail"] = strings[full["detail"]]
        if "expected" not in rec and full["spec"]:
            full["expected"] = full["outcome"]
        if "reason" not in rec and full["spec"]:
            full["reason"] = rules.get(full["spec"][-1], "")
        cases.append(full)
    for group in stored.get("skipped", []):
        for cell, checks in group["cells"].items():
            # A cell's checks differ in their check alone: its record made once, then copied.
            first, *rest = checks.split(",")
            cases.append(made := skip_record(f"{cell}.{first}", group["reason"]))
            cases += [{**made, "id": f"{cell}.{check}", "check": check, "spec": []}
                      for check in rest]
    body = {k: v for k, v in stored.items() if k not in ("strings", "rules", "skipped", "cases")}
    return {**body, "cases": sorted(cases, key=operator.itemgetter("id"))}


def write(out: Path, doc: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(pack(doc), separators=(",", ":")) + "\n"
    path = write_atomic(out / FILE, gzip.compress(text.encode(), compresslevel=6, mtime=0))
    (out / PLAIN).unlink(missing_ok=True)  # an older pinhole's record of an earlier run
    return path


def record_in(run: Path) -> Path:
    """A run directory's record: results.json.gz, or an older pinhole's results.json."""
    path = run / FILE
    return path if path.exists() or not (run / PLAIN).exists() else run / PLAIN


PROGRESS = "progress.jsonl"
# A --pinhole-done line (pinhole matrix after a panic): "panicked GROUP CELL" leaves the rest of
# the group out; any other line is a case id already recorded.
PANICKED = "panicked"
SYNC_ENV = "PINHOLE_SYNC_PROGRESS"
# A pipe's fd on which `pinhole run` hears from pytest's controller that the record is
# written, to read it while pytest ends: for that process alone (ready_fd() takes it).
READY_ENV = "PINHOLE_READY_FD"


def ready_fd() -> int | None:
    """READY_ENV's fd, taken out of the environment: the processes this one starts (xdist's
    workers) inherit the environment but not the fd."""
    value = os.environ.pop(READY_ENV, None)
    try:
        fd = int(value) if value is not None else None
        # Never anything but a pipe: a stray value must not write into stdout or a file.
        return fd if fd is not None and stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (ValueError, OSError):
        return None


def say_written(fd: int | None) -> None:
    """Tell `pinhole run` the record is written."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, b"\n")
            os.close(fd)


class Progress:
    """progress.jsonl: a line as each case begins and its record as it ends, written at once,
    so a run that dies (a killed worker, a kernel panic) keeps what finished and names what
    was running. The controller starts the file (kernel and start time); the process that
    runs a cell appends its begin and records itself in whole lines to an O_APPEND file, so
    workers' lines never interleave (framing.py; in a pinhole VM, to a port: ports.py)."""

    def __init__(self, out: Path, header: dict | None = None) -> None:
        """With a header: start the file for a run. Without: append to the run's file."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        if header is not None:
            out.mkdir(parents=True, exist_ok=True)
            flags |= os.O_CREAT | os.O_TRUNC
        self.path = out / PROGRESS
        self._fd = os.open(self.path, flags, 0o644)
        # In a pinhole VM the lines go to the host through a port of this process's: port
        # is its node, or None (the file itself).
        claimed = ports.claim()
        self._out, self.port = claimed or (self._fd, None)
        self._appender = framing.Appender(self._out)
        # Through 9p with a guest cache (guest.progress_needs_sync()), a panic would lose what
        # is not synced; a port's write is on the host already.
        self._sync = bool(os.environ.get(SYNC_ENV)) and not self.port
        if header is not None:
            self._write({"run": header})

    def _write(self, *entries: dict) -> None:
        data = "".join(json.dumps(e) + "\n" for e in entries).encode()
        self._appender.write(data)
        if self._sync:
            os.fsync(self._fd)

    def planned(self, count: int) -> None:
        self._write({"planned": count})

    def begin(self, item_id: str, case_ids: list[str], *finished: dict,
              waiting: list[str] | None = None) -> None:
        """A cell (or control) starts: the ids of every case it will record, and the process
        running it, after the records of the cell before it and the ids of its cases that wait
        for their group's remount (not running, so not cut off should the run die now), in
        as few writes as framing.py allows (each is a 9p round trip in a VM)."""
        self._write(*({"case": c} for c in finished), *([{"waiting": waiting}] if waiting else []),
                    {"begin": item_id, "cases": case_ids, "pid": os.getpid()})

    def record(self, *cases: dict) -> None:
        self._write(*({"case": c} for c in cases))

    def skipped(self, cases: Iterable[tuple[str, str]]) -> None:
        """The cases known to skip, as (id, reason): a line of ids a reason, for skip_record()
        to make their records from (23,400 whole records were 7 MB and 0.15 s of a host run's
        start)."""
        by_reason: dict[str, list[str]] = {}
        for case_id, reason in cases:
            by_reason.setdefault(reason, []).append(case_id)
        self._write(*({"skipped": reason, "ids": ids} for reason, ids in by_reason.items()))

    def close(self) -> None:
        if self._fd >= 0:
            self._appender.close()
            if self.port:
                os.close(self._out)
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def recover(out: Path) -> tuple[list[dict], list[str]]:
    """From progress.jsonl: the finished cases, and the ids that began but never finished."""
    _, cases, begun = read_progress(out)
    return cases, begun


def cut_off_record(case_id: str, reason: str, dmesg: str = "") -> dict:
    """A case that was running when its run died: an error (a control's or a case's)."""
    if is_control(case_id):
        return control(case_id, "error", reason) | {"dmesg": dmesg}
    return Result(Case.from_id(case_id), "error", reason=reason, dmesg=dmesg).as_dict()


def read_progress(out: Path) -> tuple[dict, list[dict], list[str]]:
    """progress.jsonl as (its run header, finished cases, ids cut off); the header holds
    "planned" once the cases are collected."""
    header, cases, begun = _scan(out)
    return header, list(cases.values()), [i for i in begun if i not in cases]


def running_pids(out: Path) -> dict[str, int | None]:
    """The process that began each case cut off in progress.jsonl (None: a line without it)."""
    _, cases, begun = _scan(out)
    return {i: pid for i, pid in begun.items() if i not in cases}


def _scan(out: Path) -> tuple[dict, dict[str, dict], dict[str, int | None]]:
    header: dict = {}
    cases: dict[str, dict] = {}
    begun: dict[str, int | None] = {}  # in the order they last began, with their process
    try:
        lines = (out / PROGRESS).read_text().splitlines()
    except OSError:
        return {}, {}, {}
    for entry in framing.entries(lines):
        if "begin" in entry:
            for case_id in entry.get("cases", [entry["begin"]]):
                begun.pop(case_id, None)
                begun[case_id] = entry.get("pid")
        elif "waiting" in entry:
            for case_id in entry["waiting"]:
                begun.pop(case_id, None)
        elif "case" in entry:
            cases[entry["case"]["id"]] = entry["case"]
        elif "skipped" in entry:
            cases.update((i, skip_record(i, entry["skipped"])) for i in entry["ids"])
        elif "run" in entry:
            header = entry["run"]
        elif "planned" in entry:
            header["planned"] = entry["planned"]
    return header, cases, begun


def salvage(out: Path) -> dict:
    """The document of a run that died before writing results.json: what finished, plus
    the cases it was running, named in cut_off."""
    header, cases, cut_off = read_progress(out)
    if not header:
        raise ValueError(f"{out}: no {FILE} and no progress.jsonl of a pinhole run")
    finished = max((header["started"], out.joinpath(PROGRESS).stat().st_mtime))
    why = "the run died (killed, or the machine stopped) while this case ran"
    records = cases + [cut_off_record(i, why) for i in cut_off]
    doc = document(records, header["kernel"], {}, header["started"], finished)
    doc["cut_off"] = cut_off
    if header.get("planned"):
        doc["planned"] = header["planned"]
    doc["incomplete"] = incomplete_text("the run died before it finished", len(cases),
                                        header.get("planned"), cut_off)
    return doc


def incomplete_text(what: str, done: int, planned: int | None, cut_off: list[str]) -> str:
    of = f" of {planned}" if planned else ""
    running = f"; cut off while running: {', '.join(cut_off)}" if cut_off else ""
    return f"{what}: {done}{of} cases finished{running}"


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a record or its reports are made: millions of
    objects and almost no cycles, which its passes only walk."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def load(path: Path) -> dict:
    """A record, gzipped or plain (told by its first bytes, not its name)."""
    data = path.read_bytes()
    with collector_paused():  # a host run's record: 0.125 s to read, not 0.15-0.16
        try:
            doc = json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        except (EOFError, zlib.error) as e:  # cut short or damaged: as JSON's errors say
            raise ValueError(f"{path}: not a whole gzip file ({e})") from None
        if doc.get("schema") not in READABLE:
            raise ValueError(f"{path}: not a pinhole results file "
                             f"(schema {doc.get('schema')!r})")
        return unpack(doc)


def summary(cases: list[dict], limit: int = 20) -> list[str]:
    """What failed and why, one line each, for the end of a run."""
    t = totals(cases)
    lines = [" ".join(f"{k}:{v}" for k, v in t.items())]
    bad = [c for c in cases if c["verdict"] in ("fail", "error", "xpass")]
    for c in bad[:limit]:
        lines.append(f"{c['verdict'].upper():5} {c['id']}: {c['reason'][:300]}")
    if len(bad) > limit:
        lines.append(f"... and {len(bad) - limit} more in {FILE}")
    return lines
