"""The matrix: every registered pin mechanism over every registered backing, mapping, access,
start state and mutation. Each item is a group (``io_uring.ext4.shared.rw.hole``): its cells,
a mutation each (``io_uring.ext4.shared.rw.hole.pwrite``), run in turn. One trial answers a
cell's checks, and each check is recorded as its own case
(``io_uring.ext4.shared.rw.hole.pwrite.file-to-pin``), which ``-k`` selects as well."""


def test_group(group, pinhole):
    pinhole(group)
