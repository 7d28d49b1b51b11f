"""Everything one pytest worker sets up once and reuses for all its cases."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from .availability import REGISTRIES, availability
from .backings import Backing
from .errors import SetupFailed, Skip
from .kmsg import Monitor
from .pagemap import PageMap
from .pins import Mechanism

if TYPE_CHECKING:
    from .runner import Waiting


class Worker:
    def __init__(self) -> None:
        self.pagemap = PageMap()
        self.monitor = Monitor()
        self._parts: dict[str, Backing | Mechanism | Skip | SetupFailed] = {}
        self._names = itertools.count()
        # pin-to-file cases whose files wait for their backing's remount (runner.settle())
        self.waiting: list[Waiting] = []

    def backing(self, name: str) -> Backing:
        return self._part("backing", name)  # type: ignore[return-value]

    def mechanism(self, name: str) -> Mechanism:
        return self._part("pin", name)  # type: ignore[return-value]

    def _part(self, dimension: str, name: str) -> Backing | Mechanism:
        """Set up on first use; a missing capability or a failed setup is remembered."""
        if name not in self._parts:
            part = REGISTRIES[dimension][name]()
            available = availability(dimension, name)
            if not available.ok:
                self._parts[name] = Skip(available.reason)
            else:
                try:
                    part.setup()
                except BaseException as e:
                    part.close()  # what setup did before it stopped
                    if not isinstance(e, Exception):
                        raise  # an interrupt (a timeout, Ctrl-C): set up again on next use
                    self._parts[name] = (e if isinstance(e, Skip)
                                         else SetupFailed(f"setting up {name} failed: {e}"))
                else:
                    self._parts[name] = part
        part = self._parts[name]
        if isinstance(part, Exception):
            raise part
        return part

    def file_name(self) -> str:
        return f"case-{next(self._names)}"

    def forget_parts(self) -> None:
        """Close every backing and mechanism; the next cell sets up afresh what it uses."""
        parts = [p for p in self._parts.values() if not isinstance(p, Exception)]
        self._parts.clear()
        self.waiting.clear()  # their files go with their backings' mounts
        for part in parts:
            part.close()

    def close(self) -> None:
        self.forget_parts()
        self.monitor.close()
        self.pagemap.close()
