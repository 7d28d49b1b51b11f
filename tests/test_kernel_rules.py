"""The built-in spec says what each kernel's source says: one row per rule read in the 6.1 and
6.12 sources (or the commit that changed it), as (case id, kernel, outcomes, errno, a word of
the reason that must be cited)."""

import pytest

from conformance.dimensions import Case
from conformance.expectations import Spec

SPEC = Spec.load()


@pytest.mark.parametrize("case_id,kernel,outcomes,errno,cites", [
    # gup_test admission: check_vma_flags() decides, pin_user_pages() being the slow path.
    ("gup_test.ext4.shared.rw.hole.none.admission", (6, 12, 0), ("refused",), "EFAULT",
     "writable_file_mapping_allowed"),
    ("gup_test.xfs.shared.ro.hole.none.admission", (6, 12, 0), ("pinned",), None, ""),
    ("gup_test.ext4.shared.rw.hole.none.admission", (6, 1, 0), ("pinned",), None, ""),
    ("gup_test.ext4-dax.private.ro.stored.none.admission", (6, 12, 0), ("refused",),
     "EOPNOTSUPP", "vma_is_fsdax"),
    # fsdax: unwritten extents and punched ranges load the zeropage like holes.
    ("vmsplice.ext4-dax.shared.ro.unwritten.none.zeropage", (6, 12, 0), ("disconnected",),
     None, "IOMAP_UNWRITTEN"),
    ("vmsplice.xfs-dax.shared.ro.punched.none.file-to-pin", (6, 1, 0), ("disconnected",), None,
     "dax_load_hole"),
    ("odirect.ext4-dax.private.ro.punched.none.zeropage", (6, 12, 0), ("disconnected",), None,
     "dax_load_hole"),
    # udmabuf and hugetlb memfds: find_get_page_flags(), the v6.4 revert, memfd_pin_folios().
    ("udmabuf.memfd-hugetlb.shared.rw.hole.none.admission", (6, 1, 0), ("refused",), "EINVAL",
     "find_get_page_flags"),
    ("udmabuf.memfd-hugetlb.shared.rw.written.none.admission", (6, 1, 0), ("pinned",), None, ""),
    ("udmabuf.memfd-hugetlb.shared.rw.written.none.admission", (6, 6, 0), ("refused",),
     "EBADFD", "b7cb3821905b"),
    ("udmabuf.memfd-hugetlb.shared.rw.hole.none.admission", (6, 12, 0), ("pinned",), None, ""),
    # copy_file_range() is a reflink on xfs and btrfs only.
    ("rdma.xfs.shared.ro.written.copy-file-range.file-to-pin", (6, 12, 0),
     ("detached", "coherent"), None, "xfs_reflink_remap_prep"),
    ("rdma.ext4.shared.ro.written.copy-file-range.file-to-pin", (6, 12, 0), ("coherent",),
     None, ""),
    # R/O long-term pins before 6.2: RDMA pinned with FOLL_WRITE; file pages were not unshared.
    ("rdma.ext4.private.ro.hole.pwrite.file-to-pin", (6, 1, 0), ("detached",), None,
     "FOLL_FORCE"),
    ("gup_test.ext4.private.ro.hole.pwrite.file-to-pin", (6, 1, 0), ("coherent",), None,
     "PageAnon"),
    ("gup_test.ext4.private.ro.hole.pwrite.file-to-pin", (6, 12, 0), ("detached",), None,
     "gup_must_unshare"),
    # A page stored through a MAP_PRIVATE fsdax mapping is anonymous: GUP-fast pins it.
    ("io_uring.xfs-dax.private.rw.stored.none.admission", (6, 12, 0), ("pinned",), None, ""),
    ("io_uring.xfs-dax.private.rw.stored.none.admission", (6, 1, 0), ("refused",),
     "EOPNOTSUPP", ""),
    ("io_uring.ext4.shared.rw.stored.none.admission", (6, 12, 0), ("refused",), "EFAULT", ""),
    # Layers: a refused mutation or pin overrides what the layers below say of the cell.
    ("udmabuf.xfs-dax.shared.rw.hole.none.admission", (6, 12, 0), ("refused",), "EBADFD",
     "shmem_file"),
    ("udmabuf.memfd.shared.rw.written.truncate-down.file-to-pin", (6, 12, 0), ("unsupported",),
     "EPERM", "shmem_setattr"),
    ("vmsplice.xfs-dax.shared.ro.written.reflink.file-to-pin", (6, 12, 0), ("unsupported",),
     "EOPNOTSUPP", "xfs_has_reflink"),
    ("vmsplice.xfs-dax.shared.ro.written.punch-hole.file-to-pin", (6, 12, 0), ("blocked",), None,
     "dax_layout_busy_page_range"),
    ("vmsplice.xfs-dax.shared.ro.written.fallocate.file-to-pin", (6, 1, 0), ("blocked",), None,
     "xfs_file_fallocate"),
    ("vmsplice.ext4-dax.shared.ro.written.fallocate.file-to-pin", (6, 12, 0), ("coherent",),
     None, ""),
    ("vmsplice.xfs-dax.private.ro.stored.fallocate.file-to-pin", (6, 12, 0), ("detached",),
     None, "do_wp_page"),
    # fsdax cannot reflink: copy_file_range() writes into the hole like pwrite (the hazard).
    ("vmsplice.xfs-dax.shared.ro.hole.copy-file-range.file-to-pin", (6, 12, 0),
     ("disconnected",), None, "do_splice_direct"),
    ("vmsplice.ext4-dax.shared.ro.punched.odirect-write.file-to-pin", (6, 12, 0),
     ("detached", "coherent"), None, "dax_load_hole"),
    # ext4's collapse and insert truncate the page cache with even_cows, fsdax or not.
    ("odirect.ext4-dax.private.rw.stored.insert-range.file-to-pin", (6, 1, 0), ("coherent",),
     None, "truncate_pagecache"),
    ("odirect.xfs-dax.private.rw.stored.insert-range.file-to-pin", (6, 12, 0), ("detached",),
     None, ""),
    ("rdma.ext4.shared.rw.hole.odirect-write.file-to-pin", (6, 12, 0), ("refused",), "EFAULT",
     "writable_file_mapping_allowed"),
    ("io_uring.xfs.shared.rw.hole.odirect-write.file-to-pin", (6, 1, 0), ("refused",),
     "EOPNOTSUPP", "34ed8d0dcd69"),
])
def test_rule(case_id, kernel, outcomes, errno, cites):
    exp = SPEC.expect(Case.from_id(case_id), kernel)
    assert (exp.outcomes, exp.errno) == (outcomes, errno), exp.entries[-1].where
    assert cites in exp.reason


def test_o_direct_writes_detach_long_term_pins_where_they_are_admitted():
    """The limitation shared by every long-term pin, under the refusals of those not admitted."""
    case = Case.from_id("rdma.ext4.shared.ro.hole.odirect-write.file-to-pin")
    exp = SPEC.expect(case, (6, 12, 0))
    assert (exp.outcomes, exp.known, exp.sometimes) == (("coherent",), "detached", True)
    assert "invalidate_inode_pages2_range" in exp.known_reason


def test_unshare_was_unreliable_before_6_2():
    """gup_test's R/O pin of a COW file mapping missed the process's own stores before 6.2: a
    known limitation there, the correct behaviour after."""
    case = Case.from_id("gup_test.memfd.private.ro.hole.store.file-to-pin")
    old, new = SPEC.expect(case, (6, 1, 0)), SPEC.expect(case, (6, 12, 0))
    assert old.known == "disconnected" and "v6.2" in old.known_reason
    assert new.known is None and new.outcomes == ("detached",)
