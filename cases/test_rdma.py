"""RDMA memory registration with pyverbs on rxe, read-only (REMOTE_READ) and read-write:
admission by backing and kernel, no pinned zeropage, coherence through RDMA READ and WRITE."""

PIN = "rdma"


def test_rdma(case, pinhole):
    pinhole(case)
