"""What a virtual address maps: /proc/self/pagemap entries and /proc/kpageflags of their PFNs.

Documentation/admin-guide/mm/pagemap.rst: bits 0-54 PFN (zero without CAP_SYS_ADMIN),
55 soft-dirty, 56 exclusive, 61 file-page or shared-anon, 62 swapped, 63 present.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from . import abi
from .syscalls import PAGE_SIZE

PFN_MASK = (1 << 55) - 1
EXCLUSIVE, FILE, SWAPPED, PRESENT = 1 << 56, 1 << 61, 1 << 62, 1 << 63

NEEDS_ROOT = ("needs root: PFNs in /proc/self/pagemap and /proc/kpageflags are root-only "
              "(run as root)")


@dataclass(frozen=True)
class Page:
    """One page table entry as user space can see it."""

    vaddr: int
    present: bool
    pfn: int  # 0 when absent or hidden
    exclusive: bool
    file: bool
    flags: int | None  # kpageflags of pfn; None when not readable

    def flag(self, bit: int) -> bool:
        return self.flags is not None and bool(self.flags >> bit & 1)

    @property
    def zero_page(self) -> bool:
        """The shared zeropage, or the huge zero folio (which also sets KPF_THP)."""
        return self.flag(abi.KPF_ZERO_PAGE)

    @property
    def thp(self) -> bool:
        return self.flag(abi.KPF_THP)

    @property
    def nopage(self) -> bool:
        """No struct page in the kernel's sense (ZONE_DEVICE memory such as fsdax reads so)."""
        return self.flag(abi.KPF_NOPAGE)

    def describe(self) -> str:
        if not self.present:
            return f"{self.vaddr:#x}: not present"
        kinds = [k for k, on in (("zeropage", self.zero_page), ("thp", self.thp),
                                 ("file", self.file), ("exclusive", self.exclusive),
                                 ("nopage", self.nopage)) if on]
        return f"{self.vaddr:#x}: pfn {self.pfn:#x} {' '.join(kinds) or 'anon'}"


def entry_pfn(entry: int) -> int:
    """The PFN of a present entry; 0 when absent, swapped or hidden from non-root."""
    return entry & PFN_MASK if entry & PRESENT and not entry & SWAPPED else 0


def decode(vaddr: int, entry: int, flags: int | None) -> Page:
    return Page(vaddr, bool(entry & PRESENT) and not entry & SWAPPED, entry_pfn(entry),
                bool(entry & EXCLUSIVE), bool(entry & FILE), flags)


class PageMap:
    """Reads pagemap and kpageflags; keep one per process (both are plain files)."""

    def __init__(self) -> None:
        self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._kpageflags: int | None = os.open("/proc/kpageflags", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._kpageflags = None

    def pages(self, addr: int, length: int) -> list[Page]:
        first, count = addr // PAGE_SIZE, -(-length // PAGE_SIZE)
        raw = os.pread(self._pagemap, 8 * count, 8 * first)
        out = []
        for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
            out.append(decode((first + i) * PAGE_SIZE, entry, self._flags(entry_pfn(entry))))
        return out

    def _flags(self, pfn: int) -> int | None:
        if not pfn or self._kpageflags is None:
            return None
        return struct.unpack("<Q", os.pread(self._kpageflags, 8, 8 * pfn))[0]

    def sees_pfns(self) -> bool:
        """True when PFNs and their flags are visible (root with CAP_SYS_ADMIN)."""
        return self._kpageflags is not None and os.geteuid() == 0

    def close(self) -> None:
        os.close(self._pagemap)
        if self._kpageflags is not None:
            os.close(self._kpageflags)
