"""A disk that loses writes, for the data-loss detector's positive control: device-mapper's
flakey target (drivers/md/dm-flakey.c) over a loop device. It starts as a plain linear map;
drop_writes() swaps in flakey's "drop_writes" feature, which completes every write without
storing it, as a disk with a lying cache would.

Driven by ioctls on /dev/mapper/control (include/uapi/linux/dm-ioctl.h), as dmsetup does, and
marked for deferred removal as soon as it is open (DM_DEFERRED_REMOVE): the kernel removes it
when its last user closes it, so a killed process leaves no device behind, as
LO_FLAGS_AUTOCLEAR does for the loop device under it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from . import abi
from .abi import ffi
from .backings.ext4 import Ext4
from .loop import LOOP_CONTROL, LoopDevice
from .model import Availability
from .scratch import scratch_dir
from .syscalls import ioctl

CONTROL = "/dev/mapper/control"
# What the VM loads for the control (guest.py), with what shows it is there.
MODULES = {"dm_flakey": "/sys/module/dm_flakey"}
HEAD = ffi.sizeof("struct dm_ioctl")
SPEC = ffi.sizeof("struct dm_target_spec")
_names = itertools.count()


def dm(request: int, what: str, name: str = "", flags: int = 0,
       target: tuple[int, str, str] | None = None, room: int = 0):
    """One device-mapper ioctl: a struct dm_ioctl for device `name`, followed by one target
    (sectors, type, parameters) or `room` bytes for the kernel's answer. Returns the buffer."""
    params = f"{target[2]}\0".encode() if target else b""
    size = HEAD + max(room, -(-(SPEC + len(params)) // 8) * 8 if target else 0)
    buf = ffi.new("char[]", size)
    head = ffi.cast("struct dm_ioctl *", buf)
    head.version[0] = abi.DM_VERSION_MAJOR
    head.data_size, head.data_start, head.flags = size, HEAD, flags
    head.name = name.encode()
    if target:
        head.target_count = 1
        spec = ffi.cast("struct dm_target_spec *", buf + HEAD)
        spec.length, spec.target_type = target[0], target[1].encode()
        ffi.memmove(buf + HEAD + SPEC, params, len(params))
    fd = os.open(CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        ioctl(fd, request, buf, what)
    finally:
        os.close(fd)
    return buf


def target_types() -> list[str]:
    """The target types the kernel has loaded (DM_LIST_VERSIONS)."""
    buf = dm(abi.DM_LIST_VERSIONS, "DM_LIST_VERSIONS", room=16384)
    head = ffi.cast("struct dm_ioctl *", buf)
    names, at = [], head.data_start
    while at + ffi.sizeof("struct dm_target_versions") <= head.data_size:
        entry = ffi.cast("struct dm_target_versions *", buf + at)
        names.append(ffi.string(entry.name).decode())
        if not entry.next:
            break
        at += entry.next
    return names


def availability() -> Availability:
    if os.geteuid() != 0:
        return Availability.no("needs root: device-mapper and loop devices (run as root)")
    if not os.path.exists(LOOP_CONTROL):
        return Availability.no("needs /dev/loop-control: modprobe loop (CONFIG_BLK_DEV_LOOP)")
    missing = Availability.no("needs device-mapper's flakey target: modprobe dm_flakey "
                              "(CONFIG_BLK_DEV_DM, CONFIG_DM_FLAKEY; Debian's kernels have it, "
                              "so `pinhole matrix` runs this control)")
    try:
        return Availability.yes() if "flakey" in target_types() else missing
    except OSError:  # no node, or a node without the driver behind it (ENODEV)
        return missing


class FlakeyDevice:
    """A device-mapper device over `device`, removed by the kernel once no one has it open."""

    fd = -1

    def __init__(self, device: str) -> None:
        self.sectors = int(Path(f"/sys/class/block/{Path(device).name}/size").read_text())
        self.device = device
        self.name = f"pinhole-{os.getpid()}-{next(_names)}"
        created = dm(abi.DM_DEV_CREATE, "DM_DEV_CREATE", self.name)
        try:
            self._switch(f"linear {device} 0")  # the disk appears with its first table
            dev = ffi.cast("struct dm_ioctl *", created).dev
            node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve(strict=True)
            self.path = f"/dev/{node.name}"  # devtmpfs makes it, with or without udev
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            # Open (by us, later by the mount), it goes when the last user closes it.
            dm(abi.DM_DEV_REMOVE, "DM_DEV_REMOVE", self.name, abi.DM_DEFERRED_REMOVE)

    def _switch(self, table: str, suspend: bool = False) -> None:
        """Load the one-target table and make it live. Suspending first freezes the
        filesystem on the device, which writes back what it holds."""
        kind, params = table.split(" ", 1)
        if suspend:
            dm(abi.DM_DEV_SUSPEND, "DM_DEV_SUSPEND", self.name, abi.DM_SUSPEND_FLAG)
        dm(abi.DM_TABLE_LOAD, "DM_TABLE_LOAD", self.name, target=(self.sectors, kind, params))
        dm(abi.DM_DEV_SUSPEND, "DM_DEV_SUSPEND (resume)", self.name)

    def drop_writes(self) -> None:
        """From now on every write completes and nothing is stored: flakey, never up (an up
        interval of 0 s, down for 1 s in every 1 s), dropping writes while down."""
        self._switch(f"flakey {self.device} 0 0 1 1 drop_writes", suspend=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FlakeyExt4(Ext4):
    """ext4 on a FlakeyDevice over its loop device: small and without a journal, less to make
    under TCG and nothing to replay."""

    mkfs = [*Ext4.mkfs, "-O", "^has_journal"]
    image_size = 16 << 20
    flakey: FlakeyDevice | None = None

    def setup(self) -> None:
        self.loop = LoopDevice(self.image_size, scratch_dir())
        self.flakey = FlakeyDevice(self.loop.path)
        self.source = self.flakey.path
        self._mkfs()
        self._mount()

    def close(self) -> None:
        super().close()
        if self.flakey:
            self.flakey.close()
