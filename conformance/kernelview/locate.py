"""Where each pin keeps its pages in the kernel: one locator per pin mechanism, each returning
the `struct page *` of every pinned base page in the order of the pinned range.

The objects are found from this process's own file descriptors (drgn's fget() on this task),
so nothing else on the machine is looked at.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import Skip

if TYPE_CHECKING:
    from drgn import Object, Program

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


def _span(first: Object, offset: int, length: int) -> list[Object]:
    """The base pages a (page, offset, length) segment covers (bio_vec, scatterlist, pipe
    buffer): the page pointer may be a folio's head with the offset reaching into it."""
    start = first + (offset >> PAGE_SHIFT)
    inner = offset & (PAGE_SIZE - 1)
    return [start + k for k in range(-(-(inner + length) // PAGE_SIZE))]


def _file(prog: Program, task: Object, fd: int) -> Object:
    from drgn.helpers.linux.fs import fget

    f = fget(task, fd)
    if not f:
        raise RuntimeError(f"fd {fd} of this process is not open in the kernel's view")
    return f


def io_uring(prog: Program, task: Object, pinned: object) -> tuple[list[Object], str]:
    """The ring's registered buffer table: io_ring_ctx->user_bufs[i] (io_uring/rsrc.c
    io_sqe_buffer_register(), to v6.12) or ->buf_table.nodes[i]->buf (v6.13 on), each an
    io_mapped_ubuf whose bvecs hold the pinned pages (with folio coalescing, from v6.10, a
    bvec may start at a folio's head and span the folio)."""
    from drgn import cast

    ring = pinned.mech.ring  # type: ignore[attr-defined]
    ctx = cast("struct io_ring_ctx *", _file(prog, task, ring.fd).private_data)
    if ctx.type_.type.has_member("user_bufs"):
        bufs = [ctx.user_bufs[i] for i in range(ctx.nr_user_bufs)]
    else:
        table = ctx.buf_table
        bufs = [table.nodes[i].buf for i in range(table.nr) if table.nodes[i]]
    for imu in bufs:
        if imu and imu.ubuf.value_() == pinned.addr:  # type: ignore[attr-defined]
            pages = [p for i in range(imu.nr_bvecs) for p in
                     _span(imu.bvec[i].bv_page, imu.bvec[i].bv_offset.value_(),
                           imu.bvec[i].bv_len.value_())]
            return pages, f"io_uring ring fd {ring.fd}: io_mapped_ubuf {hex(imu.value_())}"
    raise RuntimeError(f"no registered buffer at {pinned.addr:#x} in the ring's table")  # type: ignore[attr-defined]


def udmabuf(prog: Program, task: Object, pinned: object) -> tuple[list[Object], str]:
    """The udmabuf's folio array (drivers/dma-buf/udmabuf.c udmabuf_create(): folios[i] with
    the byte offset offsets[i] into it, from v6.11) or its page array (pages[i], before)."""
    from drgn import cast

    dmabuf = cast("struct dma_buf *", _file(prog, task, pinned.fd).private_data)  # type: ignore[attr-defined]
    ubuf = cast("struct udmabuf *", dmabuf.priv)
    n = ubuf.pagecount.value_()
    if ubuf.type_.type.has_member("folios"):
        pages = [cast("struct page *", ubuf.folios[i]) + (ubuf.offsets[i].value_() >> PAGE_SHIFT)
                 for i in range(n)]
    else:
        pages = [ubuf.pages[i] for i in range(n)]
    return pages, f"udmabuf {hex(ubuf.value_())} (dma-buf fd {pinned.fd})"  # type: ignore[attr-defined]


def _uverbs_fds() -> list[int]:
    """This process's /dev/infiniband/uverbsN descriptors."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/dev/infiniband/uverbs"):
                found.append(int(name))
        except OSError:
            continue
    return found


def rdma(prog: Program, task: Object, pinned: object) -> tuple[list[Object], str]:
    """The MR's ib_umem scatterlist (drivers/infiniband/core/umem.c ib_umem_get()): the MR is
    the uobject its handle names in the uverbs file's idr, and on rxe an rxe_mr holding the
    umem (drivers/infiniband/sw/rxe/rxe_mr.c rxe_mr_init_user())."""
    from drgn import Object, cast, container_of
    from drgn.helpers.linux.xarray import xa_load

    handle = pinned.mr.handle  # type: ignore[attr-defined]
    for fd in _uverbs_fds():
        ufile = cast("struct ib_uverbs_file *", _file(prog, task, fd).private_data)
        uobj = cast("struct ib_uobject *", xa_load(ufile.idr.address_of_(), handle))
        if not uobj or not uobj.object:
            continue
        mr = cast("struct ib_mr *", uobj.object)
        if mr.device.ops.driver_id.format_(type_name=False) != "RDMA_DRIVER_RXE":
            raise Skip("the kernel view knows where rxe keeps an MR's umem, not "
                       f"{mr.device.ops.driver_id.format_(type_name=False)}")
        umem = container_of(mr, "struct rxe_mr", "ibmr").umem
        sgt = umem.sgt_append.sgt
        pages, sg = [], sgt.sgl
        for _ in range(sgt.orig_nents.value_()):
            link = sg.page_link.value_()
            if link & 1:  # SG_CHAIN: the entry points at the next array
                sg = Object(prog, "struct scatterlist *", link & ~3)
                link = sg.page_link.value_()
            pages += _span(Object(prog, "struct page *", link & ~3), sg.offset.value_(),
                           sg.length.value_())
            sg += 1
        # ib_umem_get() fills the table from the page of umem->address at offset 0.
        return pages, f"rxe MR handle {handle}: ib_umem {hex(umem.value_())}"
    raise RuntimeError(f"no MR with handle {handle} in this process's uverbs files")


def gup_test(prog: Program, task: Object, pinned: object) -> tuple[list[Object], str]:
    """gup_test's single pin set (mm/gup_test.c pin_longterm_test_start(): the static
    pin_longterm_test_pages array)."""
    pages = prog["pin_longterm_test_pages"]
    n = prog["pin_longterm_test_nr_pages"].value_()
    return [pages[i] for i in range(n)], f"gup_test pin_longterm_test_pages ({n} pages)"


def vmsplice(prog: Program, task: Object, pinned: object) -> tuple[list[Object], str]:
    """The pipes' buffers (fs/splice.c vmsplice_to_pipe(): one pipe_buffer per page, from
    tail to head of each ring)."""
    from drgn import cast

    pages = []
    for r, _ in pinned.pipes:  # type: ignore[attr-defined]
        pipe = cast("struct pipe_inode_info *", _file(prog, task, r).private_data)
        mask = pipe.ring_size.value_() - 1
        for slot in range(pipe.tail.value_(), pipe.head.value_()):
            buf = pipe.bufs[slot & mask]
            pages += _span(buf.page, buf.offset.value_(), buf.len.value_())
    return pages, f"{len(pinned.pipes)} pipe(s)' buffers"  # type: ignore[attr-defined]


def odirect(prog: Program, task: Object, pinned: object) -> tuple[list[Object], str]:
    raise Skip("O_DIRECT holds its short-term pin only during each I/O: between I/Os there are "
               "no pinned folios for the kernel view to read")


LOCATORS: dict[str, Callable[[Program, Object, object], tuple[list[Object], str]]] = {
    "io_uring": io_uring,
    "udmabuf": udmabuf,
    "rdma": rdma,
    "gup_test": gup_test,
    "vmsplice": vmsplice,
    "odirect": odirect,
}
