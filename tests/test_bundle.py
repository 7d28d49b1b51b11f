"""The guest's imports zipped on the host (conformance/bundle.py): what the zip holds, that a
copy of it is what Python imports from, and that it is made once per content."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conformance import bundle, multikernel
from conformance.debian import Kernel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tar, why = bundle.prepare(tmp_path_factory.mktemp("imports"))
    assert tar is not None, why
    return tar


def test_the_zip_holds_whole_pure_python_packages_but_not_pinhole(packed: Path) -> None:
    with zipfile.ZipFile(packed) as z:
        names = z.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {"_pytest", "pluggy", "pytest", "json", "subprocess.pyc"} <= tops
    assert not tops & {"conformance", "cases", "conftest.pyc"}
    assert "cffi" not in tops  # it has C headers beside its modules: zipimport cannot serve it
    assert not tops & {"execnet", "xdist"}  # they read their own source (NEEDS_SOURCE)
    # Whole packages: a module the host never imported is there too.
    assert "_pytest/pytester.pyc" in names and "json/tool.pyc" in names


def test_the_copied_zip_is_what_the_guest_imports(packed: Path, tmp_path: Path) -> None:
    guest_zip = tmp_path / "pinhole-imports.zip"
    shell = bundle.copy_command(packed).replace(bundle.GUEST_ZIP, str(guest_zip))
    probe = ("import _pytest.pytester, json, conformance.plugin; "
             "print(_pytest.pytester.__file__, json.__file__, conformance.plugin.__file__)")
    run = subprocess.run(["sh", "-c", f"{shell}exec {sys.executable} -c '{probe}'"], cwd=ROOT,
                         capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    pytest_file, json_file, plugin_file = run.stdout.split()
    assert pytest_file.startswith(str(guest_zip)) and json_file.startswith(str(guest_zip))
    assert plugin_file == str(ROOT / "conformance" / "plugin.py")  # pinhole's, from the checkout


def test_abi_loads_its_declarations_from_the_zip_unparsed(packed: Path, tmp_path: Path) -> None:
    """The zip's out-of-line module gives conformance.abi the same types as parsing CDEF, and
    pycparser is never imported; one made from other declarations is not used."""
    probe = ("import sys, cffi, conformance.abi as a; p = cffi.FFI(); p.cdef(a.CDEF); "
             "print(type(a.ffi).__module__, 'pycparser' in sys.modules, all("
             "[(n, f.offset) for n, f in a.ffi.typeof('struct ' + s).fields] == "
             "[(n, f.offset) for n, f in p.typeof('struct ' + s).fields] "
             "for s in p.list_types()[1]))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(packed)})
    assert run.stdout.split() == ["_cffi_backend", "True", "True"], run.stderr
    probe = "import sys, conformance.abi; print('pycparser' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(packed)})
    assert run.stdout.split() == ["False"], run.stderr
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "_pinhole_abi.py").write_text("ffi = None\nCDEF_KEY = 'other declarations'\n")
    probe = "import conformance.abi as a; print(type(a.ffi).__module__)"
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(stale)})
    assert run.stdout.split() == ["cffi.api"], run.stderr


def test_xdist_starts_its_workers_with_the_zip_first(packed: Path, tmp_path: Path) -> None:
    """xdist has execnet send source to each worker it starts: from a zip of bytecode alone,
    pytest -n 2 stopped with "INTERNALERROR> OSError: could not get source code"."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "-n", "2", "test_one.py"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(packed)})
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_failed_copy_leaves_the_imports_as_they_were(tmp_path: Path) -> None:
    shell = bundle.copy_command(tmp_path / "missing.zip").replace(bundle.GUEST_ZIP,
                                                                  str(tmp_path / "d.zip"))
    run = subprocess.run(["sh", "-c", f"{shell}echo \"[$PYTHONPATH]\""], capture_output=True,
                         text=True, env={"PATH": os.environ["PATH"]})
    assert run.stdout.strip() == "[]" and run.returncode == 0
    assert bundle.copy_command(None) == ""


def test_one_tar_per_content_and_old_ones_go(packed: Path) -> None:
    cache = packed.parent
    old = cache / f"{bundle.PREFIX}0000000000000000.zip"
    young = cache / f"{bundle.PREFIX}1111111111111111.zip"
    for f in (old, young):
        f.write_bytes(b"")
    os.utime(old, (time.time() - bundle.KEEP_S - 60,) * 2)
    inode = packed.stat().st_ino
    again, _ = bundle.prepare(cache)
    assert again == packed and packed.stat().st_ino == inode  # not written again
    assert not old.exists() and young.exists()  # another checkout's may be in use
    young.unlink()


def test_the_guest_command_copies_it_before_python_starts(packed: Path) -> None:
    kernel = Kernel("6.12.0-test", None, Path("/boot/vmlinuz"), None)
    command = multikernel.guest_command(kernel, Path("/o"), [], packed)
    assert command.index(f"cp {packed} ") < command.index("exec ")
    assert bundle.GUEST_ZIP not in multikernel.guest_command(kernel, Path("/o"), [])


@pytest.mark.parametrize("zipped", [True, False])
def test_the_guest_imports_from_the_zip_then_the_checkout_not_its_directory(
        packed: Path, tmp_path: Path, zipped: bool) -> None:
    """The guest's sys.path: the zip first, then the checkout, then the site directories for a
    Python started without site; the working directory (9p under TCG, a stat for every import
    ahead of the zip) is not on it. Without the zip, the checkout still is."""
    kernel = Kernel("6.12.0-test", None, Path("/boot/vmlinuz"), None)
    probe = ("import json, sys, conformance.plugin; "
             "print(json.dumps([sys.path, sys.flags.no_site, 'site' in sys.modules]))")
    command = multikernel.guest_command(kernel, Path("/o"), [], packed if zipped else None)
    command = command.replace(bundle.GUEST_ZIP, str(tmp_path / "g.zip")).replace(
        "-m conformance.guest /o", f"-c {shlex.quote(probe)}")
    here = tmp_path / "cwd"
    here.mkdir()
    run = subprocess.run(["sh", "-c", command], cwd=here, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    path, no_site, site_imported = json.loads(run.stdout)
    first = [str(tmp_path / "g.zip"), str(ROOT)] if zipped else [str(ROOT)]
    assert path[:len(first)] == first
    assert "" not in path and str(here) not in path
    # Without site (its .pth files cost a second under TCG), and still with what it adds.
    assert no_site == 1 and not site_imported
    # The site directories come after the standard library's, as site puts them: ahead of
    # it, every import from it would first look in each (a 9p round trip under TCG).
    stdlib = path.index(os.path.dirname(os.__file__))
    assert all(path.index(d) > stdlib for d in multikernel.site_dirs())
