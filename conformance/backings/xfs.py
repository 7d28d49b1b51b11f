"""xfs: dirty-tracked page cache, with reflink (FICLONERANGE) and COLLAPSE/INSERT_RANGE."""

from .blockfs import BlockFs


class Xfs(BlockFs):
    name = fstype = "xfs"
    mkfs = ["mkfs.xfs", "-q", "-f"]
    image_size = 320 << 20  # mkfs.xfs refuses filesystems under 300 MiB
    reflinks = True
    traits = BlockFs.traits | {"reflink"}
    packages = ("xfsprogs", "xfsprogs")


# What this module adds to the registry (backings/__init__.py).
PROVIDES = (Xfs,)
