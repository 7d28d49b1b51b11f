"""Several runs' records (results.json.gz) as documents: shards of one run on one kernel
merged into one, different kernels kept apart in the order given."""

from __future__ import annotations

from pathlib import Path

from .. import results


def resolve(path: Path) -> Path:
    return results.record_in(path) if path.is_dir() else path


def kernel_key(doc: dict) -> tuple[str, str, str]:
    # Release alone could join two machines (or two builds) that share a release string.
    k = doc["kernel"]
    return k.get("release", ""), k.get("version", ""), k.get("machine", "")


def merge(docs: list[dict]) -> dict:
    """One document from shards of a run: the union of cases, a later shard winning a case."""
    cases: dict[str, dict] = {}
    for doc in docs:
        cases.update((c["id"], c) for c in doc["cases"])
    merged = results.document(list(cases.values()), docs[0]["kernel"], docs[0]["probe"],
                              min(d["started"] for d in docs), max(d["finished"] for d in docs))
    # Keys results.document() does not make (the environment block, later additions) survive.
    extra = {k: v for d in docs for k, v in d.items() if k not in merged}
    return merged | extra


def finished(run: Path) -> bool:
    """The record is this run's: an older one beside a newer progress.jsonl is a previous
    run's, and what the newer run did is in its progress."""
    done, progress = results.record_in(run), run / results.PROGRESS
    if not done.exists():
        return False
    return not progress.exists() or done.stat().st_mtime_ns >= progress.stat().st_mtime_ns


def runs_in(path: Path) -> list[Path]:
    """A run's directory or record as itself; a `pinhole matrix` output, whose kernels
    sit in subdirectories (finished or killed), as those."""
    marks = (results.FILE, results.PLAIN, results.PROGRESS)
    if not path.is_dir() or any((path / f).exists() for f in marks):
        return [path]
    runs = sorted({p.parent for f in marks
                   for p in path.glob(f"*/{f}")})
    return runs or [path]  # no run there at all: loading it says so


def load_many(paths: list[Path]) -> list[dict]:
    """Read and check each file (a directory means its record, a `pinhole matrix`
    output its kernels'), merge by kernel."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for path in (run for p in paths for run in runs_in(Path(p))):
        if path.is_dir() and not finished(path):
            doc = results.salvage(path)  # a run that was killed: what it finished
        else:
            doc = results.load(resolve(path))
        groups.setdefault(kernel_key(doc), []).append(doc)
    return [merge(docs) for docs in groups.values()]
