"""pinhole's own mutation testing: kernels with known pin bugs that pinhole must fail.

    python validation/run.py [--only 01,03] [--source debian-src:6.12] [--timeout S]

Builds the base kernel from Debian's source once (conformance/kbuild.py, cached), then each
mutant in validation/mutants/ as a rebuild of the same tree. On each kernel, in a VM: pinhole
on the mutant's cells (the patch's `Select:` line; a `good` mutant under its overlay,
validation/overlays/<name>.toml), and the kernel's own selftests gup_longterm and cow built
from the same tree. The base kernel runs every mutant's selection: it must pass them all,
or a kill proves nothing.

Writes validation/results.json and the table between the validation markers in README.md;
the file's `kernel_view` block, written by validation/kernelview.py (the kernel's own view of
the pins against these user-space outcomes), is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import kbuild, multikernel, vm  # noqa: E402
from conformance.dimensions import cells  # noqa: E402

HERE = ROOT / "validation"
MUTANTS = HERE / "mutants"
OVERLAYS = HERE / "overlays"
RESULTS = HERE / "results.json"
README = ROOT / "README.md"
BEGIN, END = "<!-- validation:begin -->", "<!-- validation:end -->"
# Outcomes that name the hazard: the pin and the file no longer agree, data went missing or
# came back, or the kernel complained.
HAZARDS = {"disconnected", "stale-cache", "lost-write", "resurrected", "kernel-warning"}
SELFTEST_TIMEOUT = 600.0
# Inside the guest: hugepages for the hugetlb tests, and an ext4 cwd, where gup_longterm's
# "local tmpfile" tests then exercise a dirty-tracked filesystem (in a tmpfs cwd they would
# test tmpfs, which may take long-term write pins).
SELFTEST_SCRIPT = """cd /tmp
echo 16 > /proc/sys/vm/nr_hugepages
truncate -s 256M selftests.img && mkfs.ext4 -q -F selftests.img && mkdir -p ext4 \\
  && mount -o loop selftests.img ext4 && cd ext4
for t in {tests}; do
  echo "== $t"
  {dir}/$t
  echo "== $t rc=$?"
done
"""


@dataclass(frozen=True)
class Mutant:
    name: str
    path: Path
    kind: str  # bad: pinhole must kill it; good: pinhole must pass it under its overlay
    select: list[str]
    fields: dict[str, str]

    @property
    def overlay(self) -> Path | None:
        path = OVERLAYS / f"{self.name}.toml"
        return path if path.is_file() else None

    @classmethod
    def load(cls, path: Path) -> Mutant:
        head = path.read_text().split("\n---\n", 1)[0]
        fields = dict(re.findall(r"^(\w+): (.*)$", head, re.M))
        if fields.get("Kind") not in ("bad", "good") or "Select" not in fields:
            raise SystemExit(f"{path}: the header needs 'Kind: bad|good' and 'Select: ...'")
        return cls(path.stem, path, fields["Kind"], shlex.split(fields["Select"]), fields)


def hazard(case: dict) -> bool:
    """A fail or error that names the hazard, or a pin admitted where the kernel must refuse."""
    if case["verdict"] not in ("fail", "error"):
        return False
    refused = (case.get("expected") or "").startswith("refused")
    return case.get("outcome") in HAZARDS or (refused and case.get("outcome") == "pinned")


def pinhole(kernel_spec: str, patches: list[Path], select: list[str], spec: Path | None,
            out: Path, timeout: float) -> dict:
    """pinhole on one kernel in a VM, the selection only: its results document."""
    args = [*select, *([f"--spec={spec}"] if spec else [])]
    return multikernel.run_kernel(kernel_spec, out, args, timeout, patches)


def selftests(built: kbuild.BuiltKernel, kernel_spec: str, patches: list[Path]) -> dict:
    """gup_longterm and cow from the same tree, in a VM: killed when a test says not ok."""
    kernel = kbuild.resolve(kernel_spec, patches)
    tests = sorted(built.selftests)
    script = SELFTEST_SCRIPT.format(tests=" ".join(tests),
                                    dir=shlex.quote(str(built.selftests[tests[0]].parent)))
    start = time.monotonic()
    res = vm.boot_and_run(kernel, script, timeout=SELFTEST_TIMEOUT)
    out: dict[str, dict] = {}
    for name, body in re.findall(r"^== (\S+)\n(.*?)^== \1 rc=", res.stdout, re.M | re.S):
        failed = [line for line in body.splitlines()
                  if line.startswith("not ok") and "# SKIP" not in line]
        out[name] = {"killed": bool(failed), "first": failed[0] if failed else None,
                     "not_ok": len(failed), "ok": body.count("\nok ")}
    for name in tests:
        out.setdefault(name, {"killed": None, "first": f"did not run: vm {res.outcome}",
                              "not_ok": 0, "ok": 0})
    out["seconds"] = round(time.monotonic() - start, 1)
    return out


def selected(case: dict, select: list[str]) -> bool:
    """Whether a case record is in a selection such as ['--pin', 'io_uring,rdma', ...]."""
    return all(case.get(option.lstrip("-")) in values.split(",")
               for option, values in zip(select[::2], select[1::2], strict=True))


def judge(doc: dict) -> dict:
    bad = [c for c in doc["cases"] if c["verdict"] in ("fail", "error")]
    kills = [c for c in bad if hazard(c)]
    first = kills[0] if kills else bad[0] if bad else None
    return {
        "totals": doc["totals"], "fails": len(bad), "kills": len(kills),
        "killed": bool(kills), "incomplete": doc.get("incomplete"),
        "first": first and {k: first.get(k) for k in ("id", "verdict", "outcome", "expected",
                                                      "errno", "detail")},
        "vm": doc["environment"]["vm"],
        "run_s": doc["environment"]["seconds"]["run"],
    }


def base_on(doc: dict, mutants: list[Mutant]) -> dict[str, dict]:
    """What the base kernel gave on each mutant's own selection (of how many cells it has):
    a kill proves something only where the base passed those cells."""
    every = [asdict(c) for cell in cells() for c in cell.cases]
    out = {}
    for m in mutants:
        mine = [c for c in doc["cases"] if selected(c, m.select)]
        out[m.name] = {"cases": len(mine), "of": sum(selected(c, m.select) for c in every),
                       "fails": [c["id"] for c in mine if c["verdict"] in ("fail", "error")]}
    return out


def run_one(kernel_spec: str, m: Mutant | None, select: list[str], work: Path,
            timeout: float, mutants: list[Mutant]) -> dict:
    patches = [m.path] if m else []
    t0 = time.monotonic()
    built = kbuild.build(kernel_spec, patches)
    build_s = round(time.monotonic() - t0, 1)
    doc = pinhole(kernel_spec, patches, select, m.overlay if m else None,
                  work / (m.name if m else "base"), timeout)
    row = {"name": m.name if m else "base", "kind": m.kind if m else "base",
           "fields": m.fields if m else {}, "build_s": build_s, "key": built.key,
           "pinhole": judge(doc), "selftests": selftests(built, kernel_spec, patches)}
    p = row["pinhole"]
    if m is None:
        row["on_selections"] = base_on(doc, mutants)
    # A run cut short proves nothing; a good kernel must give no fail; a bad one a kill.
    good = m is None or m.kind == "good"
    row["as_expected"] = not p["incomplete"] and ((p["fails"] == 0) if good else p["killed"])
    return row


def mark(value: bool | None) -> str:
    return {True: "killed", False: "survived", None: "n/a"}[value]


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["name"] == "base"), None)
    lines = ["| kernel | kind | pinhole | first failing case (outcome) | base kernel, same cells "
             "| gup_longterm | cow | build s | run s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, s = r["pinhole"], r["selftests"]
        first = p["first"]
        where = f"`{first['id']}` ({first['outcome']})" if first else "none"
        verdict = (("pass" if p["fails"] == 0 else f"{p['fails']} false alarms")
                   if r["kind"] in ("base", "good") else mark(p["killed"]))
        if p.get("incomplete"):
            verdict += f" (incomplete: {p['incomplete']})"
        on = (base or {}).get("on_selections", {}).get(r["name"])
        same = ("-" if on is None else f"{on['cases']} of {on['of']} cells, "
                + (f"{len(on['fails'])} fail" if on["fails"] else "pass"))
        lines.append(f"| {r['name']} | {r['kind']} | {verdict} | {where} | {same} "
                     f"| {mark(s['gup_longterm']['killed'])} | {mark(s['cow']['killed'])} "
                     f"| {r['build_s']} | {p['run_s']} |")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        return
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="debian-src:6.12")
    parser.add_argument("--only", default="", help="comma-separated mutant numbers or names, "
                        "or base; the other rows of results.json stay")
    parser.add_argument("--timeout", type=float, default=2400, help="per VM, boot included")
    parser.add_argument("--table", action="store_true",
                        help="only write the README table again from results.json")
    args = parser.parse_args()
    if args.table:
        update_readme(table(json.loads(RESULTS.read_text())["rows"]))
        return 0
    mutants = [Mutant.load(p) for p in sorted(MUTANTS.glob("*.patch"))]
    wanted = args.only.split(",") if args.only else []
    if wanted:
        mutants = [m for m in mutants if any(m.name.startswith(w) for w in wanted)]
    started = time.time()
    # --only reruns some rows; the others stay as the last full run left them.
    previous = json.loads(RESULTS.read_text())["rows"] if args.only and RESULTS.exists() else []
    rows = {r["name"]: r for r in previous}
    every = [Mutant.load(p) for p in sorted(MUTANTS.glob("*.patch"))]
    with tempfile.TemporaryDirectory(prefix="pinhole-validation-") as tmp:
        work = Path(tmp)
        if not args.only or "base" in wanted:
            # The base kernel runs the cross of every mutant's selection, and must pass each
            # mutant's own cells: a kill on a kernel that fails them anyway proves nothing.
            union = union_selection([m.select for m in every])
            rows["base"] = run_one(args.source, None, union, work, args.timeout, every)
        for m in mutants:
            rows[m.name] = run_one(args.source, m, m.select, work, args.timeout, every)
            print(f"validation: {m.name}: pinhole {mark(rows[m.name]['pinhole']['killed'])}, "
                  f"as expected: {rows[m.name]['as_expected']}", flush=True)
    ordered = [rows[n] for n in ["base", *(m.name for m in every)] if n in rows]
    report = {"source": args.source, "started": started, "seconds": round(time.time() - started),
              "machine": platform.node(), "rows": ordered}
    # validation/kernelview.py's block (the kernel view against user space) is its own.
    if RESULTS.exists() and "kernel_view" in (old := json.loads(RESULTS.read_text())):
        report["kernel_view"] = old["kernel_view"]
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    text = table(ordered)
    update_readme(text)
    print(text)
    return 0 if all(r["as_expected"] for r in ordered) else 1


def union_selection(selections: list[list[str]]) -> list[str]:
    """One selection covering every given one: an option all of them narrow gets the union of
    their values; an option any of them leaves open stays open."""
    given = [dict(zip(s[::2], s[1::2], strict=True)) for s in selections]
    out: list[str] = []
    for option in dict.fromkeys(o for g in given for o in g):
        if all(option in g for g in given):
            values = dict.fromkeys(v for g in given for v in g[option].split(","))
            out += [option, ",".join(values)]
    return out

if __name__ == "__main__":
    sys.exit(main())
