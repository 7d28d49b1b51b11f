"""io_uring registered buffers (IORING_REGISTER_BUFFERS) over every backing, mapping and start
state: admission, no pinned zeropage, and coherence in both directions."""

import pytest

from conformance.matrix import cases_for


@pytest.mark.parametrize("case", cases_for("io_uring"), ids=str)
def test_io_uring(case, pinhole):
    pinhole(case)
