"""What a pinned page is, compared with what the file's page cache holds at its index.

Outcomes, one per pinned page, the worst of them for the case:
- `zeropage`: the shared zeropage or the huge zero folio (mm/memory.c zero_pfn,
  mm/huge_memory.c huge_zero_folio), the hazard itself;
- `orphan`: a folio in no page cache (its ->mapping is NULL: mm/filemap.c
  page_cache_delete() clears it when the folio leaves the cache);
- `other-folio`: the folio is in a page cache, but the file has another folio (or nothing, or a
  shadow entry) at that index;
- `private-copy`: an anonymous folio (->mapping has PAGE_MAPPING_ANON): a MAP_PRIVATE copy,
  which by design belongs to no page cache (mm/gup.c gup_must_unshare(), do_wp_page());
- `same-folio`: the file's page cache holds this very folio at this index (for fsdax, whose
  i_pages hold DAX entries, the entry's pfn is this page's: fs/dax.c dax_to_pfn()).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drgn import Object, Program

# From worst to best: a case's outcome is the first that any of its pages has.
ORDER = ("zeropage", "orphan", "other-folio", "private-copy", "same-folio")
PAGE_MAPPING_ANON = 0x1
PAGE_MAPPING_FLAGS = 0x3
# include/linux/mm.h: a small folio is maybe-dma-pinned once FOLL_PIN has added this bias.
GUP_PIN_COUNTING_BIAS = 1024
# fs/dax.c: a DAX entry is a value entry holding pfn << DAX_SHIFT | flags.
DAX_SHIFT = 4
S_DAX = 1 << 13  # include/linux/fs.h
# Names drgn decodes for a bit that means something else on a folio's head page
# (include/linux/page-flags.h: PG_reported = PG_uptodate is for free pages, and
# PG_has_hwpoisoned = PG_active and PG_large_rmappable = PG_workingset live in a large
# folio's second page): left out of the detail.
ALIASES = {"PG_reported", "PG_has_hwpoisoned", "PG_large_rmappable"}


@dataclass(frozen=True)
class PageView:
    """One pinned base page and the page cache at its file index."""

    pfn: int
    folio_pfn: int
    order: int
    flags: str
    refcount: int
    pincount: int | None  # large folios count pins apart (folio->_pincount)
    dma_pinned: bool
    owner: str  # "file <mapping>", "anon", "none"
    index: int
    cache: str  # what i_pages has at the index
    outcome: str

    def key(self) -> tuple:
        """What consecutive pages of one folio share, so the detail can fold them."""
        return (self.folio_pfn, self.flags, self.refcount, self.pincount, self.dma_pinned,
                self.owner, self.outcome)


def kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def zero_pfns(prog: Program) -> set[int]:
    """The shared zeropage's pfn, and the huge zero folio's pfns once it exists."""
    from drgn import cast
    from drgn.helpers.linux.mm import page_to_pfn

    pfns = {prog["zero_pfn"].value_()}
    for name in ("huge_zero_folio", "huge_zero_page"):  # v6.10 renamed the page a folio
        try:
            head = prog[name]
        except KeyError:
            continue
        if head:
            first = page_to_pfn(cast("struct page *", head)).value_()
            pfns.update(range(first, first + 512))  # HPAGE_PMD_NR on x86-64
        break
    return pfns


def _pincount(folio: Object, large: bool) -> int | None:
    if not large:
        return None
    try:
        return folio._pincount.counter.value_()
    except AttributeError:  # before v6.2 the count sat in the first tail page
        return (folio.page.address_of_() + 1).compound_pincount.counter.value_()


def _cache_entry(prog: Program, mapping: Object, index: int, dax: bool) -> tuple[str, object]:
    """What i_pages holds at index: ('folio', folio *), ('dax', pfn), ('value', v) or
    ('none', None). xa_load() follows a large folio's multi-index entry to the folio."""
    from drgn import cast
    from drgn.helpers.linux.xarray import xa_is_value, xa_load, xa_to_value

    entry = xa_load(mapping.i_pages.address_of_(), index)
    if not entry:
        return "none", None
    if xa_is_value(entry):
        value = xa_to_value(entry).value_()
        return ("dax", value >> DAX_SHIFT) if dax else ("value", value)
    return "folio", cast("struct folio *", entry)


def view(prog: Program, page: Object, mapping: Object, index: int, zero: set[int]) -> PageView:
    """One pinned page against the file's `mapping` (struct address_space *) at `index`."""
    from drgn import cast
    from drgn.helpers.linux.mm import (
        compound_head,
        compound_order,
        decode_page_flags,
        page_to_pfn,
    )

    pfn = page_to_pfn(page).value_()
    head = compound_head(page)
    folio = cast("struct folio *", head)
    order = compound_order(head).value_()
    refcount = folio._refcount.counter.value_()
    pincount = _pincount(folio, order > 0)
    pinned = pincount > 0 if pincount is not None else refcount >= GUP_PIN_COUNTING_BIAS
    raw = folio.mapping.value_()
    owner = ("anon" if raw & PAGE_MAPPING_ANON else "none" if not raw
             else f"file {raw & ~PAGE_MAPPING_FLAGS:#x}")
    dax = bool(mapping.host.i_flags.value_() & S_DAX)
    kind, entry = _cache_entry(prog, mapping, index, dax)
    if kind == "folio":
        cache_pfn = page_to_pfn(cast("struct page *", entry)).value_()
        cache = f"folio pfn {cache_pfn:#x}"
        same = entry.value_() == folio.value_()
    elif kind == "dax":
        cache, same = f"DAX entry pfn {entry:#x}", entry == pfn
    else:
        cache, same = ("nothing" if kind == "none" else f"value entry {entry:#x}"), False
    if pfn in zero:
        outcome = "zeropage"
    elif same:
        outcome = "same-folio"
    elif owner == "anon":
        outcome = "private-copy"
    elif owner == "none":
        outcome = "orphan"
    else:
        outcome = "other-folio"
    flags = "|".join(f for f in decode_page_flags(head).split("|") if f not in ALIASES)
    return PageView(pfn, page_to_pfn(head).value_(), order, flags, refcount, pincount, pinned,
                    owner, index, cache, outcome)


def file_indices(offset: int, npages: int, hugetlb: bool, huge_shift: int) -> list[int]:
    """The page-cache index of each pinned base page. hugetlbfs indexed its page cache in
    huge pages until v6.7, in base pages since ("mm/filemap: remove hugetlb special casing in
    filemap.c", a08c7193e4f1; filemap_lock_hugetlb_folio(): idx << huge_page_order(h))."""
    if hugetlb and kernel_version() < (6, 7):
        return [(offset + (k << 12)) >> huge_shift for k in range(npages)]
    return [(offset >> 12) + k for k in range(npages)]


def summarize(pages: list[PageView]) -> tuple[str, str]:
    """The case's outcome and a detail line per run of pages that share a folio and state."""
    outcome = next(o for o in ORDER if any(p.outcome == o for p in pages))
    runs: list[list[PageView]] = []
    for p in pages:
        if runs and runs[-1][-1].key() == p.key() and runs[-1][-1].pfn + 1 == p.pfn:
            runs[-1].append(p)
        else:
            runs.append([p])
    lines = []
    for run in runs:
        a, z = run[0], run[-1]
        where = (f"pfn {a.pfn:#x}" if a is z else f"pfns {a.pfn:#x}-{z.pfn:#x} ({len(run)})")
        index = f"index {a.index}" if a.index == z.index else f"indices {a.index}-{z.index}"
        pins = f", pincount {a.pincount}" if a.pincount is not None else ""
        lines.append(f"{where}: {a.outcome}; folio pfn {a.folio_pfn:#x} order {a.order} "
                     f"[{a.flags or 'no flags'}] refcount {a.refcount}{pins}, "
                     f"{'maybe-dma-pinned' if a.dma_pinned else 'not dma-pinned'}, "
                     f"mapping {a.owner}; page cache at {index}: {a.cache}")
    return outcome, "\n".join(lines)
