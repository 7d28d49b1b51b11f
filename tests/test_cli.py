"""The pinhole command's answers to good and bad input."""

import json
import subprocess
import sys

import pytest


def pinhole(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args,message", [
    (["run", "--backing", "ext5"], "unknown backing 'ext5'; valid: memfd"),
    (["run", "--pin", "dma"], "unknown pin 'dma'; valid: io_uring"),
    (["spec", "--explain", "io_uring.ext4"], "a case id has 7 parts"),
])
def test_bad_names_give_one_line_and_exit_2(args, message):
    r = pinhole(*args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_out_into_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = pinhole("run", "--out", str(f / "x"))
    assert r.returncode == 2 and "cannot write there" in r.stderr


def test_bad_spec_file_names_file_and_line(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[[expect]]\noutcome = "coherent"\nreason = "r"\nbacking = "nfs"\n')
    r = pinhole("run", "--spec", str(f))
    assert r.returncode == 2 and f"{f}:1: unknown backing 'nfs'" in r.stderr


def test_probe_json_and_table():
    doc = json.loads(pinhole("probe", "--json").stdout)
    assert {"kernel", "root", "io_uring", "memlock", "backings", "pins", "kpageflags"} <= set(doc)
    assert set(doc["backings"]) >= {"memfd", "ext4", "xfs-dax"}
    assert all(v["reason"] for v in doc["backings"].values())
    table = pinhole("probe").stdout
    assert "backing memfd" in table and "pin io_uring" in table


def test_explain_cites_the_commit():
    r = pinhole("spec", "--explain", "io_uring.xfs.shared.rw.hole.none.admission",
                "--kernel", "6.18")
    assert r.returncode == 0 and "refused EFAULT" in r.stdout and "8ac268436e6d" in r.stdout
