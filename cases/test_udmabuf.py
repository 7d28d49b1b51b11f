"""udmabuf over memfd ranges (memfd_pin_folios() on new kernels): admission by backing, no
pinned zeropage, and coherence through the dma-buf's own mapping after every mutation."""

PIN = "udmabuf"


def test_udmabuf(case, pinhole):
    pinhole(case)
