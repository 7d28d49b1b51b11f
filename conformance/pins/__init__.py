"""Pin mechanisms by name. A new mechanism is a module here whose PROVIDES names its class,
plus its module name in MODULES, in the order reports list them."""

from __future__ import annotations

from importlib import import_module

from .base import Mechanism, Pinned

MODULES = ("io_uring", "udmabuf", "rdma", "guptest", "vmsplice", "odirect")

MECHANISMS: dict[str, type[Mechanism]] = {
    cls.name: cls for m in MODULES for cls in import_module(f".{m}", __name__).PROVIDES
}

__all__ = ["Mechanism", "Pinned", "MECHANISMS"]
