"""junit.xml for CI systems (GitLab, GitHub, Jenkins): one testsuite per kernel, a testcase per
case that ran, and one per reason for the cases that skipped, so a full run stays small."""

from __future__ import annotations

from collections import defaultdict
from xml.sax.saxutils import quoteattr

from .about import kernel

# How a verdict shows in JUnit: pytest's own convention for xfail and xpass.
ELEMENT = {"fail": "failure", "error": "error", "xfail": "skipped"}
SLOW_S = 0.01


def _case(c: dict) -> str:
    # pin.backing as the class, the rest as the name: CI pages group by class.
    parts = c["id"].split(".", 2)
    took = c.get("duration_s", 0)
    # Only a slow case's time, where a CI page's sorting by time helps: a full run's
    # thousands of millisecond cases would be most of the file.
    time_ = f' time="{took:.3f}"' if took >= SLOW_S else ""
    head = (f'<testcase classname={quoteattr(".".join(parts[:2]))} '
            f'name={quoteattr(parts[-1])}{time_}')
    element = ELEMENT.get(c["verdict"])
    if not element:
        return head + "/>"
    prefix = "xfail: " if c["verdict"] == "xfail" else ""
    return f"{head}><{element} message={quoteattr(prefix + c['reason'][:2000])}/></testcase>"


def _suite(doc: dict) -> list[str]:
    ran = [c for c in doc["cases"] if c["verdict"] != "skip"]
    skips: dict[str, list[str]] = defaultdict(list)
    for c in doc["cases"]:
        if c["verdict"] == "skip":
            skips[c["reason"]].append(c["id"])
    failures = sum(c["verdict"] == "fail" for c in ran)
    errors = sum(c["verdict"] == "error" for c in ran)
    lines = [f'<testsuite name={quoteattr("pinhole " + kernel(doc))} '
             f'tests="{len(ran) + len(skips)}" failures="{failures}" errors="{errors}" '
             f'skipped="{len(skips)}">']
    lines += [_case(c) for c in ran]
    for reason, ids in skips.items():
        name = quoteattr(f"{len(ids)} cases, e.g. {ids[0]}")
        lines.append(f'<testcase classname="skipped" name={name}>'
                     f'<skipped message={quoteattr(reason)}/></testcase>')
    lines.append("</testsuite>")
    return lines


def render(docs: list[dict]) -> str:
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<testsuites>"]
    for doc in docs:
        lines += _suite(doc)
    return "\n".join([*lines, "</testsuites>"]) + "\n"
