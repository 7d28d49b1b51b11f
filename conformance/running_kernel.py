"""The running kernel: release, version number for spec ranges, and its build config."""

from __future__ import annotations

import gzip
import os
import platform
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


def parse_version(release: str) -> tuple[int, int, int]:
    """'6.12.43+deb13-amd64' → (6, 12, 43); '6.5-rc1' → (6, 5, 0)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        raise ValueError(f"not a kernel release: {release!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


@dataclass(frozen=True)
class KernelConfig:
    """CONFIG_* options and the file they were read from (empty when none was found)."""

    source: str
    options: dict[str, str] = field(default_factory=dict)

    def state(self, name: str) -> str | None:
        """'y', 'm', a value, 'n' when the config says not set, None when no config is known."""
        if not self.source:
            return None
        return self.options.get(name, "n")


def parse_config(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


@cache
def config() -> KernelConfig:
    release = platform.release()
    # PINHOLE_KERNEL_CONFIG: set by `pinhole matrix` for the kernel it boots.
    given = [Path(p) for p in [os.environ.get("PINHOLE_KERNEL_CONFIG")] if p]
    for path in (*given, Path("/proc/config.gz"), Path(f"/boot/config-{release}"),
                 Path(f"/lib/modules/{release}/build/.config")):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
        return KernelConfig(str(path), parse_config(text))
    return KernelConfig("")


@dataclass(frozen=True)
class Kernel:
    release: str
    version: str
    machine: str

    @property
    def number(self) -> tuple[int, int, int]:
        return parse_version(self.release)

    def as_dict(self) -> dict[str, str]:
        return {"release": self.release, "version": self.version, "machine": self.machine}


def running() -> Kernel:
    u = os.uname()
    return Kernel(u.release, u.version, u.machine)


def filesystems() -> set[str]:
    """Filesystem types the running kernel has registered (built in or loaded)."""
    return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line}
