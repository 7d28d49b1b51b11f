"""Which mutations take the page out of the file depends on the backing: checked on real
files of each backing on the running kernel."""

import os

import pytest

from conformance import mutations
from conformance.dimensions import Case
from conformance.mutations import Baseline
from conformance.subject import Subject


class Trial:
    """What mutations read of a trial: the case, the subject and the worker."""

    def __init__(self, case, subject, worker):
        self.case, self.subject, self.worker = case, subject, worker
        self.cleanup = []
        self.holds_private_copy = False


@pytest.mark.parametrize("backing,mutation,detaches", [
    ("ext4", "odirect-write", True),  # kiocb_invalidate_post_direct_write()
    ("xfs", "odirect-write", True),
    ("tmpfs", "odirect-write", False),  # shmem's O_DIRECT is buffered (6.6+)
    ("xfs", "copy-file-range", True),  # a reflink: xfs_reflink_remap_prep()
    ("btrfs", "copy-file-range", True),
    ("ext4", "copy-file-range", False),  # a copy into the file's own pages
    ("memfd", "copy-file-range", False),
])
def test_detaches_only_where_the_backing_drops_the_folio(pinhole_worker, backing, mutation,
                                                         detaches):
    if os.geteuid() != 0:
        pytest.skip("needs root: loop devices and mounts (run as root)")
    b = pinhole_worker.backing(backing)
    case = Case("io_uring", backing, "shared", "rw", "written", mutation, "file-to-pin")
    subject = Subject(b, pinhole_worker.file_name(), "shared")
    trial = Trial(case, subject, pinhole_worker)
    try:
        subject.prepare("written")
        base = Baseline(subject.file_view())
        try:
            effect = mutations.MUTATIONS[mutation].apply(trial, base)
        except OSError as e:
            pytest.skip(f"{mutation} refused on {backing} here: {e}")
        assert effect.detaches is detaches
        assert subject.file_view() == effect.file
    finally:
        for undo in trial.cleanup:
            undo()
        subject.close()


@pytest.mark.parametrize("state,detaches", [("hole", True), ("punched", True),
                                            ("unwritten", True), ("written", False),
                                            ("stored", False)])
def test_fsdax_direct_write_replaces_only_the_zeropage(state, detaches):
    """fsdax has no page cache: an O_DIRECT write lands in the device page the mapping maps,
    except where the mapping maps the zeropage (seen on Debian 6.1: vmsplice of a hole kept
    the zeropage after the write)."""
    from conformance.backings.fsdax import Ext4Dax

    assert Ext4Dax().direct_write_detaches(state) is detaches
