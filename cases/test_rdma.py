"""RDMA memory registration with pyverbs on rxe, read-only (REMOTE_READ) and read-write:
admission by backing and kernel, no pinned zeropage, coherence through RDMA READ and WRITE."""

import pytest

from conformance.matrix import cases_for


@pytest.mark.parametrize("case", cases_for("rdma"), ids=str)
def test_rdma(case, pinhole):
    pinhole(case)
