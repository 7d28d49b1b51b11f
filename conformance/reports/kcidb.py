"""kcidb.json.gz: a run as a KCIDB v5 submission (kcidb-io's schema), one checkout and build per
kernel and one test per case, its path the case id."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from . import about
from .findings import spec_name

# The newest v5 minor kcidb-io 141 validates (kcidb_io.schema.LATEST is v5.3).
VERSION = {"major": 5, "minor": 3}
LOG_EXCERPT_MAX = 16384
# KCIDB has no XFAIL or XPASS, and its status judges the kernel: an xfail is the kernel behaving
# as the spec says it does (KTAP prints it "ok # XFAIL"), so PASS; FAIL would pin every build's
# summary status at FAIL for known limitations. An xpass is the kernel doing better, so PASS.
# misc.verdict keeps pinhole's own word for both.
STATUS = {"pass": "PASS", "fail": "FAIL", "xfail": "PASS", "xpass": "PASS", "skip": "SKIP",
          "error": "ERROR"}
# The case's fields kept in a test's misc, beside the names of the spec entries that decided it.
MISC = ("verdict", "outcome", "expected", "errno", "taint")


def unique(doc: dict) -> str:
    """Stable across re-renders of one run, distinct between runs and kernels."""
    k = doc["kernel"]
    key = "\0".join((k.get("release", ""), k.get("version", ""), k.get("machine", ""),
                     repr(doc["started"])))
    return f"{k.get('release', 'unknown')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def kept(value: object) -> bool:
    return value not in (None, "", [], {})


def prune(value: object) -> object:
    """KCIDB allows no nulls: drop None (and empty strings, lists and dicts) at every depth."""
    if isinstance(value, dict):
        pruned = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if kept(v)}
    if isinstance(value, list):
        return [v for v in map(prune, value) if kept(v)]
    return value


def log_excerpt(case: dict) -> str:
    parts = [case.get("reason"), case.get("detail"), case.get("dmesg")]
    text = "\n".join(p for p in parts if p).replace("\0", "")
    data = text.encode()
    # The schema counts characters; cutting the UTF-8 bytes keeps it under 16 KiB either way.
    return data[:LOG_EXCERPT_MAX].decode(errors="ignore") if len(data) > LOG_EXCERPT_MAX else text


def test(case: dict, build_id: str, origin: str) -> dict:
    """One case. The kernel, machine and start time are the build's, not repeated per test; a
    log excerpt only where something went wrong (a pass's reason is the spec's, in results)."""
    verdict = case["verdict"]
    # Built field by field, only the fields that are set: prune() walking every test, then a
    # filter over every field, were most of a full run's kcidb cost.
    record = {
        "build_id": build_id,
        "id": f"{build_id}.{case['id']}",
        "origin": origin,
        "path": case["id"],
        "status": STATUS.get(verdict, "ERROR"),
        "comment": (f"{verdict}: {case.get('outcome') or '-'}"
                    + (f" {case['errno']}" if case.get("errno") else "")
                    + (f": {case['reason'][:200]}" if verdict == "skip" else "")),
    }
    if verdict not in ("pass", "skip") and (excerpt := log_excerpt(case)):
        record["log_excerpt"] = excerpt
    if case.get("duration_s"):
        record["duration"] = round(case["duration_s"], 3)
    if found := misc(case):
        record["misc"] = found
    return record


def misc(case: dict) -> dict:
    """pinhole's own words for a case: its fields are strings, so no prune() walk."""
    found = {f: case[f] for f in MISC if kept(case.get(f))}
    spec = [spec_name(s) for s in case.get("spec") or ()]
    return {**found, "spec": spec} if spec else found


def build(doc: dict, origin: str = "pinhole") -> dict:
    return build_all([doc], origin)


def build_all(docs: list[dict], origin: str = "pinhole") -> dict:
    """Every kernel as its own checkout and build, in one submission."""
    sub: dict = {"version": VERSION, "checkouts": [], "builds": [], "tests": []}
    for doc in docs:
        k = doc["kernel"]
        checkout_id = build_id = f"{origin}:{unique(doc)}"
        sub["checkouts"].append(prune({
            "id": checkout_id, "origin": origin,
            "comment": f"{k.get('release')} {k.get('version')}",
            "start_time": about.rfc3339(doc["started"]),
        }))
        sub["builds"].append(prune({
            "checkout_id": checkout_id, "id": build_id, "origin": origin,
            "architecture": k.get("machine"),
            "comment": ("INCOMPLETE: " if doc.get("incomplete") else "")
                       + f"{k.get('release')} {k.get('version')}",
            "start_time": about.rfc3339(doc["started"]),
            "misc": {"kernel": k, "totals": doc["totals"], "environment": doc.get("environment"),
                     "finished": about.rfc3339(doc["finished"]),
                     "incomplete": doc.get("incomplete")},
        }))
        sub["tests"] += [test(c, build_id, origin) for c in doc["cases"]]
    return {k: v for k, v in sub.items() if kept(v)}


def dump(sub: dict) -> bytes:
    """kcidb.json.gz: only tools read it (kcidb-submit takes it through zcat), so compact
    ASCII JSON (non-ASCII escaped: a quarter faster to make), gzipped with no timestamp so
    the same run gives the same bytes."""
    text = json.dumps(sub, separators=(",", ":")) + "\n"
    # Level 1: a host run's 15.6 MB in 0.024 s to 481 KB, where level 6 took 0.080 s to
    # 302 KB, on the reports' longest path (reports.write_all()).
    return gzip.compress(text.encode(), compresslevel=1, mtime=0)


def load(path: Path) -> dict:
    """A submission from kcidb.json.gz (or an older run's plain kcidb.json)."""
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def shapes(tests: list[dict]) -> list[dict]:
    """One test of each shape (status, which fields and misc fields are set), the one with
    the longest text: test() makes every record, so the shapes are what can differ."""
    picked: dict[tuple, dict] = {}
    for t in tests:
        key = (t["status"], tuple(t), tuple(t.get("misc", ())))
        size = len(t.get("log_excerpt", "")) + len(t["comment"]) + len(t["path"])
        old = picked.get(key)
        if old is None or size > len(old.get("log_excerpt", "")) + len(old["comment"]) + len(
                old["path"]):
            picked[key] = t
    return list(picked.values())


def validate(sub: dict, every_test: bool = False) -> dict:
    """Raise jsonschema.ValidationError unless kcidb-io accepts the submission; return it.
    Tests are checked one of each shape unless every_test (jsonschema takes 15 s over a full
    host run's 36,000 tests, the reports' largest cost)."""
    whole = every_test or "tests" not in sub  # prune() drops an empty list of tests
    schema().validate(sub if whole else {**sub, "tests": shapes(sub["tests"])})
    return sub


def schema() -> object:
    """kcidb-io's newest schema, imported when first asked for: with jsonschema, 0.06 s."""
    from kcidb_io.schema import LATEST

    return LATEST

