"""vmsplice references (not FOLL_LONGTERM pins) over every backing, mapping and start state:
what an unpinned long-lived reference to a hole page sees after each mutation."""

import pytest

from conformance.matrix import cases_for


@pytest.mark.parametrize("case", cases_for("vmsplice"), ids=str)
def test_vmsplice(case, pinhole):
    pinhole(case)
