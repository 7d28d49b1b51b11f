"""The report renderers on recorded results: no kernel needed."""

import copy
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from conformance import framing, results
from conformance.dimensions import KCIDB_PATH
from conformance.model import Case, Result
from conformance.reports import (
    FILES,
    diff,
    grid,
    html,
    kcidb,
    ktap,
    mail,
    markdown,
    merge,
    summary,
    write_all,
)

SPEC = ["/x/conformance/spec/10-io_uring.toml:4"]
REFUSED = "mm/gup.c check_vma_flags(): refused, -EFAULT"


def case(pin, backing, mapping, state, mutation, check, verdict, outcome, **more):
    c = {"pin": pin, "backing": backing, "mapping": mapping, "access": "rw", "state": state,
         "mutation": mutation, "check": check, "verdict": verdict, "outcome": outcome,
         "expected": outcome, "reason": "shared folio rule", "errno": None, "detail": "seen",
         "dmesg": "", "taint": "", "spec": SPEC, "duration_s": 0.01}
    c["id"] = ".".join(c[k] for k in ("pin", "backing", "mapping", "access", "state", "mutation",
                                       "check"))
    return c | more


def doc(release, cases, started=1_700_000_000.0):
    probe = {"root": True,
             "pins": {"io_uring": {"available": True, "reason": "ok"},
                      "rdma": {"available": False, "reason": "no RDMA device: modprobe rdma_rxe"}},
             "backings": {"memfd": {"available": True, "reason": "available"},
                          "ext4": {"available": True, "reason": "available"}}}
    kernel = {"release": release, "version": "#1 SMP", "machine": "x86_64"}
    return results.document(cases, kernel, probe, started, started + 2.5)


def cases_618():
    return [
        case("io_uring", "memfd", "shared", "hole", "none", "admission", "pass", "pinned"),
        case("io_uring", "memfd", "shared", "hole", "none", "zeropage", "pass", "pinned"),
        case("io_uring", "memfd", "shared", "hole", "none", "file-to-pin", "pass", "coherent"),
        case("io_uring", "memfd", "shared", "hole", "none", "pin-to-file", "pass", "coherent"),
        case("io_uring", "memfd", "shared", "hole", "pwrite", "file-to-pin", "xfail",
             "stale-cache", expected="coherent", reason="known: dio_warn_stale_pagecache()"),
        case("io_uring", "memfd", "shared", "hole", "pwrite", "pin-to-file", "xpass", "coherent",
             reason="a known limitation did not show"),
        case("io_uring", "ext4", "shared", "hole", "none", "admission", "pass", "refused",
             expected="refused EFAULT", errno="EFAULT", reason=REFUSED),
        case("io_uring", "ext4", "shared", "hole", "none", "pin-to-file", "fail", "lost-write",
             expected="coherent", detail="zeros <after> remount\nline two",
             reason="expected coherent, saw lost-write: zeros <after> remount",
             dmesg="WARNING: CPU: 0 PID: 1 at mm/gup.c:1 <script>alert(1)</script>", taint="W"),
        case("io_uring", "ext4", "private", "hole", "none", "admission", "skip", None,
             expected=None, spec=[], reason="needs root: loop devices (run as root)"),
        case("io_uring", "ext4", "private", "hole", "none", "file-to-pin", "error", None,
             reason="OSError: [Errno 5] EIO"),
        case("vmsplice", "memfd", "shared", "hole", "none", "admission", "pass", "pinned"),
    ]


@pytest.fixture
def two():
    new = doc("6.18.0", cases_618(), started=1_700_100_000.0)
    old_cases = copy.deepcopy(cases_618())
    old_cases[6].update(verdict="pass", errno="EOPNOTSUPP", expected="refused EOPNOTSUPP",
                        reason="io_uring before 6.5 refuses file-backed buffers")
    del old_cases[-1]
    return [doc("6.1.0", old_cases), new]


def test_every_verdict_is_in_the_sample(two):
    assert {c["verdict"] for c in two[1]["cases"]} == set(ktap.RESULT)


def test_matrix_md_has_a_table_per_pin_legend_and_footnotes(two):
    md = markdown.render(two[1:])
    assert re.findall(r"^## (\S+)", md, re.M) == ["io_uring", "vmsplice", "Reasons"]
    assert md.count("```") == 4
    assert "✓=pass" in md and "C=coherent" in md
    # The worst check shows: an xpass outranks the xfail beside it.
    assert "✓R:EFAULT" in md and "✗L" in md and "!SC" in md
    notes = md.split("## Reasons")[1]
    assert "[1] pass: shared folio rule (spec 10-io_uring.toml:4)" in notes
    assert "needs root: loop devices (run as root)" in notes
    # The row's own citation is its pin cell's note; a failing cell adds column:number.
    ext4 = next(line for line in md.splitlines() if line.startswith("ext4"))
    assert re.search(r"\d+ none:\d+$", ext4)
    assert re.search(r"^memfd +shared +✓P +✓C +!SC +1 pwrite:2,3$", md, re.M)
    assert "+R:EFAULT" in markdown.render(two[1:], ascii=True)


def test_matrix_md_marks_what_differs_between_kernels(two):
    md = markdown.render(two)
    assert "- k1: 6.1.0 x86_64, " in md and "- k2: 6.18.0 x86_64, " in md
    assert "✓R:EOPNOTSUPP*" in md and "✓R:EFAULT*" in md
    assert "✓P " in md.split("## io_uring")[1]  # memfd admission is the same: no mark
    assert re.search(r"^ +k2 +✓R:EFAULT\* +✗L +\d+ none:\d+$", md, re.M)
    assert re.search(r"^k1\n^k2 +✓P\* +1$", md, re.M)  # vmsplice ran on the second kernel only
    assert "cells differ between kernels (marked *)" in md


def test_matrix_html_is_self_contained_and_escaped(two):
    page = html.render(two)
    assert "http" not in page and "<link" not in page and " src=" not in page
    assert "<script>alert" not in page and "\\u003cscript\\u003ealert" in page
    assert page.count('<section class="pin"') == 2
    assert 'id="f-kernel"' in page and 'id="f-backing"' in page and 'class="f-verdict"' in page
    data = json.loads(re.search(r'<script id="cells" type="application/json">(.*?)</script>',
                                page, re.S).group(1))
    assert data["fields"][0] == "verdict" and data["kernels"] == ["k1", "k2"]
    assert "zeros <after> remount\nline two" in data["strings"]
    # Every case is in its cell: its id is the cell's prefix and its own suffix.
    strings = data["strings"]
    ids = {strings[prefix] + "." + strings[c[0]] for prefix, *cs in data["cells"] for c in cs}
    assert ids == {c["id"] for d in two for c in d["cases"]}
    # One coloured td per stored cell, in the same order.
    assert len(re.findall(r'<td class="v-', page)) == len(data["cells"])
    # The refusal's errno differs between the kernels; the lost write does not.
    assert 'class="v-pass diff"' in page and 'class="v-fail"' in page
    # The failures by rule, with a link to an example that opens its cell.
    assert "<b>10-io_uring.toml:4</b>, 4 cases" in page
    assert 'data-case="io_uring.ext4.private.rw.hole.none.file-to-pin k1"' in page


def parse_ktap(text):
    lines = text.splitlines()
    assert lines[0] == "KTAP version 1"
    plan = int(re.fullmatch(r"1\.\.(\d+)", lines[1]).group(1))
    results_ = [re.fullmatch(r"(ok|not ok) (\d+) ([^#]+?)(?: # (\w+)(?: (.*))?)?", line)
                for line in lines if re.match(r"(not )?ok ", line)]
    assert all(results_)
    assert [int(m.group(2)) for m in results_] == list(range(1, plan + 1))
    return lines, {m.group(3): (m.group(1), m.group(4), m.group(5)) for m in results_}


def test_ktap_plan_directives_and_totals(two):
    text = ktap.render(two[1])
    lines, by_id = parse_ktap(text)
    assert all(not line.startswith(" ") for line in lines)
    got = {two[1]["cases"][i]["verdict"]: by_id[c["id"]]
           for i, c in enumerate(two[1]["cases"])}
    assert got["pass"] == ("ok", None, None)
    assert got["fail"][:2] == ("not ok", None)
    assert got["xfail"] == ("ok", "XFAIL", "known: dio_warn_stale_pagecache()")
    assert got["xpass"][:2] == ("ok", "XPASS")
    assert got["skip"] == ("ok", "SKIP", "needs root: loop devices (run as root)")
    assert got["error"] == ("not ok", "ERROR", "OSError: [Errno 5] EIO")
    assert lines[-1] == "# Totals: pass:6 fail:1 xfail:1 xpass:1 skip:1 error:1"
    fail_at = next(i for i, line in enumerate(lines)
                   if line.startswith("not ok") and "#" not in line)
    assert lines[fail_at - 5:fail_at] == [
        "# detail: zeros <after> remount\\nline two",
        "# reason: expected coherent, saw lost-write: zeros <after> remount",
        "# spec: 10-io_uring.toml:4",
        "# dmesg: WARNING: CPU: 0 PID: 1 at mm/gup.c:1 <script>alert(1)</script>",
        "# taint: W"]


def test_ktap_gives_a_repeated_skip_reason_whole_once(two):
    cases = [case("rdma", b, "shared", "hole", "none", "admission", "skip", None,
                  reason="no RDMA device: modprobe rdma_rxe") for b in ("memfd", "ext4")]
    lines = ktap.render(doc("6.18", cases)).splitlines()
    assert lines[3].endswith(" # SKIP no RDMA device: modprobe rdma_rxe")
    assert lines[4].endswith(" # SKIP no RDMA device (as above)")
    assert ktap.shortened("x" * 100) == "x" * 80 + "... (as above)"


def test_ktap_of_several_kernels_nests_one_subtest_each(two):
    lines = ktap.render_many(two).splitlines()
    assert lines[:3] == ["KTAP version 1", "1..2", "  KTAP version 1"]
    assert [line for line in lines if not line.startswith(" ")][2:] == [
        "not ok 1 6.1.0 x86_64", "not ok 2 6.18.0 x86_64"]


def test_kcidb_validates_and_a_broken_path_does_not(two):
    sub = kcidb.validate(kcidb.build(two[1]))
    assert sub["version"] == {"major": 5, "minor": 3}
    assert len(sub["checkouts"]) == len(sub["builds"]) == 1
    assert len(sub["tests"]) == len(two[1]["cases"])
    assert all(KCIDB_PATH.match(t["path"]) for t in sub["tests"])
    assert "null" not in json.dumps(sub)
    status = {t["misc"]["verdict"]: t["status"] for t in sub["tests"]}
    assert status == {"pass": "PASS", "fail": "FAIL", "xfail": "PASS", "xpass": "PASS",
                      "skip": "SKIP", "error": "ERROR"}
    assert kcidb.build(two[1]) == sub  # ids are stable
    broken = copy.deepcopy(sub)
    broken["tests"][0]["path"] = "io_uring..bad path"
    with pytest.raises(jsonschema.ValidationError):
        kcidb.validate(broken, every_test=True)
    # A run checks one test of each shape: the broken one is its status's longest path.
    broken["tests"][0]["path"] += "..bad path"
    with pytest.raises(jsonschema.ValidationError):
        kcidb.validate(broken)


def test_kcidb_caps_log_excerpt_and_keeps_kernels_apart(two):
    two[1]["cases"][7]["dmesg"] = "é" * 20000
    sub = kcidb.validate(kcidb.build_all(two))
    assert len({c["id"] for c in sub["checkouts"]}) == 2
    assert max(len(t.get("log_excerpt", "").encode()) for t in sub["tests"]) \
        <= kcidb.LOG_EXCERPT_MAX
    # Only what went wrong carries a log: a pass's reason is the spec's own text.
    assert {t["misc"]["verdict"] for t in sub["tests"] if "log_excerpt" in t} \
        == {"fail", "error", "xfail", "xpass"}


def test_diff_finds_changes_and_says_none_for_identical(two):
    old, new = two
    changes = diff.diff(old, new)
    kinds = {c.id.split(".", 2)[1] + "." + c.kind for c in changes}
    assert kinds == {"ext4.changed", "memfd.new"}
    text = diff.render(changes, old, new)
    assert "6.1.0 x86_64" in text and "6.18.0 x86_64" in text
    assert "pass refused EOPNOTSUPP -> pass refused EFAULT" in text
    new["cases"][0]["verdict"] = "fail"
    assert "Regressions (1):" in diff.render(diff.diff(old, new), old, new)
    assert diff.diff(old, old) == []
    assert diff.render([], old, old).endswith("no change\n")


def test_merge_of_two_shards_is_their_union(tmp_path, two):
    full = two[1]
    first = doc("6.18.0", full["cases"][:6], started=100.0)
    second = doc("6.18.0", full["cases"][5:], started=50.0)
    second["cases"][0] = dict(second["cases"][0], detail="later shard wins")
    second["finished"] = 500.0
    second["environment"] = {"accelerator": "kvm"}
    results.write(tmp_path / "a", first)
    results.write(tmp_path / "b", second)
    results.write(tmp_path / "c", two[0])
    docs = merge.load_many([tmp_path / "a", tmp_path / "b" / results.FILE, tmp_path / "c"])
    assert [d["kernel"]["release"] for d in docs] == ["6.18.0", "6.1.0"]
    merged = docs[0]
    assert [c["id"] for c in merged["cases"]] == [c["id"] for c in full["cases"]]
    assert merged["totals"] == full["totals"]
    assert (merged["started"], merged["finished"]) == (50.0, 500.0)
    assert merged["environment"] == {"accelerator": "kvm"}
    assert next(c for c in merged["cases"] if c["detail"] == "later shard wins")
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match="not a pinhole results file"):
        merge.load_many([tmp_path / "bad.json"])


def test_a_matrix_that_fails_to_render_is_named_and_the_rest_written(tmp_path, two,
                                                                     monkeypatch, capfd):
    def broken(docs):
        raise KeyError("no such column")

    monkeypatch.setattr(html, "render", broken)
    with pytest.raises(RuntimeError, match=r"^writing matrix.html failed"):
        write_all(tmp_path, two)
    assert "KeyError: 'no such column'" in capfd.readouterr().err
    assert (tmp_path / "matrix.md").exists() and (tmp_path / "kcidb.json.gz").exists()


def test_write_all_and_summary(tmp_path, two):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "kcidb.json").write_text("{}")  # an older run's
    paths = write_all(tmp_path / "one", two[1:])
    assert [p.name for p in paths] == list(FILES)
    assert not (tmp_path / "one" / "kcidb.json").exists()
    parse_ktap((tmp_path / "one" / "results.ktap").read_text())
    paths = write_all(tmp_path / "two", two)
    assert len(kcidb.load(paths[-1])["builds"]) == 2
    # summary.md of two kernels against a baseline of the first: counts per kernel, and the
    # second kernel has no baseline of its own.
    write_all(tmp_path / "two", two, baseline=two[:1])
    md = (tmp_path / "two" / "summary.md").read_text()
    assert "- 10-io_uring.toml:4, 4 cases (6.1.0: 2, 6.18.0: 2): OSError: [Errno 5] EIO" in md
    assert "  rule: expected coherent, saw lost-write: zeros <after> remount" in md
    assert "## Against the baseline 6.1.0 x86_64 (2023-11-14 22:13:20 UTC), for 6.1.0" in md
    assert md.count("## Against the baseline") == 1
    two[1]["environment"] = {"spec": "debian:6.18", "package": "6.18.0-1", "accelerator": "kvm"}
    assert "- 6.18.0 x86_64 (debian:6.18, 6.18.0-1, kvm): FAIL (exit 1): 11 cases: " \
        in mail.render(two)
    assert "- 2 io_uring cases (6.1.0: 1, 6.18.0: 1): needs root: loop devices" in md
    text = summary(two)
    assert "pinhole: 6.1.0 x86_64: FAIL (exit 1)" in text
    assert "failed, by spec rule (1 rule):" in text
    assert "  10-io_uring.toml:4: 4 cases, OSError: [Errno 5] EIO (and 1 other)" in text
    assert "    io_uring.ext4.shared.rw.hole.none.pin-to-file (6.18.0)" in text
    assert "  2 io_uring cases skipped: needs root: loop devices (run as root)" in text
    assert text.splitlines()[-2].startswith("pinhole: 6.18.0 x86_64: FAIL (exit 1) in 2s; 11 cases")


def killed_run(tmp_path, ids_begun):
    """A progress.jsonl as a SIGKILLed run leaves it: a planned count, two finished cases,
    and ids that began and never ended."""
    done = cases_618()[:2]
    lines = [{"run": {"kernel": {"release": "6.18", "version": "#1", "machine": "x86_64"},
                      "started": 1_700_000_000.0}}, {"planned": 40}]
    for c in done:
        lines += [{"begin": c["id"]}, {"case": c}]
    lines += [{"begin": i} for i in ids_begun]
    (tmp_path / results.PROGRESS).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


def test_a_known_skips_record_is_the_same_from_its_case_its_id_and_a_result():
    """The controller makes it from the plan's Case, a reader from its id; either is the record
    a Result would give, field for field and in its order."""
    case = Case.from_id("rdma.ext4.shared.rw.hole.none.admission")
    want = Result(case, "skip", reason="needs rdma_rxe").as_dict()
    for made in (results.skip_record(case, "needs rdma_rxe"),
                 results.skip_record(case.id, "needs rdma_rxe")):
        assert made == want and list(made) == list(want)
    assert list(case.dimensions()) == list(results.DIMENSIONS)


def test_the_cases_known_to_skip_come_back_from_progress_jsonl_as_whole_records(tmp_path):
    """The controller writes them as ids by reason, one line a reason (a long one in pieces)."""
    skipped = [(f"rdma.ext4.shared.rw.hole.none.{check}", "needs rdma_rxe: modprobe rdma_rxe")
               for check in ("admission", "zeropage")]
    long = "needs /dev/udmabuf " + "x" * framing.MAX_WRITE  # more than a write: in pieces
    skipped += [(f"udmabuf.memfd.{m}.rw.hole.none.admission", long)
                for m in ("shared", "private")]
    progress = results.Progress(tmp_path, {"kernel": {}, "started": 1.0})
    progress.skipped(skipped)
    progress.close()
    lines = (tmp_path / results.PROGRESS).read_text().splitlines()
    assert len(lines) > 3 and all(len(line) < framing.MAX_WRITE for line in lines)
    _, recs, cut_off = results.read_progress(tmp_path)
    assert sorted(recs, key=lambda r: r["id"]) == sorted(
        (results.skip_record(i, why) for i, why in skipped), key=lambda r: r["id"])
    assert not cut_off and recs[0]["pin"] in ("rdma", "udmabuf") and recs[0]["spec"] == []


def test_a_killed_run_is_incomplete_in_every_report(tmp_path):
    running = "io_uring.ext4.shared.rw.hole.none.admission"
    out = killed_run(tmp_path, [running])
    (doc,) = merge.load_many([out])
    assert doc["incomplete"].startswith("the run died before it finished: 2 of 40 cases")
    cut = next(c for c in doc["cases"] if c["id"] == running)
    assert cut["verdict"] == "error" and "died" in cut["reason"]
    assert results.run_exit(doc) == results.EXIT_FAIL
    written = {p.name: p.read_text() for p in write_all(out, [doc]) if p.suffix != ".gz"}
    assert "1..40" in written["results.ktap"].splitlines()[1]
    assert "# INCOMPLETE: the run died" in written["results.ktap"]
    assert re.search(rf"^not ok \d+ {re.escape(running)} # ERROR ", written["results.ktap"], re.M)
    assert "**INCOMPLETE: the run died" in written["matrix.md"]
    assert written["summary.md"].splitlines()[1].startswith("INCOMPLETE: the run died")
    assert "INCOMPLETE: the run died" in written["matrix.html"]
    build = kcidb.load(out / "kcidb.json.gz")["builds"][0]
    assert build["comment"].startswith("INCOMPLETE") and build["misc"]["incomplete"]
    assert "INCOMPLETE: the run died" in summary([doc])


def test_pinhole_report_of_a_killed_run_exits_1(tmp_path):
    import subprocess
    import sys

    out = killed_run(tmp_path, ["io_uring.ext4.shared.rw.hole.none.admission"])
    r = subprocess.run([sys.executable, "-m", "conformance.cli", "report", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "INCOMPLETE" in r.stdout, r.stdout + r.stderr


def test_a_record_is_gzipped_and_an_older_pinholes_plain_one_still_reads(tmp_path):
    d = doc("6.18", cases_618())
    record = results.write(tmp_path / "new", d)
    assert record.read_bytes()[:2] == b"\x1f\x8b" and record.name == "results.json.gz"
    old = tmp_path / "old"
    old.mkdir()
    (old / results.PLAIN).write_bytes(gzip.decompress(record.read_bytes()))
    assert results.record_in(old) == old / results.PLAIN
    (loaded,) = merge.load_many([old])
    assert loaded["cases"] == results.load(record)["cases"] == d["cases"]
    results.write(old, d)  # a new run in an old run's directory leaves one record
    assert sorted(p.name for p in old.iterdir()) == [results.FILE]
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(record.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a whole gzip file"):
        results.load(cut)


def test_an_old_results_json_does_not_win_over_a_newer_progress(tmp_path):
    results.write(tmp_path, doc("6.18", cases_618()))
    import os
    os.utime(tmp_path / results.FILE, (1, 1))
    killed_run(tmp_path, [])
    (loaded,) = merge.load_many([tmp_path])
    assert len(loaded["cases"]) == 2 and loaded["incomplete"]


def test_item_ids_are_only_group_and_control_ids():
    from conformance.plugin import param_id_of

    node = "cases/test_controls.py::test_coherence_detector_reports_a_disconnected_pin"
    assert param_id_of(f"{node}[file-to-pin]") is None
    assert param_id_of("cases/test_matrix.py::test_group[NOTSET]") is None
    assert param_id_of(f"{node}[control.coherence.pin-to-file]") == "control.coherence.pin-to-file"
    group = "io_uring.memfd.shared.rw.hole"
    assert param_id_of(f"cases/test_matrix.py::test_group[{group}]") == group
    assert param_id_of(f"cases/test_matrix.py::test_group[{group}.none]") is None


def test_matrix_recovery_skips_stray_ids_and_records_a_panic():
    from conformance import multikernel, vm

    res = vm.VmResult("panic", None, "", "", "Kernel panic - not syncing: sysrq", "tcg",
                      1.0, 1.0, 2.0, [])
    real = "io_uring.memfd.shared.rw.hole.none.admission"
    records = multikernel.cut_off(["file-to-pin", "NOTSET", real, "control.zeropage.anon"],
                                    res)
    assert [r["id"] for r in records] == [real, "control.zeropage.anon"]
    assert records[0]["verdict"] == "fail" and "panicked" in records[0]["reason"]
    assert "Kernel panic" in records[0]["dmesg"]


# Recorded console lines of Debian 6.12's and 6.1's panics (the header's format changed in 6.10).
PANIC_612 = ("sysrq: Trigger a crash\nKernel panic - not syncing: sysrq triggered crash\n"
             "CPU: 1 UID: 0 PID: {pid} Comm: {comm} Not tainted 6.12.118+deb13-amd64 #1  Debian\n")
PANIC_61 = ("BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
            "CPU: 0 PID: {pid} Comm: {comm} Not tainted 6.1.0-41-amd64 #1 Debian 6.1.158-1\n"
            "Kernel panic - not syncing: Fatal exception\n")


@pytest.mark.parametrize("console", [PANIC_612, PANIC_61], ids=["6.12", "6.1"])
@pytest.mark.parametrize(("pid", "comm", "charged"), [
    (221, "python3", "a"),  # the worker's own process
    (230, "pinhole-221", "a"),  # its mutation thread
    (240, "iou-wrk-222", "b"),  # io_uring's worker for the other
    (57, "kworker/1:2", "ab"),  # no worker's task: both charged
])
def test_a_panic_with_two_workers_is_charged_to_the_one_it_happened_in(
        tmp_path, console, pid, comm, charged):
    from conformance import multikernel, vm

    cells = {"a": "io_uring.memfd.shared.rw.hole.none", "b": "io_uring.ext4.shared.rw.hole.pwrite"}
    progress = [{"run": {"kernel": {}, "started": 0}},
                {"begin": cells["a"], "cases": [f"{cells['a']}.file-to-pin"], "pid": 221},
                {"begin": cells["b"], "cases": [f"{cells['b']}.file-to-pin",
                                                f"{cells['b']}.pin-to-file"], "pid": 222}]
    (tmp_path / results.PROGRESS).write_text("".join(json.dumps(e) + "\n" for e in progress))
    _, _, running = results.read_progress(tmp_path)
    res = vm.VmResult("panic", None, "", "", console.format(pid=pid, comm=comm), "tcg",
                      1.0, 1.0, 2.0, [])
    mine, others = multikernel.charged(running, results.running_pids(tmp_path), res)
    assert {i.rsplit(".", 1)[0] for i in mine} == {cells[k] for k in charged}
    assert sorted(mine + others) == sorted(running)
    records = {r["id"]: r for r in multikernel.cut_off(mine, res, others)}
    for i in mine:
        assert records[i]["verdict"] == "fail" and "panicked while this case ran" in (
            records[i]["reason"])
        assert ("more cell(s) in other workers" in records[i]["reason"]) == (len(charged) > 1)
    for i in others:
        assert records[i]["verdict"] == "error" and records[i]["reason"].startswith(
            f"cut off: the kernel panicked in {cells[charged]}, another worker's cell")


@pytest.mark.parametrize("console", [PANIC_612, PANIC_61], ids=["6.12", "6.1"])
def test_a_boot_lost_to_a_panic_keeps_its_panic_and_task_lines(console):
    from conformance import multikernel, vm

    res = vm.VmResult("panic", None, "", "", "[    3.1] early noise\n"
                      + console.format(pid=1, comm="swapper/0"), "tcg", 1.0, 1.0, 2.0, [])
    *oops, said, task = multikernel.panic_lines(res)
    assert said.startswith("Kernel panic - not syncing: ") and "PID: 1 Comm: swapper/0" in task
    assert oops == [line for line in console.splitlines() if line.startswith("BUG: ")]
    assert multikernel.panic_lines(vm.VmResult("timeout", None, "", "", console, "tcg",
                                               1.0, 1.0, 2.0, [])) == []


OOPS_IN_INTERRUPT = """\
[    2.801234] general protection fault, probably for non-canonical address 0xdead000000000122
[    2.802000] CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.118+deb13-amd64 #1  Debian
[    2.803000] RIP: 0010:__list_del_entry_valid_or_report+0x1f/0xc0
[    2.804000] Call Trace:
[    2.804100]  <IRQ>
[    2.804200]  ? die_addr+0x36/0x90
[    2.804300]  ? exc_general_protection+0x1c5/0x420
[    2.804400]  run_timer_softirq+0x8a/0x1b0
[    2.804500]  handle_softirqs+0xd8/0x2f0
[    2.804600]  __irq_exit_rcu+0xa5/0xc0
[    2.804700]  irq_exit_rcu+0xe/0x20
[    2.804800]  sysvec_apic_timer_interrupt+0x70/0x80
[    2.804900]  </IRQ>
[    2.860000] Kernel panic - not syncing: Fatal exception in interrupt
"""


def test_a_boot_lost_to_an_oops_keeps_where_it_happened():
    """An early-boot panic under TCG (seen at 2.86 s, in swapper/0) is a kernel's, not a
    case's: what went wrong and where is what its lost_boots entry must say."""
    from conformance import multikernel, vm

    res = vm.VmResult("panic", None, "", "", OOPS_IN_INTERRUPT, "tcg", 1.0, 1.0, 2.0, [])
    kept = [line.split("] ", 1)[1].strip() for line in multikernel.panic_lines(res)]
    assert kept == [
        "general protection fault, probably for non-canonical address 0xdead000000000122",
        "RIP: 0010:__list_del_entry_valid_or_report+0x1f/0xc0",
        "run_timer_softirq+0x8a/0x1b0", "handle_softirqs+0xd8/0x2f0",
        "__irq_exit_rcu+0xa5/0xc0", "irq_exit_rcu+0xe/0x20",
        "Kernel panic - not syncing: Fatal exception in interrupt",
        "CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.118+deb13-amd64 #1  Debian"]


# Debian 6.12 booted with mem=40M under TCG (tests/test_vm.py), 2026-11-28, its end (three
# long lines left out, one cut): panic() called, no oops; the trace printed inside panic().
PANIC_NO_OOPS = """\
[    0.892893] Out of memory and no killable processes...
[    0.893127] Kernel panic - not syncing: System is deadlocked on memory
[    0.893296] CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.118+deb13-amd64 #1  Debian
[    0.893296] Call Trace:
[    0.893296]  <TASK>
[    0.893296]  dump_stack_lvl+0x5d/0x80
[    0.893296]  vpanic+0xc5/0x283
[    0.893296]  panic+0x6c/0x6c
[    0.893296]  out_of_memory.cold+0x2d/0x78
[    0.893296]  __alloc_pages_slowpath.constprop.0+0xc27/0xdc0
[    0.893296]  __alloc_pages_noprof+0x2fb/0x310
[    0.893296]  alloc_pages_mpol_noprof+0xd7/0x1c0
[    0.893296]  allocate_slab+0x374/0x4a0
[    0.893296]  ? kmem_cache_alloc_lru_noprof+0x10e/0x300
[    0.893296]  ___slab_alloc+0x7c0/0xc80
[    0.893296]  ? __d_alloc+0x11d/0x220
[    0.893296]  ? alloc_inode+0x97/0xc0
[    0.893296]  ? __d_add+0xf6/0x1b0
"""


def test_a_boot_lost_to_a_panic_without_an_oops_keeps_the_panic_then_who_called_it():
    from conformance import multikernel, vm

    res = vm.VmResult("panic", None, "", "", PANIC_NO_OOPS, "tcg", 1.0, 1.0, 2.0, [])
    kept = [line.split("] ", 1)[1].strip() for line in multikernel.panic_lines(res)]
    assert kept == [
        "Kernel panic - not syncing: System is deadlocked on memory",
        "out_of_memory.cold+0x2d/0x78", "__alloc_pages_slowpath.constprop.0+0xc27/0xdc0",
        "__alloc_pages_noprof+0x2fb/0x310", "alloc_pages_mpol_noprof+0xd7/0x1c0",
        "CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.118+deb13-amd64 #1  Debian"]


def test_a_hang_is_charged_to_every_running_cell():
    from conformance import multikernel, vm

    res = vm.VmResult("timeout", None, "", "", PANIC_612.format(pid=221, comm="python3"),
                      "tcg", 1.0, 1.0, 2.0, [])
    running = ["io_uring.memfd.shared.rw.hole.none.file-to-pin",
               "io_uring.ext4.shared.rw.hole.pwrite.file-to-pin"]
    assert multikernel.charged(running, {running[0]: 221, running[1]: 222}, res) == (
        running, [])


def test_a_lost_vm_is_not_ok_over_its_plan():
    lost = doc("6.1", [])
    lost["incomplete"] = "the VM ended without a status (virtme-run: not found)"
    text = ktap.render_many([doc("6.18", cases_618()[:1]), lost])
    assert re.search(r"^not ok 2 6\.1\b.* # ERROR .*virtme-run: not found", text, re.M), text
    assert results.run_exit(lost) == results.EXIT_HARNESS


def test_controls_render_in_every_report(tmp_path):
    ctl = results.control("control.zeropage.anon", "fail", "the control failed", "detail")
    d = doc("6.18", cases_618()[:1] + [ctl])
    assert results.exit_code(d["cases"]) == results.EXIT_FAIL
    written = {p.name: p.read_text() for p in write_all(tmp_path, [d]) if p.suffix != ".gz"}
    assert "not ok 1 control.zeropage.anon" in written["results.ktap"]
    assert "## control" in written["matrix.md"]
    kc = kcidb.load(tmp_path / "kcidb.json.gz")["tests"]
    assert any(t["path"] == "control.zeropage.anon" and t["status"] == "FAIL" for t in kc)
    assert KCIDB_PATH.match("control.coherence.file-to-pin")


def test_passing_controls_do_not_turn_an_all_skip_run_into_a_pass():
    skip = case("io_uring", "ext4", "private", "hole", "none", "admission", "skip", None)
    ctl = results.control("control.zeropage.anon", "pass", "saw it")
    assert results.exit_code([skip, ctl]) == results.EXIT_SKIP


def test_a_lost_vm_says_why_in_its_reports(tmp_path):
    from conformance import debian, multikernel, vm

    kernel = debian.Kernel("6.12.1", "6.12.1-1", tmp_path / "vmlinuz", None)
    res = vm.VmResult("lost", None, "", "", "/bin/sh: 1: virtme-run: not found", "tcg", 1.0, 0.0,
                      1.0, [], why="/bin/sh: 1: virtme-run: not found")
    lost = multikernel.collect(kernel, tmp_path, res, 1_700_000_000.0)
    assert "virtme-run: not found" in lost["incomplete"]
    text = ktap.render_many([lost])
    assert re.search(r"^not ok 1 6\.12\.1 .*# ERROR .*virtme-run: not found", text, re.M), text
    assert "virtme-run: not found" in summary([lost])


def test_a_guest_run_that_stopped_before_its_results_says_why(tmp_path):
    """pytest in the guest exiting on a usage error (a bad -p or -k) must not leave only
    "the run in the guest failed": its own error line goes into the reports."""
    from conformance import debian, multikernel, vm

    kernel = debian.Kernel("6.12.1", "6.12.1-1", tmp_path / "vmlinuz", None)
    error = 'ERROR: Error importing plugin "nosuch": No module named \'nosuch\''
    res = vm.VmResult("failed", 4, "", f"{error}\n\n", "", "tcg", 1.0, 0.0, 1.0, [])
    failed = multikernel.collect(kernel, tmp_path, res, 1_700_000_000.0)
    assert failed["incomplete"].startswith(f"the run in the guest failed ({error})")
    silent = vm.VmResult("failed", 3, "", "", "", "tcg", 1.0, 0.0, 1.0, [])
    assert "(it printed nothing)" in multikernel.collect(kernel, tmp_path, silent, 0.0)[
        "incomplete"]


# A full host run: every pin, backing, mapping, state and mutation, as many cases as a real run
# (36,504 and the controls), with the long reasons and skips of a real machine that has no
# RDMA, udmabuf, gup_test or fsdax, and a few failures, known limitations and an error.
ACCESS = {"io_uring": ("rw",), "udmabuf": ("rw",), "vmsplice": ("ro",)}
LONG = ("A long-term pin of a MAP_SHARED page holds the page-cache folio itself (mm/gup.c "
        "__get_user_pages(), FOLL_PIN|FOLL_LONGTERM): writes through the file and through the pin "
        "meet in one page, and eviction skips the pinned folio.")
UNAVAILABLE = {
    "rdma": "no RDMA device: modprobe rdma_rxe (and iproute2's rdma), or boot a kernel with it",
    "udmabuf": "no /dev/udmabuf: modprobe udmabuf, or a kernel with CONFIG_UDMABUF",
    "gup_test": "no /sys/kernel/debug/gup_test: needs a kernel built with CONFIG_GUP_TEST=y",
    "ext4-dax": "no fsdax-capable pmem device: boot with memmap=512M!1G and modprobe nd_pmem",
    "xfs-dax": "no fsdax-capable pmem device: boot with memmap=512M!1G and modprobe nd_pmem",
    "cgroup-reclaim": "needs the memory controller on cgroup v2: boot with "
                      "systemd.unified_cgroup_hierarchy=1",
}


PINS = ("io_uring", "udmabuf", "rdma", "gup_test", "vmsplice", "odirect")
BACKINGS = ("memfd", "memfd-hugetlb", "tmpfs", "hugetlbfs", "ext4", "xfs", "btrfs", "ext4-dax",
            "xfs-dax")
MAPPINGS = ("shared", "private")
STATES = ("hole", "faulted-hole", "stored", "written", "unwritten", "punched")
MUTATIONS = ("none", "pwrite", "store", "pin-write", "truncate-down", "truncate-down-up",
             "punch-hole", "madv-remove", "zero-range", "collapse-range", "insert-range",
             "fallocate", "madv-dontneed", "madv-pageout", "madv-cold", "fadvise-dontneed",
             "drop-caches", "cgroup-reclaim", "odirect-write", "odirect-read", "fsync-msync",
             "copy-file-range", "reflink", "fork-write", "munmap-mmap")
CHECKS = ("admission", "zeropage", "file-to-pin", "pin-to-file")
PIN_CHECKS = CHECKS[:2]


FAILING = {("io_uring", "ext4", "truncate-down"): "stale-cache",
           ("io_uring", "tmpfs", "drop-caches"): "lost-write",
           ("odirect", "btrfs", "fork-write"): "resurrected"}


def full_size_cases():
    out = []
    for pin in PINS:
        for backing in BACKINGS:
            for mapping in MAPPINGS:
                for access in ACCESS.get(pin, ("ro", "rw")):
                    for state in STATES:
                        for mutation in MUTATIONS:
                            for check in CHECKS:
                                if check in PIN_CHECKS and mutation != "none":
                                    continue
                                # gup_test's pins, like read-only ones, are never written.
                                no_writes = access == "ro" or pin == "gup_test"
                                if no_writes and (check == "pin-to-file"
                                                  or mutation == "pin-write"):
                                    continue
                                out.append(full_size_case(pin, backing, mapping, access, state,
                                                          mutation, check))
    return out


def full_size_case(pin, backing, mapping, access, state, mutation, check):
    family = MUTATIONS.index(mutation) // 5
    outcome = ("pinned" if check in ("admission", "zeropage")
               else "coherent" if mapping == "shared" else "detached")
    c = case(pin, backing, mapping, state, mutation, check, "pass", outcome, access=access,
             reason=f"{LONG} (rule {family} of {mapping})",
             spec=[f"/x/spec/10-coherence.toml:{4 + 8 * (mapping == 'private')}",
                   f"/x/spec/20-mutations.toml:{4 + 8 * family}"],
             detail="the pin sees what write() put in the file", duration_s=0.0123456)
    c["id"] = ".".join(c[k] for k in ("pin", "backing", "mapping", "access", "state", "mutation",
                                       "check"))
    why = UNAVAILABLE.get(pin) or UNAVAILABLE.get(backing) or UNAVAILABLE.get(mutation)
    if why:
        c.update(verdict="skip", outcome=None, expected=None, spec=[], detail="", reason=why)
    elif (pin, backing, mutation) in FAILING:
        seen = FAILING[pin, backing, mutation]
        c.update(verdict="fail", outcome=seen,
                 reason=f"expected {outcome}, saw {seen}: zeros. Expected because: {LONG}")
    elif pin == "odirect" and backing == "xfs" and mutation == "odirect-write":
        c.update(verdict="xfail", outcome="detached", spec=c["spec"] + ["/x/25-limitations.toml:5"],
                 reason="An O_DIRECT write invalidates the cached range afterwards.")
    elif pin == "vmsplice" and backing == "btrfs" and mutation == "reflink" and state == "hole":
        c.update(verdict="error", outcome=None, spec=[],
                 reason="the case broke in call: OSError: [Errno 28] No space left on device")
    return c


def full_size(release="6.18.0", started=1_700_000_000.0):
    controls = [results.control(f"control.zeropage.{v}", "pass", "saw it") for v in ("anon", "thp")]
    d = doc(release, full_size_cases() + controls, started)
    d["finished"] = started + 1234.5
    return d


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A full-size run's reports, written once for the tests below."""
    out = tmp_path_factory.mktemp("full")
    run = full_size()
    baseline = full_size("6.12.0", started=1_600_000_000.0)
    for c in baseline["cases"]:
        if c["verdict"] == "fail":
            c.update(verdict="pass", outcome="coherent")
    write_all(out, [run], baseline=[baseline])
    return out, run


def test_full_size_sample_is_a_real_runs_size(full):
    _, run = full
    assert len(run["cases"]) == 36_504 + 2
    assert {"fail", "xfail", "error", "skip", "pass"} == {c["verdict"] for c in run["cases"]}


def test_full_size_matrix_md_fits_a_mail(full):
    out, _ = full
    lines = (out / "matrix.md").read_text().splitlines()
    assert max(map(len, lines)) <= 100
    assert len(lines) < 1000
    text = "\n".join(lines)
    assert "## rdma: all 8,424 cases skipped" in text
    assert "### io_uring: pin checks, data, size and extents" in text
    assert re.search(r"^ext4 +shared +all +✓P +.*✗S", text, re.M)


def test_full_size_mail_fits_a_mail(full):
    """The mail body of a full-size run: at most 80 lines of at most 100 characters."""
    _, run = full
    lines = mail.render([run]).splitlines()
    assert len(lines) <= 80 and max(map(len, lines)) <= 100


def test_full_size_summary_md_fits_a_reply(full):
    out, _ = full
    text = (out / "summary.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 80 and max(map(len, lines)) <= 100
    assert "- result: FAIL (exit 1): 36,506 cases: " in text
    assert "## Failures by spec rule: 86 cases, 4 rules" in text
    # Largest group first, with its count, what was seen, one example and the rule's text.
    at = lines.index("- 20-mutations.toml:36, 36 cases: expected detached, saw resurrected "
                     "(and 1 other)")
    assert lines[at + 1] == "  e.g. odirect.btrfs.private.ro.faulted-hole.fork-write.file-to-pin"
    assert lines[at + 2].startswith("  rule: A long-term pin of a MAP_SHARED page holds")
    assert "- error (no spec rule), 2 cases: the case broke in call: OSError: [Errno 28]" in text
    assert "## Known kernel limitations that showed (xfail): 36 cases" in text
    assert "- 25-limitations.toml:5, 36 cases: An O_DIRECT write invalidates the cached" in text
    assert "- 8,424 rdma cases: no RDMA device: modprobe rdma_rxe" in text
    assert "- 3,744 ext4-dax, xfs-dax cases: no fsdax-capable pmem device" in text
    # Against the baseline: the fails are regressions, grouped by rule, with an example each.
    assert "## Against the baseline 6.12.0 x86_64" in text
    assert "- 84 regressed, 0 changed, 0 fixed, 0 new, 0 gone" in text
    assert "- 24 regressed under 20-mutations.toml:28: pass coherent -> fail lost-write" in text


def test_full_size_reports_are_small(full, tmp_path):
    out, run = full
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(sizes) == set(FILES)
    assert sizes["matrix.html"] < 2_000_000 and sizes["results.ktap"] < 4_000_000
    assert sizes["kcidb.json.gz"] < 500_000 and sizes["matrix.md"] < 100_000
    # A run of every case, record included, in 10 MB (issue 11); plain, the record alone
    # would be 6 MB.
    record = results.write(tmp_path, run)
    assert record.name == results.FILE and record.stat().st_size < 1_000_000
    assert sum(sizes.values()) + record.stat().st_size < 10_000_000, sizes
    sub = kcidb.load(out / "kcidb.json.gz")
    assert len(sub["tests"]) == 36_506
    kcidb.validate(sub, every_test=True)


def test_matrix_md_packs_families_and_splits_only_a_family_too_wide_alone():
    columns = ["pin", "none", "pwrite", "store", "truncate-down", "truncate-down-up",
               "punch-hole", "madv-remove", "drop-caches"]
    table = grid.Table("io_uring", 1, columns, [], {})
    parts = markdown.split(table, 40, lambda cols: 10 * len(cols))
    assert parts == [(["baseline", "data"], ["pin", "none", "pwrite", "store"]),
                     (["size"], ["truncate-down", "truncate-down-up", "punch-hole", "madv-remove"]),
                     (["reclaim"], ["drop-caches"])]
    parts = markdown.split(table, 30, lambda cols: 10 * len(cols))
    assert parts[2:] == [(["size"], ["truncate-down", "truncate-down-up", "punch-hole"]),
                         (["size", "reclaim"], ["madv-remove", "drop-caches"])]


def test_a_baseline_is_a_run_or_a_matrix_of_runs(tmp_path, two):
    from conformance.reports import load_baseline

    results.write(tmp_path / "run", two[1])
    assert [d["kernel"]["release"] for d in load_baseline(tmp_path / "run")] == ["6.18.0"]
    for d in two:  # pinhole matrix: OUT/<release>/results.json.gz
        results.write(tmp_path / "matrix" / d["kernel"]["release"], d)
    assert [d["kernel"]["release"] for d in load_baseline(tmp_path / "matrix")] == ["6.1.0",
                                                                                  "6.18.0"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.json.gz"):
        load_baseline(tmp_path / "empty")
    # Kernels pair by release; a run of another release pairs with the only baseline.
    assert diff.pairs(two, two[1:]) == [(two[1], two[1])]
    assert diff.pairs(two[:1], two[1:]) == [(two[0], two[1])]
    assert diff.pairs(two[:1], [two[1], two[0]]) == [(two[0], two[0])]


def test_a_matrix_output_reads_as_its_kernels(tmp_path, two):
    """pinhole report, diff and --baseline take `pinhole matrix --out DIR` itself: its
    kernels sit in subdirectories, one killed before its record."""
    results.write(tmp_path / "6.1", two[0])
    (tmp_path / "6.18").mkdir()
    killed_run(tmp_path / "6.18", [])
    docs = merge.load_many([tmp_path])
    assert sorted(d["kernel"]["release"] for d in docs) == sorted(
        [two[0]["kernel"]["release"], "6.18"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no results.json.gz and no progress.jsonl"):
        merge.load_many([tmp_path / "nothing"])


def test_diff_of_a_matrix_output_names_its_kernels_in_one_line(tmp_path, two):
    for d in two:
        results.write(tmp_path / d["kernel"]["release"], d)
    r = subprocess.run([sys.executable, "-m", "conformance.cli", "diff", str(tmp_path),
                        str(tmp_path / two[0]["kernel"]["release"])],
                       capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "holds 2 kernels" in r.stderr and "diff one of its subdirectories" in r.stderr


@pytest.mark.parametrize("kernels", [1, 2])
def test_a_matrix_writes_each_report_once(tmp_path, two, monkeypatch, kernels):
    """One kernel: the side-by-side reports are its own, linked; several: merged anew."""
    from conformance import multikernel
    from conformance import reports as reports_mod

    docs = {d["kernel"]["release"]: d for d in two}

    def fake_run_kernel(spec, out, *args):
        d = docs[spec]
        d["environment"] = {"release": spec, "accelerator": "tcg", "vm": "ok", "vm_status": 0,
                            "seconds": {"fetch": 1.0, "boot": 2.0, "run": 3.0}}
        results.write(out / spec, d)
        reports_mod.write_all(out / spec, [d])
        return d

    monkeypatch.setattr(multikernel, "run_kernel", fake_run_kernel)
    monkeypatch.setattr(multikernel.results, "run_exit", lambda d: 0)
    multikernel.run(list(docs)[:kernels], tmp_path, [], 60)
    kdir = tmp_path / "6.1.0"
    for name in FILES:
        linked = (tmp_path / name).stat().st_ino == (kdir / name).stat().st_ino
        assert linked == (kernels == 1), name
    if kernels == 1:  # a baseline makes summary.md its own file; the others stay links
        multikernel.run(["6.1.0"], tmp_path, [], 60, baseline=two[1:])
        assert "## Against the baseline" in (tmp_path / "summary.md").read_text()
        assert (tmp_path / "matrix.html").stat().st_nlink == 2

        def no_links(src, dst):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
        multikernel.run(["6.1.0"], tmp_path, [], 60)
        assert (tmp_path / "junit.xml").read_bytes() == (kdir / "junit.xml").read_bytes()
