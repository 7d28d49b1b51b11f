"""Backings by name, in the order reports list them."""

from __future__ import annotations

from .base import Availability, Backing
from .btrfs import Btrfs
from .ext4 import Ext4
from .fsdax import Ext4Dax, XfsDax
from .memfd import Memfd, MemfdHugetlb
from .tmpfs import Hugetlbfs, Tmpfs
from .xfs import Xfs

BACKINGS: dict[str, type[Backing]] = {
    cls.name: cls
    for cls in (Memfd, MemfdHugetlb, Tmpfs, Hugetlbfs, Ext4, Xfs, Btrfs, Ext4Dax, XfsDax)
}

__all__ = ["Availability", "Backing", "BACKINGS"]
