"""results.ktap: one run as KTAP version 1 (Documentation/dev-tools/ktap.rst), with kselftest's
directives and its closing Totals line; several runs nest one subtest per kernel."""

from __future__ import annotations

from .. import results
from . import about
from .findings import spec_name

# kselftest_test_result_code(): xfail and xpass are "ok" with a directive, skip is "ok # SKIP",
# and ktap.rst wants ERROR on a "not ok" line.
RESULT = {
    "pass": ("ok", ""), "fail": ("not ok", ""), "xfail": ("ok", "XFAIL"),
    "xpass": ("ok", "XPASS"), "skip": ("ok", "SKIP"), "error": ("not ok", "ERROR"),
}


def one_line(text: str) -> str:
    """KTAP is line-based: newlines become a visible \\n, other control characters a space."""
    if text.isprintable():  # nearly every reason: the walk below was 2 s of a full host run
        return text.strip()
    text = text.replace("\r\n", "\n").replace("\n", "\\n")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def diagnostics(case: dict) -> list[str]:
    """What a reader of a failed case needs, as '# ' lines before its result line; an error's
    reason is already on its result line."""
    keys = ("detail", "reason") if case["verdict"] == "fail" else ("detail",)
    lines = [f"# {key}: {one_line(case[key])}" for key in keys if case.get(key)]
    if case.get("spec") and case["verdict"] == "fail":
        lines.append("# spec: " + " ".join(spec_name(s) for s in case["spec"]))
    lines += [f"# dmesg: {one_line(line)}" for line in (case.get("dmesg") or "").splitlines()]
    if case.get("taint"):
        lines.append(f"# taint: {case['taint']}")
    return lines


# A SKIP or XFAIL reason repeats over thousands of cases: it is given whole the first time, then
# only its head, up to this long (a full host run's KTAP went from 5.3 MB to 2.9 MB).
HEAD = 80


def shortened(reason: str) -> str:
    """'no RDMA device: modprobe rdma_rxe ...' -> 'no RDMA device (as above)'."""
    cut = reason.find(": ")
    if 0 < cut <= HEAD:
        return reason[:cut] + " (as above)"
    return reason if len(reason) <= HEAD else reason[:HEAD].rstrip() + "... (as above)"


def result_line(n: int, case: dict, said: set[str] | None = None) -> str:
    """The case's result line; with said, a SKIP or XFAIL reason already in it is shortened
    (and is added to it when not)."""
    ok, directive = RESULT.get(case["verdict"], ("not ok", "ERROR"))
    reason = one_line(case.get("reason") or "")
    if said is not None and directive in ("SKIP", "XFAIL"):
        reason = shortened(reason) if reason in said else said.add(reason) or reason
    tail = f" # {directive} {reason}".rstrip() if directive else ""
    return f"{ok} {n} {case['id']}{tail}"


def lines(doc: dict) -> list[str]:
    cases = doc["cases"]
    # A run that did not finish plans what it meant to run, so a parser sees what is missing.
    out = ["KTAP version 1", f"1..{max(len(cases), doc.get('planned') or 0)}",
           f"# pinhole on {about.kernel(doc)} ({one_line(doc['kernel'].get('version', '?'))})"]
    out += [f"# {one_line(line)}" for line in results.incomplete_lines([doc])]
    said: set[str] = set()
    for n, case in enumerate(cases, 1):
        if case["verdict"] in ("fail", "error"):
            out += diagnostics(case)
        out.append(result_line(n, case, said))
    t = results.totals(cases)
    out.append("# Totals: " + " ".join(f"{k}:{t[k]}" for k in RESULT))
    return out


def render(doc: dict) -> str:
    return "\n".join(lines(doc)) + "\n"


def render_many(docs: list[dict]) -> str:
    """One subtest per kernel, each a full KTAP document indented by two spaces (ktap.rst)."""
    out = ["KTAP version 1", f"1..{len(docs)}"]
    for n, doc in enumerate(docs, 1):
        out += ["  " + line for line in lines(doc)]
        # A kernel whose run did not finish, or ran nothing (a lost VM), is not ok.
        code = results.run_exit(doc)
        failed = code in (results.EXIT_FAIL, results.EXIT_HARNESS)
        why = doc.get("incomplete") or ("no case ran" if not doc["cases"] else "")
        tail = f" # ERROR {one_line(why)}" if failed and why else ""
        out.append(f"{'not ok' if failed else 'ok'} {n} {about.kernel(doc)}{tail}")
    return "\n".join(out) + "\n"
