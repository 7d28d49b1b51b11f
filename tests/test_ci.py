"""The drop-in CI files: valid YAML whose every step is a ci/steps.sh step, and the steps
themselves run for real on a small selection (the kernel step as a dry run: it boots VMs)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STEPS = {"setup", "host", "kernel", "merge", "submit"}
TINY = "--backing=memfd --state=hole --mutation=none,pwrite"


def commands(doc: dict) -> list[str]:
    """Every shell line of every job, GitHub (steps: run) or GitLab (script)."""
    jobs = doc["jobs"].values() if "jobs" in doc else [
        v for k, v in doc.items() if isinstance(v, dict) and "script" in v or k == ".pinhole"]
    lines = []
    for job in jobs:
        lines += [s["run"] for s in job.get("steps", []) if "run" in s]
        lines += job.get("script", []) + job.get("before_script", [])
    return lines


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_files_are_yaml_of_known_steps(name):
    doc = yaml.safe_load((ROOT / "ci" / name).read_text())
    lines = commands(doc)
    assert lines
    for line in lines:
        words = line.replace("sudo -E ", "").replace("sudo ", "").split()
        assert words[0] == "ci/steps.sh" and words[1] in STEPS, line


def steps(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tree / "ci" / "steps.sh"), *args], capture_output=True,
                          text=True, env={**os.environ, "SELECTION": TINY, **env})


def test_kernel_step_dry_run():
    r = steps(ROOT, "kernel", "debian:6.12", "1/2", DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    expected = "pinhole matrix --kernel debian:6.12 --out results/debian_6.12-1-2 --shard 1/2"
    assert expected in r.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not (ROOT / ".venv").exists(),
                    reason="needs root and the .venv that helpers/setup.sh makes")
def test_steps_run_for_real(tmp_path):
    tree = tmp_path / "pinhole"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".venv", ".git", "results",
                                                             "pinhole-runs", "ci-matrix"))
    (tree / ".venv").symlink_to(ROOT / ".venv")
    for shard in ("1/2", "2/2"):
        r = steps(tree, "host", shard)
        assert r.returncode == 0, r.stdout + r.stderr
    r = steps(tree, "merge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tree / "results" / "merged" / "kcidb.json.gz").exists()
    r = steps(tree, "submit", KCIDB_PROJECT="", KCIDB_TOPIC="")
    assert r.returncode == 0 and "dry run: kcidb.json is valid" in r.stdout, r.stdout + r.stderr
