"""Child processes that die with their parent, so no pytest or worker outlives pinhole."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask the kernel to send sig to this process when its parent dies (even by SIGKILL);
    parent is the pid the caller expects (default: the parent now)."""
    parent = parent or os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
        os.kill(os.getpid(), sig)


class Stopped(BaseException):
    """SIGINT or SIGTERM of pinhole, raised where the main thread is, so what runs (a VM) is
    stopped and the partial results written before pinhole exits 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)
