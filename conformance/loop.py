"""Loop devices over unlinked sparse image files, detached by the kernel when their last user goes.

The image is created with O_TMPFILE (never has a name) and the device is configured with
LO_FLAGS_AUTOCLEAR, so a killed process leaves neither a file nor a device behind.
"""

from __future__ import annotations

import errno
import os
import tempfile

from . import abi
from .abi import ffi
from .syscalls import ioctl

LOOP_CONTROL = "/dev/loop-control"


def unnamed_file(where: str) -> int:
    """A file in `where` with no name: O_TMPFILE, or where the filesystem lacks it (overlayfs
    on 9p in a VM), a named file unlinked at once."""
    try:
        return os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    fd, path = tempfile.mkstemp(prefix="pinhole-image-", dir=where)
    os.unlink(path)
    return fd


class LoopDevice:
    """A loop device over an anonymous image of `size` bytes in directory `where`."""

    def __init__(self, size: int, where: str) -> None:
        image = unnamed_file(where)
        try:
            os.ftruncate(image, size)
            self.fd, self.path = self._attach(image)
        finally:
            os.close(image)  # the loop device holds the file now

    @staticmethod
    def _attach(image: int) -> tuple[int, str]:
        config = ffi.new("struct loop_config *")
        config.fd = image
        config.info.lo_flags = abi.LO_FLAGS_AUTOCLEAR
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(32):  # another process may take the free device first
                number = ioctl(control, abi.LOOP_CTL_GET_FREE, 0, "LOOP_CTL_GET_FREE")
                path = f"/dev/loop{number}"
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    ioctl(fd, abi.LOOP_CONFIGURE, config, f"LOOP_CONFIGURE({path})")
                except OSError as e:
                    os.close(fd)
                    if e.errno == errno.EBUSY:
                        continue
                    raise
                return fd, path
        finally:
            os.close(control)
        raise OSError(errno.EBUSY, "no free loop device after 32 tries")

    def close(self) -> None:
        """Drop our reference; the kernel detaches the device once no mount uses it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
