"""io_uring registered buffers (IORING_REGISTER_BUFFERS) over every backing, mapping and start
state: admission, no pinned zeropage, and coherence in both directions."""

PIN = "io_uring"


def test_io_uring(case, pinhole):
    pinhole(case)
