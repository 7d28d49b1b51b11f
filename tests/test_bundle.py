"""The guest's imports packed on the host (conformance/bundle.py): what the zip and the tar
hold, that their copies are what the guest's Python imports from, and that each is made once
per content. The guest's commands bind-mount over the checkout: here they run in a mount
namespace of their own."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from conformance import abi, bundle, multikernel
from conformance.debian import Kernel

ROOT = Path(__file__).resolve().parent.parent


def prepared(cache: Path) -> bundle.Packed:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # with bytecode, as in CI
        made, why = bundle.prepare(cache)
    assert made is not None, why
    return made


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> bundle.Packed:
    return prepared(tmp_path_factory.mktemp("imports"))


def own_mounts(command: str) -> list[str]:
    """sh -c command in a mount namespace of its own, so that its binds never reach the
    host's checkout."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (util-linux): the guest's commands bind-mount")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]


def in_tmp(command: str, tmp_path: Path) -> str:
    """A guest's command with its tmpfs paths moved into tmp_path."""
    return command.replace(bundle.GUEST_ZIP, str(tmp_path / "g.zip")).replace(
        bundle.GUEST_PROJECT, str(tmp_path / "project"))


def test_the_zip_holds_whole_pure_python_packages_but_not_pinhole(packed: bundle.Packed) -> None:
    with zipfile.ZipFile(packed.imports) as z:
        names = z.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {"_pytest", "pluggy", "pytest", "json", "subprocess.pyc"} <= tops
    assert not tops & {"conformance", "cases", "conftest.pyc"}
    assert "cffi" not in tops  # it has C headers beside its modules: zipimport cannot serve it
    assert not tops & {"execnet", "xdist"}  # they read their own source (NEEDS_SOURCE)
    # Whole packages: a module the host never imported is there too.
    assert "_pytest/pytester.pyc" in names and "json/tool.pyc" in names


def test_the_project_tar_holds_pinholes_code_with_this_pythons_bytecode(
        packed: bundle.Packed) -> None:
    with tarfile.open(packed.project) as tar:
        names = set(tar.getnames())
    tag = sys.implementation.cache_tag
    assert {"conformance/plugin.py", f"conformance/__pycache__/plugin.{tag}.pyc",
            "cases/test_matrix.py", "conformance/spec/coherence.toml"} <= names
    assert {n.split("/")[0] for n in names} == set(bundle.PROJECT)
    # pytest's rewritten bytecode (tests run with assertion rewriting) is not the guest's.
    assert not [n for n in names if n.endswith(".pyc") and not n.endswith(f".{tag}.pyc")]


def test_the_copies_are_what_the_guest_imports(packed: bundle.Packed, tmp_path: Path) -> None:
    """From the zip, pytest and the standard library; pinhole's own from the unpacked tar,
    bound over the checkout: the same path, another file, whose bytecode is valid for it (its
    recorded mtime and size are the unpacked source's)."""
    shell = in_tmp(bundle.copy_command(packed), tmp_path)
    probe = ("import _pytest.pytester, json, os, conformance.plugin as p; "
             "s = os.stat(p.__file__); b = open(p.__cached__, mode='rb').read(16); "
             "print(_pytest.pytester.__file__, json.__file__, p.__file__, s.st_ino, "
             "int.from_bytes(b[8:12], 'little') == int(s.st_mtime), "
             "int.from_bytes(b[12:16], 'little') == s.st_size)")
    run = subprocess.run(own_mounts(f"{shell}exec {sys.executable} -c {shlex.quote(probe)}"),
                         cwd=ROOT,
                         capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    pytest_file, json_file, plugin_file, inode, mtime_ok, size_ok = run.stdout.split()
    guest_zip = str(tmp_path / "g.zip")
    assert pytest_file.startswith(guest_zip) and json_file.startswith(guest_zip)
    assert plugin_file == str(ROOT / "conformance" / "plugin.py")  # the checkout's path
    copy = tmp_path / "project" / "conformance" / "plugin.py"
    assert int(inode) == copy.stat().st_ino != (ROOT / "conformance" / "plugin.py").stat().st_ino
    assert mtime_ok == size_ok == "True"
    assert not os.path.ismount(ROOT / "conformance")  # the host's checkout: as it was


def test_abi_loads_its_declarations_from_the_zip_unparsed(packed: bundle.Packed,
                                                          tmp_path: Path) -> None:
    """The zip's out-of-line module gives conformance.abi the same types as parsing CDEF, and
    pycparser is never imported; one made from other declarations is not used, and on a host
    the cache's (made by the first process that parsed) serves the next processes."""
    probe = ("import sys, cffi, conformance.abi as a; p = cffi.FFI(); p.cdef(a.CDEF); "
             "print(type(a.ffi).__module__, 'pycparser' in sys.modules, all("
             "[(n, f.offset) for n, f in a.ffi.typeof('struct ' + s).fields] == "
             "[(n, f.offset) for n, f in p.typeof('struct ' + s).fields] "
             "for s in p.list_types()[1]))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(packed.imports)})
    assert run.stdout.split() == ["_cffi_backend", "True", "True"], run.stderr
    probe = "import sys, conformance.abi; print('pycparser' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(packed.imports)})
    assert run.stdout.split() == ["False"], run.stderr
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "_pinhole_abi.py").write_text("ffi = None\nCDEF_KEY = 'other declarations'\n")
    probe = ("import sys, conformance.abi as a; "
             "print(type(a.ffi).__module__, 'pycparser' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(stale), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert run.stdout.split() == ["cffi.api", "True"], run.stderr
    # The process that parsed left the module in the cache; the next one loads it from there.
    cached = tmp_path / "cache" / "pinhole" / "abi" / "_pinhole_abi.py"
    assert f"CDEF_KEY = {abi.CDEF_KEY!r}" in cached.read_text()
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert run.stdout.split() == ["_cffi_backend", "False"], run.stderr
    cached.write_text("raise ImportError('broken')\n")  # a broken cache is parsed past
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert run.stdout.split() == ["cffi.api", "True"], run.stderr
    assert f"CDEF_KEY = {abi.CDEF_KEY!r}" in cached.read_text()


def test_xdist_starts_its_workers_with_the_zip_first(packed: bundle.Packed,
                                                     tmp_path: Path) -> None:
    """xdist has execnet send source to each worker it starts: from a zip of bytecode alone,
    pytest -n 2 stopped with "INTERNALERROR> OSError: could not get source code"."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "-n", "2", "test_one.py"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(packed.imports)})
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_failed_copy_leaves_the_imports_as_they_were(tmp_path: Path) -> None:
    missing = bundle.Packed(tmp_path / "missing.zip", tmp_path / "missing.tar")
    shell = in_tmp(bundle.copy_command(missing), tmp_path)
    run = subprocess.run(own_mounts(f"{shell}echo \"[$PYTHONPATH]\"; "
                                    f"mountpoint -q {ROOT / 'conformance'} || echo unbound"),
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert run.stdout.split() == ["[]", "unbound"] and run.returncode == 0, run.stderr
    assert bundle.copy_command(None) == ""


def test_one_zip_and_tar_per_content_and_old_ones_go(packed: bundle.Packed) -> None:
    cache = packed.imports.parent
    made = [packed.imports, packed.project]
    old = [cache / f"{p}0000000000000000{s}" for p, s in ((bundle.PREFIX, ".zip"),
                                                            (bundle.PROJECT_PREFIX, ".tar"))]
    young = [cache / f"{p}1111111111111111{s}" for p, s in ((bundle.PREFIX, ".zip"),
                                                              (bundle.PROJECT_PREFIX, ".tar"))]
    for f in (*old, *young):
        f.write_bytes(b"")
    for f in old:
        os.utime(f, (time.time() - bundle.KEEP_S - 60,) * 2)
    inodes = [f.stat().st_ino for f in made]
    again = prepared(cache)
    assert again == packed and [f.stat().st_ino for f in made] == inodes  # not written again
    assert not any(f.exists() for f in old)
    assert all(f.exists() for f in young)  # another checkout's may be in use
    for f in young:
        f.unlink()


def test_the_guest_command_unpacks_them_before_python_starts(packed: bundle.Packed) -> None:
    kernel = Kernel("6.12.0-test", None, Path("/boot/vmlinuz"), None)
    command = multikernel.guest_command(kernel, Path("/o"), [], packed)
    assert command.index(f"cp {packed.imports} ") < command.index("exec ")
    assert command.index(f"tar -xf {packed.project} ") < command.index("exec ")
    bare = multikernel.guest_command(kernel, Path("/o"), [])
    assert bundle.GUEST_ZIP not in bare and "mount" not in bare


@pytest.mark.parametrize("zipped", [True, False])
def test_the_guest_imports_from_the_zip_then_the_checkout_not_its_directory(
        packed: bundle.Packed, tmp_path: Path, zipped: bool) -> None:
    """The guest's sys.path: the zip first, then the checkout, then the site directories for a
    Python started without site; the working directory (9p under TCG, a stat for every import
    ahead of the zip) is not on it. Without the zip, the checkout still is."""
    kernel = Kernel("6.12.0-test", None, Path("/boot/vmlinuz"), None)
    probe = ("import json, sys, conformance.plugin; "
             "print(json.dumps([sys.path, sys.flags.no_site, 'site' in sys.modules]))")
    command = multikernel.guest_command(kernel, Path("/o"), [], packed if zipped else None)
    command = in_tmp(command, tmp_path).replace("-m conformance.guest /o",
                                                f"-c {shlex.quote(probe)}")
    here = tmp_path / "cwd"
    here.mkdir()
    run = subprocess.run(own_mounts(command), cwd=here, capture_output=True, text=True,
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
