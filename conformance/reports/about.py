"""What a results document says about its kernel and machine, as short facts for report heads."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def kernel(doc: dict) -> str:
    k = doc["kernel"]
    return f"{k.get('release', '?')} {k.get('machine', '?')}"


def run(doc: dict) -> str:
    root = doc.get("probe", {}).get("root")
    who = {True: "as root", False: "not as root"}.get(root, "root unknown")
    return f"{utc(doc['started'])}, {doc['finished'] - doc['started']:.1f} s, {who}"


def totals(doc: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in doc["totals"].items())


def available(doc: dict, kind: str) -> str:
    """'a, b; not available: c, d (why)', from the probe's pins or backings."""
    probed = doc.get("probe", {}).get(kind, {})
    yes = [name for name, p in probed.items() if p.get("available")]
    why: dict[str, list[str]] = {}
    for name, p in probed.items():
        if not p.get("available"):
            why.setdefault(p.get("reason") or "no reason given", []).append(name)
    missing = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in why.items())
    return ", ".join(yes) + (f"; not available: {missing}" if missing else "") or "not probed"


def environment(doc: dict) -> str:
    """The optional environment block (package, accelerator, qemu, ...) as key=value pairs."""

    def flat(prefix: str, value: object) -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in flat(f"{prefix}{k}.", v)]
        return [] if value is None or value == "" else [f"{prefix[:-1]}={value}"]

    return ", ".join(flat("", doc.get("environment") or {}))
