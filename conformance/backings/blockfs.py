"""Block filesystems on a loop device over an unnamed sparse image, mounted detached."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import ClassVar

from ..errors import SetupFailed
from ..loop import LoopDevice
from ..mounts import DetachedMount, kernel_has
from ..scratch import scratch_dir
from .base import Availability, Backing, root_or


class BlockFs(Backing):
    persistent = True
    traits = frozenset({"persistent", "dirty-tracked"})
    modules = {"loop": "/dev/loop-control"}
    fstype: ClassVar[str]
    mkfs: ClassVar[list[str]]
    image_size: ClassVar[int]
    # Package that ships the mkfs tool: (Debian/Ubuntu, Fedora).
    packages: ClassVar[tuple[str, str]]
    mount_options: ClassVar[dict[str, str | None]] = {}

    loop: LoopDevice | None = None
    mount: DetachedMount | None = None
    source = ""  # the block device the filesystem is made on

    def availability(self) -> Availability:
        denied = root_or(f"loop devices and mounting {self.name}")
        if denied:
            return denied
        missing = self.missing()
        if missing:
            return Availability.no(missing)
        if not os.path.exists("/dev/loop-control"):
            return Availability.no("needs /dev/loop-control: modprobe loop (CONFIG_BLK_DEV_LOOP)")
        return Availability.yes()

    def missing(self) -> str | None:
        """What the kernel or the machine lacks for this filesystem, if anything."""
        if not kernel_has(self.fstype):
            return (f"kernel lacks {self.fstype}: modprobe {self.fstype}, "
                    f"or build with CONFIG_{self.fstype.upper()}_FS")
        if not shutil.which(self.mkfs[0]):
            deb, fedora = self.packages
            return f"needs {self.mkfs[0]}: apt-get install {deb} (Fedora: dnf install {fedora})"
        return None

    def setup(self) -> None:
        self.loop = LoopDevice(self.image_size, scratch_dir())
        self.source = self.loop.path
        self._mkfs()
        self._mount()

    def _mkfs(self) -> None:
        run = subprocess.run([*self.mkfs, self.source], capture_output=True, text=True)
        if run.returncode:
            raise SetupFailed(f"{self.mkfs[0]} {self.source} failed: {run.stderr.strip()}")

    def _mount(self) -> None:
        self.mount = DetachedMount(self.fstype, self.source, self.mount_options)

    def create(self, name: str) -> int:
        assert self.mount is not None
        return os.open(self.mount.path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                       0o600)

    def reopen(self, name: str, fd: int) -> int:
        assert self.mount is not None
        return os.open(self.mount.path(name), os.O_RDWR | os.O_CLOEXEC)

    def remove(self, name: str, fd: int) -> None:
        os.close(fd)
        assert self.mount is not None
        os.unlink(self.mount.path(name))

    def direct_write_detaches(self, state: str) -> bool:
        """The cached range is invalidated after the write (mm/filemap.c
        kiocb_invalidate_post_direct_write()), which can take the folio out of the cache."""
        return True

    def remount(self) -> bool:
        """Unmount (every file of the case must be closed) and mount again from the device."""
        assert self.mount is not None
        self.mount.close()
        self._mount()
        return True

    def close(self) -> None:
        if self.mount:
            self.mount.close()
        if self.loop:
            self.loop.close()
