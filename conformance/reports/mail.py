"""summary.md: a run in at most 80 lines of at most 100 columns, to paste into a reply to a
patch on linux-mm: the kernels and totals, failures by spec rule with one example each, the
known limitations that showed, the skips by reason, and what changed since a baseline run."""

from __future__ import annotations

from .. import results
from . import about, diff, findings
from .findings import Section, count, plural, wrap

LINES = 80
WIDTH = 100


def origin(doc: dict) -> str:
    """Where a VM's kernel came from: ' (debian:6.12, 6.12.118-1, tcg)'; '' on the host."""
    env = doc.get("environment") or {}
    said = [str(env[k]) for k in ("spec", "package", "accelerator") if env.get(k)]
    return f" ({', '.join(said)})" if said else ""


def kernel_lines(docs: list[dict]) -> list[str]:
    if len(docs) == 1:
        doc = docs[0]
        k = doc["kernel"]
        return [*wrap(f"kernel: {k.get('release', '?')} ({k.get('version', '?')}), "
                      f"{k.get('machine', '?')}{origin(doc)}", WIDTH, "- ", "  "),
                *wrap(f"run: {about.run(doc)}", WIDTH, "- ", "  "),
                *wrap(f"result: {findings.run_word(doc)}: {findings.totals_line(doc['cases'])}",
                      WIDTH, "- ", "  ")]
    return [line for doc in docs for line in wrap(
        f"{about.kernel(doc)}{origin(doc)}: {findings.run_word(doc)}: "
        f"{findings.totals_line(doc['cases'])}", WIDTH, "- ", "  ")]


def per_kernel(group: findings.Group, docs: list[dict]) -> str:
    """' (6.1.0: 12, 6.12.0: 0)' when several kernels ran."""
    if len(docs) == 1:
        return ""
    return " (" + ", ".join(f"{doc['kernel'].get('release', '?')}: {count(n)}"
                            for doc, n in zip(docs, group.per_kernel(len(docs)), strict=True)) + ")"


def example(group: findings.Group, docs: list[dict]) -> str:
    k, case = group.cases[0]
    where = f" on {docs[k]['kernel'].get('release', '?')}" if len(docs) > 1 else ""
    return f"e.g. {case['id']}{where}"


def rule_item(group: findings.Group, docs: list[dict]) -> list[str]:
    """A rule, its count, what was seen against it, one example and what the rule says."""
    title = (f"{group.label}, {plural(len(group.cases), 'case')}{per_kernel(group, docs)}: "
             f"{group.what}")
    rule = wrap(f"rule: {group.text}", WIDTH, "  ", "    ", most=2) if group.rule else []
    return [*wrap(title, WIDTH, "- ", "  ", most=2),
            *wrap(example(group, docs), WIDTH, "  ", "    "), *rule]


def failures(docs: list[dict]) -> Section:
    groups = findings.failures(docs)
    n = sum(len(g.cases) for g in groups)
    title = (f"## Failures by spec rule: {plural(n, 'case')}, {plural(len(groups), 'rule')}"
             if groups else "## Failures by spec rule: none")
    return Section(title, [rule_item(g, docs) for g in groups],
                   lambda k: f"- ... and {plural(k, 'more rule')}: see matrix.md and results.ktap")


def limitations(docs: list[dict]) -> Section:
    groups = findings.limitations(docs)
    n = sum(len(g.cases) for g in groups)
    title = (f"## Known kernel limitations that showed (xfail): {count(n)} cases" if groups
             else "## Known kernel limitations that showed (xfail): none")
    items = [[*wrap(f"{g.label}, {plural(len(g.cases), 'case')}{per_kernel(g, docs)}: "
                    f"{g.text}", WIDTH, "- ", "  ", most=3),
              *wrap(example(g, docs), WIDTH, "  ", "    ")] for g in groups]
    items += [wrap(f"did not show (xpass): {g.label}, {plural(len(g.cases), 'case')}; "
                   f"{example(g, docs)}", WIDTH, "- ", "  ") for g in findings.xpasses(docs)]
    return Section(title, items, lambda k: f"- ... and {k} more: see matrix.md")


def skips(docs: list[dict]) -> Section:
    groups = findings.skips(docs)
    n = sum(len(g.cases) for g in groups)
    title = f"## Skipped: {count(n)} cases" if groups else ""
    items = [wrap(f"{plural(len(g.cases), g.scope() + ' case' if g.scope() else 'case')}"
                  f"{per_kernel(g, docs)}: {g.key}", WIDTH, "- ", "  ", most=3) for g in groups]
    return Section(title, items, lambda k: f"- ... and {k} more reasons: see results.ktap")


# What each kind of change says in a count: '12 regressed under 10-coherence.toml:4'.
KIND = {"regression": "regressed", "changed": "changed", "fixed": "fixed", "new": "new",
        "gone": "gone"}


def change_items(changes: list[diff.Change]) -> list[list[str]]:
    """Changes of one kind under one rule with the same before and after, as one item."""
    kinds = [kind for kind, _ in diff.SECTIONS]
    alike: dict[tuple, list[diff.Change]] = {}
    for c in sorted(changes, key=lambda c: kinds.index(c.kind)):
        rule = findings.rule_of(c.after or c.before)
        alike.setdefault((c.kind, rule, diff.seen(c.before), diff.seen(c.after)), []).append(c)
    return [[*wrap(f"{count(len(cs))} {KIND[kind]}{' under ' + rule if rule else ''}: "
                   f"{was} -> {now}",
                   WIDTH, "- ", "  ", most=2), *wrap(f"e.g. {cs[0].id}", WIDTH, "  ", "    ")]
            for (kind, rule, was, now), cs in alike.items()]


def against(baseline: list[dict], docs: list[dict]) -> list[Section]:
    """One section per kernel: what changed since its baseline run, worst news first."""
    out = []
    for before, after in diff.pairs(baseline, docs):
        changes = diff.diff(before, after)
        tally = ", ".join(f"{count(sum(c.kind == kind for c in changes))} {word}"
                          for kind, word in KIND.items())
        title = (f"## Against the baseline {about.kernel(before)} ({about.utc(before['started'])})"
                 + (f", for {about.kernel(after)}" if len(docs) > 1 else ""))
        items = [wrap(tally if changes else "no change", WIDTH, "- ", "  "), *change_items(changes)]
        out.append(Section(title, items, lambda k: f"- ... and {k} more: see pinhole diff"))
    return out


def render(docs: list[dict], baseline: list[dict] | None = None) -> str:
    kernels = ", ".join(about.kernel(d) for d in docs)
    top = [*wrap(f"# pinhole: {kernels}", WIDTH, "", "  "),
           *[line for w in results.incomplete_lines(docs) for line in wrap(w, WIDTH, "", "  ")],
           *kernel_lines(docs)]
    sections = [Section("", [top]), failures(docs), limitations(docs)]
    sections += against(baseline, docs) if baseline else []
    sections += [skips(docs),
                 Section("", [["", "Everything: matrix.md (tables), matrix.html (every check), "
                                   "results.ktap."]])]
    return "\n".join(findings.fit(sections, LINES)) + "\n"
