"""What the runner makes of a mutation that waits: blocked only if it waited for the pin."""

import os
import threading
import time
from dataclasses import dataclass, field, replace

import pytest

from conformance import runner
from conformance.model import Case, Cell, Observation

CASE = Case.from_id("vmsplice.ext4-dax.shared.ro.written.punch-hole.file-to-pin")


@dataclass
class Pin:
    """A stand-in for a pin: only release() matters to mutate()."""

    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class Trial:
    case: Case
    pinned: Pin


@pytest.fixture(autouse=True)
def short_patience(monkeypatch):
    # Short, but with room for a loaded machine (2 cores at load 16 delay a thread by 0.1 s).
    monkeypatch.setattr(runner, "PATIENCE_S", 1.0)
    monkeypatch.setattr(runner, "RELEASE_S", 0.5)


def run_with(monkeypatch, mutation):
    monkeypatch.setitem(runner.MUTATIONS, CASE.mutation,
                        replace(runner.MUTATIONS[CASE.mutation], apply=mutation))
    return runner.mutate(Trial(CASE, Pin()), None)


def test_waiting_for_the_pin_is_blocked(monkeypatch):
    def waits_for_release(t, base):
        t.pinned.released.wait()
        return "done"

    seen = run_with(monkeypatch, waits_for_release)
    assert isinstance(seen, Observation) and seen.outcome == "blocked"
    assert "after the pin or reference was dropped" in seen.detail


def test_slow_but_not_waiting_for_the_pin_is_no_verdict(monkeypatch):
    def slow(t, base):
        time.sleep(1.0 + 0.9)  # past the patience, and well after the release
        return "done"

    with pytest.raises(RuntimeError, match="slow, not blocked by the pin"):
        run_with(monkeypatch, slow)


def test_quick_mutation_gives_its_effect(monkeypatch):
    assert run_with(monkeypatch, lambda t, base: "effect") == "effect"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: /proc/PID/task/TID/stack")
def test_a_wait_seen_on_the_kernel_stack_is_blocked_at_once(monkeypatch):
    """A thread asleep in a futex shows futex_wait on its kernel stack: named as the wait,
    the release comes at once rather than after the patience."""
    monkeypatch.setattr(runner, "WAITS_FOR_IDLE_PAGES", ("futex_wait",))
    monkeypatch.setattr(runner, "PATIENCE_S", 30.0)

    def waits_for_release(t, base):
        t.pinned.released.wait()
        return "done"

    start = time.monotonic()
    seen = run_with(monkeypatch, waits_for_release)
    assert seen.outcome == "blocked" and "futex_wait() for the pinned pages" in seen.detail
    assert time.monotonic() - start < 5


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: /proc/PID/task/TID/stack (without "
                    "it every thread reads as not waiting, and this test could not fail)")
def test_an_ordinary_sleep_is_no_wait_for_idle_pages():
    done = threading.Event()
    t = threading.Thread(target=done.wait)
    t.start()
    try:
        time.sleep(0.1)
        with open(f"/proc/self/task/{t.native_id}/stack") as f:
            assert "futex" in f.read()  # the stack was read, and it is a wait
        assert runner.waiting_for_idle_pages(t.native_id) is None
    finally:
        done.set()
        t.join()


def test_an_interrupt_masked_by_a_lock_error_is_raised_as_itself(monkeypatch) -> None:
    """pytest-timeout's failure landing inside threading's locks surfaces as their
    RuntimeError; the cell must end with the timeout, not record that RuntimeError (seen in
    tests/test_robustness.py's 1 ms limit: "RuntimeError: release unlocked lock")."""
    class Interrupt(BaseException):
        pass

    def trial(*_args) -> None:
        try:
            raise Interrupt("Timeout >0.001s")
        finally:
            raise RuntimeError("release unlocked lock")

    monkeypatch.setattr(runner, "trial", trial)
    with pytest.raises(Interrupt):
        runner.observe(Cell((CASE,)), worker=None)
    assert runner.unwinding(RuntimeError("alone")) is None


def test_the_mutation_thread_is_kept_and_a_hung_one_replaced(monkeypatch):
    ran_in: list[int] = []

    def quick(t, base):
        ran_in.append(threading.get_native_id())
        return "done"

    let_go = threading.Event()

    def hangs(t, base):
        let_go.wait()
        return "done"

    run_with(monkeypatch, quick)
    run_with(monkeypatch, quick)
    with pytest.raises(RuntimeError, match="hung, not blocked"):
        run_with(monkeypatch, hangs)
    run_with(monkeypatch, quick)  # not queued behind the hung one
    let_go.set()
    assert ran_in[0] == ran_in[1] != ran_in[2]
