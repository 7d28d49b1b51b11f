"""O_DIRECT I/O from and into the mapping: a short-term pin retaken for every I/O, the control
against which the long-term pins are read."""

PIN = "odirect"


def test_odirect(case, pinhole):
    pinhole(case)
