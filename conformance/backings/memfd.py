"""memfd_create() files: shmem without a mount, the memfd that udmabuf also pins."""

from __future__ import annotations

import os

from .. import hugepages
from ..abi import MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_HUGE_SHIFT, MFD_HUGETLB
from .base import Availability, Backing


class Memfd(Backing):
    name = "memfd"
    traits = frozenset({"shmem"})
    flags = MFD_CLOEXEC | MFD_ALLOW_SEALING

    def availability(self) -> Availability:
        try:
            os.close(os.memfd_create("pinhole-probe", self.flags))
        except OSError as e:
            return Availability.no(f"memfd_create({self.name}) failed: {e.strerror}")
        return Availability.yes()

    def create(self, name: str) -> int:
        return os.memfd_create(f"pinhole-{name}", self.flags)


class MemfdHugetlb(Memfd):
    name = "memfd-hugetlb"
    traits = frozenset({"hugetlb"})
    page_size = hugepages.SIZE_KB * 1024
    hugetlb = True
    flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | (21 << MFD_HUGE_SHIFT)  # 2 MiB

    def availability(self) -> Availability:
        missing = hugepages.availability_reason()
        return Availability.no(missing) if missing else super().availability()


# What this module adds to the registry (backings/__init__.py).
PROVIDES = (Memfd, MemfdHugetlb)
