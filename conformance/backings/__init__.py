"""Backings by name. A new backing is a module here whose PROVIDES names its classes, plus
its module name in MODULES, in the order reports list them."""

from __future__ import annotations

from importlib import import_module

from .base import Availability, Backing

MODULES = ("memfd", "tmpfs", "ext4", "xfs", "btrfs", "fsdax")

BACKINGS: dict[str, type[Backing]] = {
    cls.name: cls for m in MODULES for cls in import_module(f".{m}", __name__).PROVIDES
}

__all__ = ["Availability", "Backing", "BACKINGS"]
