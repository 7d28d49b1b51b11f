"""vmsplice references (not FOLL_LONGTERM pins) over every backing, mapping and start state:
what an unpinned long-lived reference to a hole page sees after each mutation."""

PIN = "vmsplice"


def test_vmsplice(case, pinhole):
    pinhole(case)
