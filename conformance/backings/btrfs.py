"""btrfs: copy-on-write extents, checksummed data, reflink."""

from .blockfs import BlockFs


class Btrfs(BlockFs):
    name = fstype = "btrfs"
    mkfs = ["mkfs.btrfs", "-q", "-f"]
    image_size = 160 << 20
    reflinks = True
    traits = BlockFs.traits | {"reflink"}
    packages = ("btrfs-progs", "btrfs-progs")


# What this module adds to the registry (backings/__init__.py).
PROVIDES = (Btrfs,)
