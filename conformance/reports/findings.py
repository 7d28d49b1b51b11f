"""What a run found, grouped the way a maintainer reads it: failures by the spec rule they
broke, known limitations (xfail) by the rule that names them, skips by reason. The terminal,
summary.md and matrix.html all show these groups."""

from __future__ import annotations

import functools
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import results

BAD = ("fail", "error")
# verdict.judge() ends a failure's reason with the deciding rule's own reason after this.
BECAUSE = " Expected because: "
# Where the skipped cases of one reason are named by a dimension, the first of these wins a tie.
SCOPES = ("pin", "backing", "mutation", "mapping", "access", "state", "check")


def count(n: int) -> str:
    return f"{n:,}"


def plural(n: int, word: str) -> str:
    return f"{count(n)} {word}{'' if n == 1 else 's'}"


@functools.cache  # a few hundred entries, asked for by every record of a full run
@functools.cache  # a few dozen entries, asked for by every case of every report
def spec_name(where: str) -> str:
    """A spec entry as file:line, without its directory."""
    return Path(where).name


def rule_of(case: dict) -> str:
    """The spec entry that decided the case, as file:line; '' when none did."""
    spec = case.get("spec") or []
    return spec_name(spec[-1]) if spec else ""


def head(reason: str) -> str:
    """'expected coherent, saw detached: zeros. Expected because: ...' -> 'expected coherent,
    saw detached'; any other reason up to its first line."""
    first = (reason or "").split(BECAUSE)[0].splitlines()[0] if reason else ""
    return first.split(": ")[0] if first.startswith("expected ") else first


def rule_text(case: dict) -> str:
    """What the deciding rule says: a failure's 'Expected because' part, else its reason."""
    reason = case.get("reason") or ""
    return reason.split(BECAUSE, 1)[1] if BECAUSE in reason else reason


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


@dataclass
class Group:
    """Cases that one rule (or one reason) explains, with the kernel index of each."""

    key: str
    rule: str
    cases: list[tuple[int, dict]] = field(default_factory=list)

    @property
    def example(self) -> dict:
        return self.cases[0][1]

    @property
    def heads(self) -> list[tuple[str, int]]:
        return Counter(head(c.get("reason") or "") for _, c in self.cases).most_common()

    def per_kernel(self, kernels: int) -> list[int]:
        n = Counter(k for k, _ in self.cases)
        return [n[k] for k in range(kernels)]

    @property
    def text(self) -> str:
        """The rule's own words, from a case that quotes them (an error's reason does not)."""
        quoting = min((c for _, c in self.cases),
                      key=lambda c: (BECAUSE not in (c.get("reason") or ""),
                                     c["verdict"] != "fail"))
        return first_sentence(rule_text(quoting))

    @property
    def label(self) -> str:
        """The rule, or for cases no rule decided (errors, controls) their verdict."""
        return self.rule or f"{self.example['verdict']} (no spec rule)"

    @property
    def what(self) -> str:
        """What was seen against the rule: its most common head, and how many others."""
        heads = self.heads
        return heads[0][0] + (f" (and {plural(len(heads) - 1, 'other')})" if len(heads) > 1
                              else "")

    def scope(self) -> str:
        """The dimension values these cases share most narrowly: 'rdma', 'ext4-dax, xfs-dax'."""
        shared = [list(dict.fromkeys(c.get(dim) for _, c in self.cases)) for dim in SCOPES]
        values = min((v for v in shared if None not in v), key=len, default=[])
        return ", ".join(values) if len(values) <= 3 else ""


def group(docs: list[dict], verdicts: Iterable[str], key: Callable[[dict], str]) -> list[Group]:
    """Cases of these verdicts grouped by key(case), the largest group first."""
    wanted = set(verdicts)
    groups: dict[str, Group] = {}
    for k, doc in enumerate(docs):
        for c in doc["cases"]:
            if c["verdict"] in wanted:
                name = key(c)
                groups.setdefault(name, Group(name, rule_of(c))).cases.append((k, c))
    return sorted(groups.values(), key=lambda g: -len(g.cases))


def failures(docs: list[dict]) -> list[Group]:
    """Fails and errors by the spec rule they broke; a case no rule decided (an error, a
    control) by the head of its reason."""
    return group(docs, BAD, lambda c: rule_of(c) or f"{c['verdict']}: {head(c.get('reason'))}")


def limitations(docs: list[dict]) -> list[Group]:
    """Known kernel limitations that showed (xfail), by the rule that names them."""
    return group(docs, ("xfail",), lambda c: rule_of(c) or c.get("reason") or "")


def xpasses(docs: list[dict]) -> list[Group]:
    return group(docs, ("xpass",), lambda c: rule_of(c) or c.get("reason") or "")


def skips(docs: list[dict]) -> list[Group]:
    return group(docs, ("skip",), lambda c: c.get("reason") or "no reason given")


def totals_line(cases: list[dict]) -> str:
    """'36,509 cases: 12,641 pass, 23,868 skip', leaving out verdicts nobody got."""
    t = results.totals(cases)
    parts = [f"{count(n)} {v}" for v, n in t.items() if n]
    return f"{count(len(cases))} cases: {', '.join(parts) or 'none ran'}"


VERDICT_WORD = {results.EXIT_PASS: "PASS", results.EXIT_FAIL: "FAIL", results.EXIT_XPASS: "XPASS",
                results.EXIT_SKIP: "SKIP", results.EXIT_HARNESS: "ERROR"}


def run_word(doc: dict) -> str:
    """The run's verdict as kselftest's exit code names it."""
    code = results.run_exit(doc)
    return f"{VERDICT_WORD.get(code, 'ERROR')} (exit {code})"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def wrap(text: str, width: int, indent: str, more: str, most: int = 0) -> list[str]:
    """text wrapped to width; with most, at most that many lines, the last ending ' ...' if
    text was cut."""
    lines = textwrap.wrap(text, width - 4 * bool(most), initial_indent=indent,
                          subsequent_indent=more, break_long_words=True,
                          break_on_hyphens=False) or [indent.rstrip()]
    if most and len(lines) > most:
        lines = lines[:most]
        lines[-1] += " ..."
    return lines


@dataclass
class Section:
    """A titled list of items (each a few lines) that fit() may shorten from the end."""

    title: str
    items: list[list[str]]
    more: Callable[[int], str] = lambda n: f"  ... and {n} more"
    total: int = 0  # items before fit() dropped any
    gap: bool = True  # a blank line before the title

    def lines(self) -> list[str]:
        dropped = self.total - len(self.items)
        title = ([""] * self.gap + [self.title]) if self.title else []
        return title + [line for item in self.items for line in item] \
            + ([self.more(dropped)] if dropped > 0 else [])


def fit(sections: list[Section], limit: int) -> list[str]:
    """Every section's lines in order, within limit: the longest section gives up its last
    item first, and each keeps at least one."""
    for s in sections:
        s.total = s.total or len(s.items)
    while sum(len(s.lines()) for s in sections) > limit:
        shrinkable = [s for s in sections if len(s.items) > 1]
        if not shrinkable:
            break
        longest = max(shrinkable, key=lambda s: sum(map(len, s.items)))
        longest.items.pop()
    return [line for s in sections for line in s.lines()]
