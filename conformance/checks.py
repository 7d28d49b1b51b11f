"""One small function per check. Each looks at a live pin after the mutation and says what
it saw, as an Observation whose outcome the spec then judges."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from . import kernelview
from .errors import Skip
from .model import Availability, Baseline, Effect, Observation, Trial
from .mutations import MUTATIONS
from .pagemap import NEEDS_ROOT
from .patterns import describe, fill
from .subject import Subject
from .syscalls import touch

Check = Callable[[Trial, Baseline, Effect], "Observation | Stored"]


def admission(t: Trial, base: Baseline, effect: Effect) -> Observation:
    return Observation("pinned", f"pinned {t.subject.length} bytes")


def zeropage(t: Trial, base: Baseline, effect: Effect) -> Observation:
    """Whether the pinned pages are the shared zeropage or the huge zero folio. A pin taken
    through the mapping holds what the mapping's page table maps right after GUP, so that is
    read as it is; a file pinner (udmabuf) is seen through a mapping of the file's page cache,
    which this check faults in itself. The detail says which was examined."""
    pagemap = t.worker.pagemap
    if not pagemap.sees_pfns():
        raise Skip(NEEDS_ROOT)
    if t.pinned.through_mapping:
        examined = "examined the mapping's page table as the pin left it"
    else:
        touch(t.pinned.view_addr, t.subject.length)  # a file pinner maps nothing itself
        examined = ("examined the file's page cache through a mapping faulted by this check "
                    "(the pin's own mapping is VM_PFNMAP, which pagemap does not show)")
    pages = pagemap.pages(t.pinned.view_addr, t.subject.length)
    zero = [p for p in pages if p.zero_page]
    if zero:
        return Observation("disconnected", f"{len(zero)} of {len(pages)} pinned pages are the "
                           f"shared zeropage: {zero[0].describe()}; {examined}")
    absent = [p for p in pages if not p.present]
    if absent:
        raise RuntimeError(f"cannot tell what is pinned: {absent[0].describe()}; {examined}")
    return Observation("pinned", f"{len(pages)} pages, none the zeropage; "
                       f"{pages[0].describe()}; {examined}")


def file_as_operation_says(t: Trial, base: Baseline, effect: Effect) -> Observation | None:
    """The file must read as the mutation says (zeros after a punch, shorter after truncate)."""
    now = t.subject.file_view()
    if now != effect.file:
        kind = "stale-cache" if now == base.file else "disconnected"
        return Observation(kind, f"after {t.case.mutation} read() returns {describe(now)}, "
                           f"not {describe(effect.file)}")
    if effect.direct is not None and effect.direct != now:
        return Observation("stale-cache", f"an O_DIRECT read returns {describe(effect.direct)} "
                           f"where buffered read() returns {describe(now)}")
    return None


def detached(t: Trial, effect: Effect) -> bool:
    """Whether the pin may rightly stop following the file: a MAP_PRIVATE copy, or an
    operation that takes the page out of the file."""
    return effect.detaches or t.private_copy


def _pin_view(seen: bytes, new: bytes, old: bytes, may_detach: bool, what: str) -> Observation:
    if seen == new:
        return Observation("coherent", f"the pin sees {what}")
    if seen == old:
        return Observation("detached" if may_detach else "disconnected",
                           f"the pin still holds {describe(old)}, not {what}")
    return Observation("disconnected", f"the pin holds {describe(seen)}, neither its old data "
                       f"nor {what}")


def file_to_pin(t: Trial, base: Baseline, effect: Effect) -> Observation:
    """After the mutation the pin holds what it must; then data written to the file with
    write() must be what the pin sees, unless the pin is rightly detached."""
    wrong = file_as_operation_says(t, base, effect)
    if wrong:
        return wrong
    may_detach = detached(t, effect)
    held = t.pinned.read()
    # A pin that follows the file must now hold what the file holds; a detached one is
    # judged by the write below.
    must_hold = effect.pin if effect.pin is not None else None if may_detach else effect.file
    if must_hold is not None and held != must_hold:
        return Observation("disconnected", f"after {t.case.mutation} the pin holds "
                           f"{describe(held)}, not {describe(must_hold)}")
    new = written_by_file_to_pin(t)
    t.subject.write_file(new)
    now, want = t.subject.file_view(), t.subject.sample(new)
    if now != want:
        return Observation("lost-write", f"read() after write() returns {describe(now)}")
    return _pin_view(t.pinned.read(), want, held, may_detach, "what write() put in the file")


def written_by_file_to_pin(t: Trial) -> bytes:
    return fill("file", t.subject.length)


def after_file_to_pin(t: Trial, seen: Observation, effect: Effect) -> Effect | None:
    """The effect pin-to-file can go on from in the same trial after file-to-pin, or None
    where it needs a trial of its own. Only a pin that followed the write (or was rightly
    detached from it) leaves a known state; an operation that took the page out of the file
    would be undone by the write (a truncated file grows back); one that cleaned the page
    would be undone too, and a clean page is what shows a pin's write lost on unpin."""
    cleans = "cleans" in MUTATIONS[t.case.mutation].traits
    if seen.outcome not in ("coherent", "detached") or effect.detaches or cleans:
        return None
    return Effect(t.subject.sample(written_by_file_to_pin(t)))


def pin_to_file(t: Trial, base: Baseline, effect: Effect) -> Observation | Stored:
    """Data written into the pinned pages must be what read() and the mapping see, and still
    be in the file after unpin, fsync, cache drop and remount; where the pin is detached it
    must never reach the file, not even after all that. On a backing that remounts, the check
    returns a Stored instead: the file waits, closed, and Stored.reread() gives the verdict
    after the remount (runner.settle() remounts once for a group's files)."""
    wrong = file_as_operation_says(t, base, effect)
    if wrong:
        return wrong
    s = t.subject
    written = fill("pin", s.length)
    t.pinned.write(written)
    data = s.sample(written)  # what the pin wrote: the range's windows of it
    if t.pinned.read() != data:
        return Observation("disconnected", "the pinned pages lose what was written into them")
    # The mapping maps the pinned page unless the operation took it away (and past EOF
    # touching it would SIGBUS), or the pin is a file pinner's and the mapping a private one.
    follows = not effect.detaches and (t.pinned.through_mapping or t.case.mapping == "shared")
    stored = Stored(s, data, effect, t.private_copy, detached(t, effect),
                    mapped=s.mapping_view() if follows else None, cached=s.file_view())
    t.pinned.release()
    stored.how = s.flush()
    if not s.backing.persistent:
        return stored.judge(s.file_view(), stored.how)
    s.set_aside()
    return stored


@dataclass
class Stored:
    """pin-to-file up to the file's trip through storage: what the pin wrote, and what the
    mapping and read() showed of it before the unpin. Judged on what the file holds after
    the flush, or after the backing's remount where it has one."""

    subject: Subject
    data: bytes
    effect: Effect
    private_copy: bool
    detached: bool
    mapped: bytes | None
    cached: bytes
    how: str = ""  # what was done before the remount

    def reread(self) -> Observation:
        """The verdict on the file as storage gives it back, once the caller has remounted
        its backing (once for all the files it set aside)."""
        self.subject.reopen()
        return self.judge(self.subject.file_view(), f"{self.how}, unmount and mount")

    def judge(self, stored: bytes, how: str) -> Observation:
        data, effect, cached = self.data, self.effect, self.cached
        if self.mapped is not None and self.mapped != data:
            return Observation("disconnected", f"the mapping shows {describe(self.mapped)}, "
                               "not the data written into its pinned page")
        # Data the file did not show at once must never show up later; a MAP_PRIVATE copy's
        # data must never show up at all.
        if stored == data and (cached != data or self.private_copy):
            return Observation("resurrected", "data written through the detached pin reached "
                               f"the file ({'read()' if cached == data else 'after ' + how})")
        if cached != data and self.detached:
            if cached != effect.file or stored != effect.file:
                return Observation("disconnected", f"the file changed to {describe(stored)}")
            return Observation("detached", f"the file kept {describe(effect.file)} after {how}")
        if cached != data:
            return Observation("disconnected", f"read() returns {describe(cached)}, not the "
                               "data written into the pinned page")
        if stored != data:
            return Observation("lost-write", f"after unpin, {how} the file holds "
                               f"{describe(stored)}")
        return Observation("coherent", f"read(), the mapping and the file after {how} hold it")


@functools.cache
def _kernel_view_available() -> Availability:
    return kernelview.availability()


def unavailable(check: str) -> str | None:
    """Why this kernel cannot run an opt-in check at all (known before any trial), or None."""
    if check != "kernel-view":
        return None
    available = _kernel_view_available()
    return None if available.ok else available.reason


def kernel_view(t: Trial, base: Baseline, effect: Effect) -> Observation:
    """Which folios the pin holds right after the mutation, as the kernel says (drgn over
    /proc/kcore): the file's own at that index, the zeropage, an orphan in no page cache, a
    private copy, or another folio than the file now has. Only when the run asks for it."""
    available = _kernel_view_available()
    if not available.ok:
        raise Skip(available.reason)
    return kernelview.kernel_view(t, base, effect)


# The checks in the order one trial runs them: the pin checks look at the pin before
# anything changes the file (their cells have mutation "none"); file-to-pin leaves the pin
# and file in a known state that pin-to-file goes on from.
CHECKS: dict[str, Check] = {
    "admission": admission,
    "zeropage": zeropage,
    "kernel-view": kernel_view,
    "file-to-pin": file_to_pin,
    "pin-to-file": pin_to_file,
}
PIN_CHECKS = ("admission", "zeropage")
# Checks that only look, so the next check of the trial goes on from the same state.
LOOKS_ONLY = (*PIN_CHECKS, "kernel-view")
# Checks a run makes only when asked (they need what most kernels lack, or cost time).
OPT_IN: tuple[str, ...] = ("kernel-view",)
