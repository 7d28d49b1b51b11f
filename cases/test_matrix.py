"""The matrix: every registered pin mechanism over every registered backing, mapping, access,
start state and mutation. Each item is a cell (``io_uring.ext4.shared.rw.hole.pwrite``): one
trial answers its checks, and each check is recorded as its own case
(``io_uring.ext4.shared.rw.hole.pwrite.file-to-pin``), which ``-k`` selects as well."""


def test_cell(cell, pinhole):
    pinhole(cell)
