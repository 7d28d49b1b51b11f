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
tracebacks read the source from the host's root. pinhole's own code is not in it: it stays in
the checkout, whose bytecode is compiled there first. One module is made here: abi.py's C
declarations in cffi's out-of-line ABI mode (abi.OUT_OF_LINE), which the guest loads instead
of parsing them.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where the guest copies it: a tmpfs of the guest's own (/tmp is an overlay on the host's).
GUEST_ZIP = "/dev/shm/pinhole-imports.zip"
PREFIX = "imports-"
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
    a hash of every source's path, size and mtime); ones unused for KEEP_S are removed
    (another checkout's may be in use)."""
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
    for _, f in members:
        st = f.stat()
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    zipped = cache / f"{PREFIX}{key.hexdigest()[:16]}.zip"
    if zipped.exists():
        os.utime(zipped)  # in use: not old, for another checkout's build()
    else:
        cache.mkdir(parents=True, exist_ok=True)
        part = zipped.with_suffix(f".part{os.getpid()}")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as z:
            for arc, f in members:
                z.writestr(arc.removesuffix(".py") + ".pyc", pyc(f))
            # abi.py's declarations, ready to load: no pycparser at the guest's start.
            source = abi.out_of_line_source().encode()
            z.writestr(f"{abi.OUT_OF_LINE}.pyc",
                       _pyc(source, f"<{abi.OUT_OF_LINE}>", 0, len(source)))
        os.replace(part, zipped)
    for old in cache.glob(f"{PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if old != zipped and time.time() - old.stat().st_mtime > KEEP_S:
                old.unlink()
    return zipped


def compile_project() -> None:
    """Bytecode for pinhole's own modules, beside them as Python would write it: the guest's
    root is read-only, and a module with none is compiled at every start (about 3.5 s of
    the guest's imports under TCG, for the 40 the host had not imported)."""
    import compileall

    if sys.dont_write_bytecode:
        return
    for part in ("conformance", "cases"):
        compileall.compile_dir(ROOT / part, quiet=2, workers=0)
    compileall.compile_file(ROOT / "conftest.py", quiet=2)


def prepare(cache: Path) -> tuple[Path | None, str]:
    """On the host, before a boot: the project's bytecode, and the zip (None if it could not
    be made, with the reason; the guest then imports over 9p)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-m", "conformance.bundle", str(cache)], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    lines = run.stdout.split()
    if run.returncode or not lines:
        why = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
        return None, why
    return Path(lines[-1]), ""


def copy_command(zipped: Path | None) -> str:
    """The guest shell's words that copy the zip into its tmpfs and put it first on
    PYTHONPATH; nothing if there is none (the imports then come from 9p, only slower)."""
    if zipped is None:
        return ""
    return (f"{{ cp {shlex.quote(str(zipped))} {GUEST_ZIP} && "
            f"export PYTHONPATH={GUEST_ZIP}; }} 2>/dev/null; ")


if __name__ == "__main__":
    compile_project()
    print(build(Path(sys.argv[1])))
