"""Detached mounts from the new mount API (fsopen/fsconfig/fsmount, Linux 5.2+).

A detached mount has no mount point: it appears in no /proc/mounts and is dissolved when
its last file descriptor closes, so a killed worker cannot leave it behind. Files on it are
reached through /proc/self/fd/N/... paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import abi
from .abi import ffi
from .syscalls import fail, syscall


def _context_log(fs_fd: int) -> str:
    """The messages the filesystem queued on its fs_context (why a mount was refused)."""
    msgs = []
    while True:
        try:
            msgs.append(os.read(fs_fd, 1024).decode(errors="replace").strip())
        except OSError:
            return "; ".join(m[2:] if m[1:2] == " " else m for m in msgs)


def kernel_has(fstype: str) -> bool:
    """Whether the kernel can mount fstype; fsopen() loads its module if needed (root)."""
    try:
        os.close(syscall(abi.SYS_fsopen, ffi.new("char[]", fstype.encode()), abi.FSOPEN_CLOEXEC,
                         name=f"fsopen({fstype})"))
    except OSError:
        return False
    return True


class DetachedMount:
    """A filesystem instance held by one fd; close() unmounts it."""

    def __init__(self, fstype: str, source: str | None = None,
                 options: dict[str, str | None] | None = None) -> None:
        self.fstype = fstype
        fs_fd = syscall(abi.SYS_fsopen, ffi.new("char[]", fstype.encode()), abi.FSOPEN_CLOEXEC,
                        name=f"fsopen({fstype})")
        try:
            settings = {"source": source or fstype, **(options or {})}
            for key, value in settings.items():
                self._set(fs_fd, key, value)
            try:
                syscall(abi.SYS_fsconfig, fs_fd, abi.FSCONFIG_CMD_CREATE, ffi.NULL, ffi.NULL, 0,
                        name=f"mount {fstype}")
            except OSError as e:
                why = _context_log(fs_fd)
                raise OSError(e.errno, f"{e.strerror}{': ' + why if why else ''}") from None
            self.fd = syscall(abi.SYS_fsmount, fs_fd, abi.FSMOUNT_CLOEXEC, 0,
                              name=f"fsmount({fstype})")
        finally:
            os.close(fs_fd)

    @staticmethod
    def _set(fs_fd: int, key: str, value: str | None) -> None:
        ckey = ffi.new("char[]", key.encode())
        if value is None:
            cmd, cval = abi.FSCONFIG_SET_FLAG, ffi.NULL
        else:
            cmd, cval = abi.FSCONFIG_SET_STRING, ffi.new("char[]", value.encode())
        try:
            syscall(abi.SYS_fsconfig, fs_fd, cmd, ckey, cval, 0, name=f"fsconfig({key})")
        except OSError as e:
            why = _context_log(fs_fd)
            raise fail(f"fsconfig({key}={value}){': ' + why if why else ''}", e.errno) from None

    def path(self, name: str = "") -> str:
        """A path that reaches `name` inside this mount, usable by this process."""
        return f"/proc/self/fd/{self.fd}/{name}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def mount_of(path: Path, mounts: str | None = None) -> tuple[str, list[str]] | None:
    """The filesystem type and options of the mount that holds path (the longest mount point
    that is a prefix of it), from /proc/self/mounts."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[int, str, list[str]] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fields[2], fields[3].split(","))
    return None if best is None else (best[1], best[2])
