"""Pin mechanisms by name, in the order reports list them."""

from __future__ import annotations

from .base import Mechanism, Pinned
from .guptest import GupTest
from .io_uring import IoUring
from .odirect import ODirect
from .rdma import Rdma
from .udmabuf import Udmabuf
from .vmsplice import Vmsplice

MECHANISMS: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (IoUring, Udmabuf, Rdma, GupTest, Vmsplice, ODirect)
}

__all__ = ["Mechanism", "Pinned", "MECHANISMS"]
