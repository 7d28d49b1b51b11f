"""The kernel's gup_test long-term pins (CONFIG_GUP_TEST), read-only and read-write, observed
with PIN_LONGTERM_TEST_READ: the same matrix as the other pins, where the kernel has it."""

PIN = "gup_test"


def test_gup_test(case, pinhole):
    pinhole(case)
