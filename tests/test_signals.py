"""Signals must not change a verdict. A signal (or a ptrace stop: strace, py-spy, gdb) ends a
blocking syscall early; the harness must finish the operation, not take a half-done one as
the pin's data. Found under py-spy: 164 io_uring cases read as `disconnected` because an
io_uring wait cut short left its completion in the ring for the next operation to take."""

import contextlib
import os
import signal
import time

import pytest

from conformance import uring
from conformance.dimensions import cells
from conformance.expectations import Spec
from conformance.runner import run_cell
from conformance.syscalls import AlignedBuffer
from conformance.worker import Worker


@contextlib.contextmanager
def signal_storm(every_s: float, then: bytes = b"", pipe_w: int = -1, after_s: float = 0.0):
    """A child sends this process SIGUSR1 every `every_s` (a no-op handler, so syscalls see
    EINTR) until the block ends; with pipe_w, it writes `then` there after `after_s`."""
    parent = os.getpid()
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            start = time.monotonic()
            wrote = pipe_w < 0
            while True:
                os.kill(parent, signal.SIGUSR1)
                if not wrote and time.monotonic() - start >= after_s:
                    os.write(pipe_w, then)
                    wrote = True
                time.sleep(every_s)
        finally:
            os._exit(0)
    try:
        yield
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        signal.signal(signal.SIGUSR1, previous)


def test_an_interrupted_io_uring_wait_still_ends_with_its_own_completion() -> None:
    """READ_FIXED from an empty pipe waits; signals interrupt the wait many times before the
    data comes. Before the fix the first interruption raised 'returned without a completion'
    and the late completion was read as the next operation's."""
    if not uring.availability()[0]:
        pytest.skip(f"needs io_uring: {uring.availability()[1]}")
    ring = uring.Ring(4)
    r, w = os.pipe()
    with AlignedBuffer(4096) as buf:
        ring.register_buffer(buf.addr, 4096)
        try:
            with signal_storm(0.002, b"x" * 100, w, after_s=0.2):
                assert ring.read_fixed(r, buf.addr, 4096, 0) == 100
            assert bytes(buf.view()[:100]) == b"x" * 100
            os.write(w, b"y" * 10)
            assert ring.read_fixed(r, buf.addr, 4096, 0) == 10, "the next op gets its own"
        finally:
            ring.close()
            os.close(r)
            os.close(w)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: drop_caches and the kernel log "
                    "(run the tests as root)")
def test_verdicts_under_a_signal_storm_are_the_verdicts_without() -> None:
    """Every io_uring, vmsplice and odirect cell on memfd, once quietly and once while
    signals arrive every millisecond: the same verdicts and outcomes."""
    selection = {"pin": {"io_uring", "vmsplice", "odirect"}, "backing": {"memfd"},
                 "state": {"hole", "written"}}
    spec, worker = Spec.load(), Worker()
    try:
        def verdicts() -> dict[str, tuple[str, str | None]]:
            return {r.case.id: (r.verdict, r.outcome) for cell in cells(selection)
                    for r in run_cell(cell, worker, spec)}

        quiet = verdicts()
        with signal_storm(0.001):
            stormy = verdicts()
    finally:
        worker.close()
    changed = {i: (quiet[i], stormy[i]) for i in quiet if quiet[i] != stormy[i]}
    assert not changed, changed
    assert len(quiet) > 300
