"""RDMA memory registration (ibv_reg_mr → ib_umem_get(), FOLL_LONGTERM) with rdma-core's
pyverbs on the rxe soft-RoCE driver.

Access 'ro' registers with IBV_ACCESS_REMOTE_READ only: from v6.2 a read-only long-term pin,
the case nearest the zeropage hazard; before v6.2 ib_umem_get() pinned every registration
with FOLL_WRITE (plus FOLL_FORCE for read-only ones), so 'ro' was a write pin too (removed by
"RDMA/umem: remove FOLL_FORCE usage", v6.2). Access 'rw' adds LOCAL_WRITE and REMOTE_WRITE
(FOLL_WRITE). The
pinned pages are observed with RDMA READ and changed with RDMA WRITE over an RC queue pair
connected to itself, so what is checked is what the device moves. pinhole creates an rxe link
on loopback when there is no RDMA device and deletes only the one it created.
"""

from __future__ import annotations

import errno
import glob
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

from .. import abi
from ..errors import SetupFailed
from ..model import Availability
from ..syscalls import AlignedBuffer, madvise
from .base import Mechanism, Pinned

LINK = "pinhole_rxe0"
IPV4_MAPPED = "0000:0000:0000:0000:0000:ffff:"
PORT = 1
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def devices() -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob("/sys/class/infiniband/*"))


def _verbs() -> SimpleNamespace:
    """pyverbs, imported late: only the distro's build works (see the README)."""
    import pyverbs.enums as e
    from pyverbs.addr import AHAttr, GlobalRoute
    from pyverbs.cq import CQ
    from pyverbs.device import Context
    from pyverbs.mr import MR
    from pyverbs.pd import PD
    from pyverbs.pyverbs_error import PyverbsRDMAError
    from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr
    from pyverbs.wr import SGE, SendWR

    return SimpleNamespace(e=e, AHAttr=AHAttr, GlobalRoute=GlobalRoute, CQ=CQ, Context=Context,
                           MR=MR, PD=PD, Error=PyverbsRDMAError, QP=QP, QPAttr=QPAttr,
                           QPCap=QPCap, QPInitAttr=QPInitAttr, SGE=SGE, SendWR=SendWR)


def as_oserror(exc: Exception, what: str) -> OSError:
    """pyverbs errors carry the kernel's errno; verdicts compare errno names."""
    code = getattr(exc, "error_code", 0) or errno.EIO
    return OSError(code, f"{what}: {errno.errorcode.get(code, code)} ({exc})")


class MemoryRegion(Pinned):
    def __init__(self, mech: Rdma, addr: int, length: int, access: str) -> None:
        v = mech.v
        self.mech, self.addr, self.length, self.view_addr = mech, addr, length, addr
        flags = v.e.IBV_ACCESS_REMOTE_READ
        if access == "rw":
            flags |= v.e.IBV_ACCESS_LOCAL_WRITE | v.e.IBV_ACCESS_REMOTE_WRITE
        try:
            self.mr = v.MR(mech.pd, length, flags, address=addr)
        except v.Error as exc:
            raise as_oserror(exc, f"ibv_reg_mr({access})") from None

    def _transfer(self, opcode: int, offset: int, length: int) -> None:
        """One signalled RDMA READ or WRITE between the local buffer and the pinned MR, at
        offset into both."""
        m = self.mech
        e = m.v.e
        sge = m.v.SGE(m.local.buf + offset, length, m.local.lkey)
        wr = m.v.SendWR(opcode=opcode, num_sge=1, sg=[sge], send_flags=e.IBV_SEND_SIGNALED)
        wr.set_wr_rdma(self.mr.rkey, self.addr + offset)
        m.qp.post_send(wr)
        while True:
            polled, wcs = m.cq.poll()
            if polled:
                break
        if wcs[0].status != e.IBV_WC_SUCCESS:
            m.reconnect()  # an errored QP flushes everything after: start this worker afresh
            raise OSError(errno.EIO, f"RDMA completion status {wcs[0].status}")

    def read_at(self, offset: int, length: int) -> bytes:
        self._transfer(self.mech.v.e.IBV_WR_RDMA_READ, offset, length)
        return self.mech.local.read(length, offset)

    def write_at(self, offset: int, data: bytes) -> None:
        self.mech.local.write(data, len(data), offset)
        self._transfer(self.mech.v.e.IBV_WR_RDMA_WRITE, offset, len(data))

    def release(self) -> None:
        if self.mr is not None:
            self.mr.close()
            self.mr = None


class Rdma(Mechanism):
    name = "rdma"
    access = ("ro", "rw")
    traits = frozenset({"longterm", "writable"})
    modules = {"rdma_rxe": "/sys/class/infiniband/*"}
    created = False
    local_size = 2 << 20  # the largest pinned range: one 2 MiB huge page

    def availability(self) -> Availability:
        no_pyverbs = Availability.no(
            "needs the distro's pyverbs: apt-get install python3-pyverbs ibverbs-providers "
            "(Fedora: python3-pyverbs), in a venv made with --system-site-packages")
        if importlib.util.find_spec("pyverbs") is None:
            return no_pyverbs
        if devices():
            yes = Availability.yes(f"RDMA devices: {' '.join(devices())}")
        elif not (os.path.exists("/sys/module/rdma_rxe") and self._rdma_tool()):
            return Availability.no("no RDMA device: modprobe rdma_rxe (and iproute2's rdma), "
                                   "or boot a kernel with it (`pinhole matrix`)")
        elif os.geteuid() != 0:
            return Availability.no("needs root to add an rxe link: rdma link add rxe0 type rxe "
                                   "netdev lo")
        else:
            yes = Availability.yes(f"pinhole adds {LINK} on lo")
        # Imported last: 25-45 ms of each process's plan, where there is nothing to use it on.
        try:
            _verbs()
        except ImportError:  # there, but not a build that loads (a pip wheel, another Python)
            return no_pyverbs
        return yes

    @staticmethod
    def _rdma_tool() -> str | None:
        return shutil.which("rdma", path=f"{os.environ.get('PATH', '')}:{GUEST_PATH}")

    def setup(self) -> None:
        if not devices():
            run = subprocess.run([self._rdma_tool() or "rdma", "link", "add", LINK, "type",
                                  "rxe", "netdev", "lo"], capture_output=True, text=True)
            if run.returncode:
                raise SetupFailed(f"rdma link add {LINK} failed: {run.stderr.strip()}")
            self.created = True
        self.v = v = _verbs()
        e = v.e
        self.ctx = v.Context(name=devices()[0])
        self.pd = v.PD(self.ctx)
        self.cq = v.CQ(self.ctx, 4)
        # The local buffer is pinhole's own, left out of every fork (MADV_DONTFORK): being
        # registered, its pages are pinned, and fork() copies each pinned anonymous page for
        # the child at once (mm/memory.c copy_present_page()), 9-10 ms of a fork-write
        # mutation's fork under TCG. The children store only into the file's mapping.
        self.local_buffer = AlignedBuffer(self.local_size)
        madvise(self.local_buffer.addr, self.local_size, abi.MADV_DONTFORK)
        self.local = v.MR(self.pd, self.local_size, e.IBV_ACCESS_LOCAL_WRITE,
                          address=self.local_buffer.addr)
        self.qp = None
        self.reconnect()

    def reconnect(self) -> None:
        """A new RC queue pair, connected to itself."""
        v, e = self.v, self.v.e
        if self.qp is not None:
            self.qp.close()
        cap = v.QPCap(max_send_wr=2, max_recv_wr=2, max_send_sge=1, max_recv_sge=1)
        self.qp = v.QP(self.pd, v.QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq,
                                             cap=cap))
        index, gid = self._gid()
        attr = v.QPAttr(qp_state=e.IBV_QPS_INIT)
        attr.qp_access_flags = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ
                                | e.IBV_ACCESS_REMOTE_WRITE)
        attr.port_num = PORT
        attr.path_mtu = e.IBV_MTU_4096  # lo's MTU allows it: a 4 KiB window is one packet
        attr.dest_qp_num = self.qp.qp_num
        attr.rq_psn = attr.sq_psn = 0
        attr.max_rd_atomic = attr.max_dest_rd_atomic = 1
        # An ACK timeout of 4.096 us << 20 (4.3 s): a guest under TCG can be that slow.
        attr.min_rnr_timer, attr.timeout, attr.retry_cnt, attr.rnr_retry = 12, 20, 7, 7
        # The keyword is gr, whatever the docstring says (rdma-core 44).
        attr.ah_attr = v.AHAttr(port_num=PORT, is_global=1,
                                gr=v.GlobalRoute(dgid=gid, sgid_index=index))
        self.qp.to_rts(attr)

    def _gid(self):
        """A routable GID of the port: on lo the IPv4-mapped 127.0.0.1 one, never the
        fe80:: one rxe derives from lo's all-zero MAC (RTR then fails: ENETUNREACH)."""
        table = Path(f"/sys/class/infiniband/{devices()[0]}/ports/{PORT}/gids")
        gids = {int(p.name): p.read_text().strip() for p in table.iterdir()}
        usable = sorted((not g.startswith(IPV4_MAPPED), i) for i, g in gids.items()
                        if g.strip("0:") and not g.startswith("fe80"))
        if not usable:
            raise SetupFailed(f"no routable GID on {devices()[0]} port {PORT}: {gids}")
        index = usable[0][1]
        return index, self.ctx.query_gid(PORT, index)

    def pin(self, subject, access: str) -> Pinned:
        return MemoryRegion(self, subject.addr, subject.length, access)

    def close(self) -> None:
        for name in ("local", "local_buffer", "qp", "cq", "pd", "ctx"):
            part = getattr(self, name, None)
            if part is not None:
                part.close()
        if self.created:
            subprocess.run([self._rdma_tool() or "rdma", "link", "delete", LINK],
                           capture_output=True)
            self.created = False


# What this module adds to the registry (pins/__init__.py).
PROVIDES = (Rdma,)
