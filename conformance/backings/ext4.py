"""ext4: dirty-tracked page cache, so long-term write pins of MAP_SHARED files are refused."""

from .blockfs import BlockFs


class Ext4(BlockFs):
    name = fstype = "ext4"
    mkfs = ["mkfs.ext4", "-q", "-F", "-b", "4096"]
    image_size = 64 << 20
    packages = ("e2fsprogs", "e2fsprogs")


# What this module adds to the registry (backings/__init__.py).
PROVIDES = (Ext4,)
