"""The worker's parts (backings, mechanisms): set up once, and afresh after an interrupt."""

import pytest

from conformance import worker as worker_module
from conformance.model import Availability
from conformance.worker import Worker


class Part:
    """A stand-in backing that counts its setups and closes; the first setup can be cut."""

    log: list[str] = []
    interrupt_first = False

    def setup(self) -> None:
        self.log.append("setup")
        if Part.interrupt_first:
            Part.interrupt_first = False
            raise KeyboardInterrupt  # what pytest-timeout's Failed is too: no Exception

    def close(self) -> None:
        self.log.append("close")


@pytest.fixture
def worker(monkeypatch):
    Part.log = []
    monkeypatch.setitem(worker_module.REGISTRIES["backing"], "fake", Part)
    monkeypatch.setattr(worker_module, "availability", lambda d, n: Availability.yes())
    w = Worker()
    yield w
    w.close()


def test_a_part_is_set_up_once(worker: Worker) -> None:
    assert worker.backing("fake") is worker.backing("fake")
    assert Part.log == ["setup"]


def test_an_interrupted_setup_is_undone_and_tried_again(worker: Worker) -> None:
    Part.interrupt_first = True
    with pytest.raises(KeyboardInterrupt):
        worker.backing("fake")
    assert Part.log == ["setup", "close"]
    worker.backing("fake")
    assert Part.log == ["setup", "close", "setup"]


def test_forgotten_parts_are_closed_and_set_up_afresh(worker: Worker) -> None:
    first = worker.backing("fake")
    worker.forget_parts()
    assert Part.log == ["setup", "close"]
    assert worker.backing("fake") is not first
