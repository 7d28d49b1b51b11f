"""The kernel's own view of a pin (check `kernel-view`): which folios does the pin hold, and is
each still the one the file's page cache holds at its index?

drgn reads the running kernel through /proc/kcore, with the DWARF of this kernel's vmlinux
(debuginfo.py says where it comes from). A locator per pin mechanism (locate.py) finds the
pinned pages in the pin's own kernel object, found from this process's file descriptors;
folios.py compares each with `mapping->i_pages` at its index and with the zero pages.

Nothing here is imported by a run that does not ask for the check: drgn is imported, and
vmlinux indexed, on the first call of kernel_view() in a process, once.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Skip
from .debuginfo import ENV, fetch_dbg, find_vmlinux, how_to_get, vmlinux_for
from .folios import ORDER

try:  # the shared model, once the lead's restructuring has landed
    from ..model import Availability, Observation
except ImportError:  # pragma: no cover - before it
    from ..backings.base import Availability
    from ..checks import Observation

if TYPE_CHECKING:
    from drgn import Program

__all__ = ["ENV", "OUTCOMES", "availability", "kernel_view", "guest_env", "fetch_debuginfo",
           "load_seconds"]

# The check's outcomes, worst first (folios.py says what each means).
OUTCOMES = ORDER
KCORE = "/proc/kcore"
# A Debian package version (6.12.118-1), as debian.Kernel.package_version has it for a package.
DEB_VERSION = re.compile(r"^\d+\.\d+[\w.+~]*-[\w.+~]+$")

_program: Program | None = None
# How long this process took to import drgn and index vmlinux (benchmarks report it).
load_seconds: float | None = None


def availability() -> Availability:
    """Whether this kernel's pins can be read: drgn, /proc/kcore and this kernel's vmlinux."""
    try:
        import drgn  # noqa: F401 - only whether it imports
    except ImportError:
        return Availability.no("needs drgn: pip install 'pinhole[kernel-view]' (drgn has "
                               "cp311 manylinux wheels), or helpers/setup.sh")
    if not os.access(KCORE, os.R_OK):
        why = "needs root" if os.path.exists(KCORE) else "no /proc/kcore (CONFIG_PROC_KCORE)"
        return Availability.no(f"drgn reads the running kernel through {KCORE}: {why}")
    release = os.uname().release
    path, why = find_vmlinux(release)
    if path is None:
        return Availability.no(how_to_get(release) + (f" ({why})" if why else ""))
    return Availability.yes(f"drgn over {KCORE} with {why}")


def program() -> Program:
    """The running kernel as a drgn Program, made once per process (indexing vmlinux's DWARF
    is the slow part: seconds on a host, longer under TCG)."""
    global _program, load_seconds
    if _program is not None:
        return _program
    verdict = availability()
    if not verdict.ok:
        raise Skip(verdict.reason)
    import drgn

    start = time.monotonic()
    prog = drgn.Program()
    prog.set_kernel()
    release = os.uname().release
    path, _ = find_vmlinux(release)
    # A -dbg package keeps the modules' debug files beside vmlinux (usr/lib/debug/boot/ and
    # usr/lib/debug/lib/modules/<release>/): rdma's and udmabuf's types are there when they
    # are modules.
    modules = path.parent.parent / "lib" / "modules" / release
    if modules.is_dir():
        prog.debug_info_options.kernel_directories = (str(modules), "")
        prog.debug_info_options.try_kmod = drgn.KmodSearchMethod.WALK
    try:
        prog.load_debug_info([str(path)], default=modules.is_dir())
    except drgn.MissingDebugInfoError as e:
        # Loadable modules without debug info are fine as long as the kernel's own is there.
        if prog.main_module().debug_file_status != drgn.ModuleFileStatus.HAVE:
            raise Skip(f"drgn could not use {path}: {e}") from None
    load_seconds = round(time.monotonic() - start, 2)
    _program = prog
    return prog


def pinned_views(trial: object) -> tuple[list, str]:
    """Each pinned page of the trial's pin against the subject file's page cache, and where
    the pages were found."""
    from drgn.helpers.linux.fs import fget
    from drgn.helpers.linux.pid import find_task

    from .folios import file_indices, view, zero_pfns
    from .locate import LOCATORS

    prog = program()
    task = find_task(prog, os.getpid())
    pages, where = LOCATORS[trial.case.pin](prog, task, trial.pinned)  # type: ignore[attr-defined]
    s = trial.subject  # type: ignore[attr-defined]
    wanted = s.length >> 12
    if len(pages) != wanted:
        raise RuntimeError(f"{where} holds {len(pages)} pages, the pinned range is {wanted}")
    mapping = fget(task, s.fd).f_mapping
    indices = file_indices(s.offset, wanted, s.backing.hugetlb, s.page.bit_length() - 1)
    zero = zero_pfns(prog)
    return [view(prog, p, mapping, i, zero) for p, i in zip(pages, indices, strict=True)], where


def kernel_view(trial: object, base: object, effect: object) -> Observation:
    """The check: what the kernel says the pin holds, right after the mutation."""
    from .folios import summarize

    views, where = pinned_views(trial)
    outcome, detail = summarize(views)
    return Observation(outcome, f"{where}:\n{detail}")


def _vmlinux_of(kernel: object) -> Path | None:
    """The vmlinux with DWARF pinhole already has for a kernel (a cheap stat: no apt)."""
    return vmlinux_for(getattr(kernel, "config_path", None), kernel.vmlinuz,  # type: ignore[attr-defined]
                       kernel.release, getattr(kernel, "build_dir", None))  # type: ignore[attr-defined]


def guest_env(kernel: object) -> dict[str, str]:
    """For multikernel.guest_command(): the vmlinux of a kernel about to boot, if pinhole has
    it."""
    path = _vmlinux_of(kernel)
    return {ENV: str(path)} if path else {}


def fetch_debuginfo(kernel: object) -> Path | None:
    """For `pinhole matrix --kernel-view`, before a Debian kernel boots: its vmlinux with
    DWARF, fetching the -dbg package if need be (about a gigabyte; debuginfo.fetch_dbg()).
    A kernel pinhole builds already has it; any other kernel returns None (the check skips
    with its reason)."""
    have = _vmlinux_of(kernel)
    version = getattr(kernel, "package_version", None) or ""
    if have or not DEB_VERSION.match(version):  # a build says "(source, build KEY)"
        return have
    return fetch_dbg(kernel.vmlinuz.parent.parent, kernel.release, version)  # type: ignore[attr-defined]
