"""The guest's pure-Python imports, compiled on the host into one zip that the guest copies
into its tmpfs and puts first on PYTHONPATH.

A `pinhole matrix` guest sees the host's root over 9p without a cache, so under TCG every
import from it is a dozen 9p round trips (a stat per sys.path entry, then open, read and
close): the ~330 modules a run imports took 12.5-16.7 s. From the zip in the guest's tmpfs they
took 7.2-9.1 s, and copying it 1.5 s; unpacked as a directory tree instead, 10.5-12.4 s after
6-7 s of unpacking (Debian 6.12 under TCG, three interleaved rounds in one VM, 2026-11-27).
The zip holds every module of each top-level package or module the guest imports, whole, so a
module imported later than on the host is there too; a package with anything but Python
source (extension modules, data files) stays out, as zipimport cannot load those, and so does
one that reads its own source (NEEDS_SOURCE). Code objects keep their source's path, so
tracebacks read the source from the host's root. One module is made here: abi.py's C
declarations in cffi's out-of-line ABI mode (abi.OUT_OF_LINE), which the guest loads instead
of parsing them.

pinhole's own code is not in the zip: its modules and cases find their data beside them
(the spec, cases/ for pytest). They go as a tar of the checkout's `conformance/` and `cases/`,
bytecode included (compiled there first), which the guest unpacks into its tmpfs and binds over
the checkout's own directories, in its own mount namespace: the paths stay the host's, the
reads are the tmpfs's. Over 9p their imports took 6.6-6.8 s with the rest, 5.0 s from the copy
(Debian 6.12 under TCG, 2026-11-28).

    python -m conformance.bundle CACHE_DIR   (in a subprocess, by multikernel)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where the guest copies it: a tmpfs of the guest's own (/tmp is an overlay on the host's).
GUEST_ZIP = "/dev/shm/pinhole-imports.zip"
PREFIX = "imports-"
# The checkout's directories the guest reads from a copy of its own, and where it unpacks it.
PROJECT = ("conformance", "cases")
GUEST_PROJECT = "/dev/shm/pinhole-project"
PROJECT_PREFIX = "project-"
KEEP_S = 86400.0
# Files a package may carry beside its modules that nothing reads when it runs (type stubs).
IGNORED = (".pyi", "py.typed")
# Packages that read their own source as they run, which bytecode in a zip cannot give them:
# xdist has execnet send the source of xdist.remote and of execnet's gateway_base to every
# worker it starts (inspect.getsource()), so from the zip `pinhole matrix ... -n 2` stopped
# with "INTERNALERROR> OSError: could not get source code". They come over 9p, as before.
NEEDS_SOURCE = frozenset({"execnet", "xdist"})


def _import_what_the_guest_does() -> None:
    """The modules a guest run imports at its start: pinhole's and pytest's with its plugins."""
    from importlib.metadata import entry_points

    import pytest  # noqa: F401

    from . import checks, guest, plugin, runner  # noqa: F401

    for ep in entry_points(group="pytest11"):
        try:
            ep.load()
        except Exception:  # noqa: BLE001, S112 - a broken plugin breaks the guest's pytest too
            continue


def top_levels() -> dict[str, Path]:
    """Each imported top-level package (its directory) or module (its file), by name; not
    pinhole's, not frozen or built-in ones, not namespace packages."""
    found: dict[str, Path] = {}
    for name in list(sys.modules):
        top = name.partition(".")[0]
        module = sys.modules.get(top)
        spec = getattr(module, "__spec__", None)
        file = getattr(module, "__file__", None)
        if top in found or top == "__main__" or not file or spec is None \
                or spec.origin in (None, "frozen", "built-in"):
            continue
        path = Path(file).resolve()
        if hasattr(module, "__path__"):
            if path.name != "__init__.py":
                continue
            path = path.parent
        if path.parent == ROOT or path.name.split(".")[0] != top:  # pinhole's own: the checkout
            continue
        found[top] = path
    return found


def sources(top: Path) -> list[Path] | None:
    """The .py files of a package (or the module itself), or None if it has anything else."""
    if top.is_file():
        return [top] if top.suffix == ".py" else None
    out = []
    for d, dirs, names in os.walk(top):
        dirs[:] = sorted(n for n in dirs if n != "__pycache__")
        for n in sorted(names):
            if n.endswith(".py"):
                out.append(Path(d, n))
            elif not n.endswith(IGNORED):
                return None
    return out


def pyc(source: Path) -> bytes:
    """Timestamp-based bytecode (PEP 552's layout) with the source's own path in it."""
    st = source.stat()
    return _pyc(source.read_bytes(), str(source), int(st.st_mtime), st.st_size)


def _pyc(text: bytes, path: str, mtime: int, size: int) -> bytes:
    import marshal

    code = compile(text, path, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
            + (mtime & 0xFFFFFFFF).to_bytes(4, "little")
            + (size & 0xFFFFFFFF).to_bytes(4, "little") + marshal.dumps(code))


def build(cache: Path) -> Path:
    """The zip of top_levels() after the guest's imports, made once per content (its name is
    a hash of every source's path, size and mtime)."""
    # Imported here, not at the top: the guest imports this module for GUEST_ZIP at its start.
    import hashlib
    import zipfile

    _import_what_the_guest_does()
    members = []
    for name, path in sorted(top_levels().items()):
        files = None if name in NEEDS_SOURCE else sources(path)
        if files is not None:
            members += [(str(Path(name, f.relative_to(path)) if path.is_dir() else name), f)
                        for f in files]
    from . import abi

    key = hashlib.sha256(f"{sys.version}\n{abi.CDEF_KEY}".encode())
    zipped = _made_once(cache, PREFIX, ".zip", key, [f for _, f in members])
    if not zipped.exists():
        part = zipped.with_suffix(f".part{os.getpid()}")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as z:
            for arc, f in members:
                z.writestr(arc.removesuffix(".py") + ".pyc", pyc(f))
            # abi.py's declarations, ready to load: no pycparser at the guest's start.
            source = abi.out_of_line_source().encode()
            z.writestr(f"{abi.OUT_OF_LINE}.pyc",
                       _pyc(source, f"<{abi.OUT_OF_LINE}>", 0, len(source)))
        os.replace(part, zipped)
    return zipped


def build_project(cache: Path) -> Path:
    """The tar of the checkout's PROJECT directories as they are, with this interpreter's
    bytecode (compile_project()) and not pytest's rewritten or another version's, made once
    per content. Unpacked, the files keep their mtimes, which their bytecode is checked by."""
    import hashlib
    import tarfile

    tag = f".{sys.implementation.cache_tag}.pyc"
    files = []
    for part in PROJECT:
        for d, dirs, names in os.walk(ROOT / part):
            dirs.sort()
            files += [Path(d, n) for n in sorted(names)
                      if Path(d).name != "__pycache__" or n.endswith(tag)]
    tarred = _made_once(cache, PROJECT_PREFIX, ".tar", hashlib.sha256(), files)
    if not tarred.exists():
        part = tarred.with_suffix(f".part{os.getpid()}")
        with tarfile.open(part, "w") as tar:
            for f in files:
                tar.add(f, str(f.relative_to(ROOT)), recursive=False)
        os.replace(part, tarred)
    return tarred


def _made_once(cache: Path, prefix: str, suffix: str, key, files: list[Path]) -> Path:
    """The name of the file made of `files` (a hash of each one's path, size and mtime, onto
    key); touched if it exists, as in use. Those of the prefix unused for KEEP_S go (another
    checkout's may be in use)."""
    for f in files:
        st = f.stat()
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    made = cache / f"{prefix}{key.hexdigest()[:16]}{suffix}"
    cache.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.utime(made)
    for old in cache.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            if old != made and time.time() - old.stat().st_mtime > KEEP_S:
                old.unlink()
    return made


def compile_project() -> None:
    """Bytecode for pinhole's own modules, beside them as Python would write it: the guest's
    root is read-only, and a module with none is compiled at every start (about 3.5 s of
    the guest's imports under TCG, for the 40 the host had not imported)."""
    import compileall

    if sys.dont_write_bytecode:
        return
    for part in PROJECT:
        compileall.compile_dir(ROOT / part, quiet=2, workers=0)
    compileall.compile_file(ROOT / "conftest.py", quiet=2)


@dataclass(frozen=True)
class Packed:
    """What a guest unpacks into its tmpfs before its Python starts."""

    imports: Path  # the zip of the pure-Python packages (build())
    project: Path  # the tar of pinhole's own code and cases (build_project())


def prepare(cache: Path) -> tuple[Packed | None, str]:
    """On the host, before a boot: the project's bytecode, the zip and the tar (None if they
    could not be made, with the reason; the guest then imports over 9p)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-m", "conformance.bundle", str(cache)], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    lines = run.stdout.splitlines()
    if run.returncode or len(lines) < 2:
        why = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
        return None, why
    return Packed(Path(lines[-2]), Path(lines[-1])), ""


def copy_command(packed: Packed | None) -> str:
    """The guest shell's words that copy the zip into its tmpfs and put it first on
    PYTHONPATH, and unpack the tar there and bind its directories over the checkout's;
    nothing if there is none (the imports then come from 9p, only slower). Each step that
    fails leaves the guest reading the host's files, as without it."""
    if packed is None:
        return ""
    root = shlex.quote(str(ROOT))
    binds = " && ".join(f"mount --bind {GUEST_PROJECT}/{d} {root}/{d}" for d in PROJECT)
    return (f"{{ cp {shlex.quote(str(packed.imports))} {GUEST_ZIP} && "
            f"export PYTHONPATH={GUEST_ZIP}; }} 2>/dev/null; "
            f"{{ mkdir -p {GUEST_PROJECT} && "
            f"tar -xf {shlex.quote(str(packed.project))} -C {GUEST_PROJECT} && "
            f"{binds}; }} 2>/dev/null; ")


if __name__ == "__main__":
    compile_project()
    print(build(Path(sys.argv[1])))
    print(build_project(Path(sys.argv[1])))
