"""progress.jsonl through virtio-serial ports, in a pinhole VM. A write() to a port is on the
host, in the run's progress.jsonl, once the guest's kick has been handled: 12-22 us under TCG,
where a write() over uncached 9p is a round trip to QEMU's 9p server (1.7 ms in an idle guest,
about 5 ms beside two busy workers; measured 2026-11-27). The host gives the VM COUNT ports,
each appending to that file (QEMU's file chardev, append=on); a port opens for one process at
a time (drivers/char/virtio_console.c port_fops_open(): EBUSY), so each process claims its own.
The guest still reads the file over 9p (the controller's recovery of a dead worker)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

NAME = "pinhole.progress"
# The guest's controller and three xdist workers (pinhole matrix gives two); a process after
# them writes over 9p, as outside a VM.
COUNT = 4
SYSFS = Path("/sys/class/virtio-ports")


def qemu_options(path: Path, count: int = COUNT) -> str:
    """QEMU's options for `count` ports named NAME.N, each appending to the host's `path`;
    quoted for the shell vng runs virtme-run in (an --rwdir path may hold a space)."""
    chardev = "file,id=pinhole-progress-{},path={},append=on"
    return " ".join(f"-chardev {shlex.quote(chardev.format(i, path))} "
                    f"-device virtserialport,name={NAME}.{i},chardev=pinhole-progress-{i}"
                    for i in range(count))


def _ours() -> list[Path]:
    """The device nodes of this VM's progress ports, in port order."""
    found = []
    for entry in sorted(SYSFS.glob("*/name")):
        try:
            if entry.read_text().strip().startswith(NAME + "."):
                found.append(Path("/dev", entry.parent.name))
        except OSError:
            continue
    return found


def claim() -> tuple[int, Path] | None:
    """A progress port of this VM opened for this process (its fd and node), or None: no
    port is free, or this is no pinhole VM. What goes through it: framing.Appender."""
    for node in _ours():
        try:
            return os.open(node, os.O_WRONLY | os.O_CLOEXEC), node
        except OSError:  # another process of the guest holds it
            continue
    return None


def described() -> str:
    """What guest.json says of the ports."""
    found = _ours()
    if not found:
        return "none: every process writes progress.jsonl over 9p"
    return (f"{len(found)} virtio ports ({NAME}.N) to the host's progress.jsonl: one a process, "
            "then over 9p")

