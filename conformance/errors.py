"""The two ways a case can end without a kernel verdict."""


class Skip(Exception):
    """The case cannot run here; the message says what is missing and how to get it."""


class PinRefused(OSError):
    """A pin retaken for every I/O could not be taken again (the range faults past EOF)."""


class SetupFailed(RuntimeError):
    """A backing or pin mechanism that should work here could not be set up."""
