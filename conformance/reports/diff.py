"""What changed between two runs: cells whose verdict, outcome or errno differ, and cases that
only one run has."""

from __future__ import annotations

from dataclasses import dataclass

from . import about

SEEN = ("verdict", "outcome", "errno")
BAD = ("fail", "error")


@dataclass(frozen=True)
class Change:
    id: str
    before: dict | None
    after: dict | None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "new"
        if self.after is None:
            return "gone"
        was, now = self.before["verdict"] in BAD, self.after["verdict"] in BAD
        return "regression" if now and not was else "fixed" if was and not now else "changed"


def diff(a: dict, b: dict) -> list[Change]:
    before = {c["id"]: c for c in a["cases"]}
    after = {c["id"]: c for c in b["cases"]}
    ids = sorted(before.keys() | after.keys())
    return [Change(i, before.get(i), after.get(i)) for i in ids
            if before.get(i) is None or after.get(i) is None
            or any(before[i].get(k) != after[i].get(k) for k in SEEN)]


def seen(case: dict | None) -> str:
    if case is None:
        return "(not run)"
    return " ".join(str(case[k]) for k in SEEN if case.get(k))


# Worst news first; a reader stops reading at the first section that does not concern them.
SECTIONS = (("regression", "Regressions"), ("changed", "Changed"), ("fixed", "Fixed"),
            ("new", "Only in the second run"), ("gone", "Only in the first run"))


def render(changes: list[Change], a: dict, b: dict) -> str:
    lines = [f"pinhole diff: {about.kernel(a)} ({about.utc(a['started'])})",
             f"           -> {about.kernel(b)} ({about.utc(b['started'])})", ""]
    if not changes:
        return "\n".join(lines + ["no change"]) + "\n"
    width = max(len(c.id) for c in changes)
    for kind, title in SECTIONS:
        mine = [c for c in changes if c.kind == kind]
        if not mine:
            continue
        lines.append(f"{title} ({len(mine)}):")
        for c in mine:
            lines.append(f"  {c.id.ljust(width)}  {seen(c.before)} -> {seen(c.after)}")
            if kind == "regression" and c.after.get("reason"):
                lines.append(f"      {c.after['reason']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def pairs(baseline: list[dict], docs: list[dict]) -> list[tuple[dict, dict]]:
    """Each run with its baseline: the baseline of the same kernel release; when no release
    matches (a kernel before a patch set has another one), the one at the same place, or the
    only one."""
    by_release = {b["kernel"].get("release"): b for b in baseline}
    matched = [(by_release[r], d) for d in docs if (r := d["kernel"].get("release")) in by_release]
    if matched:
        return matched
    if len(baseline) == len(docs):
        return list(zip(baseline, docs, strict=True))
    return [(baseline[0], d) for d in docs] if len(baseline) == 1 else []
