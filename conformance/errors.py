"""The two ways a case can end without a kernel verdict."""


class Skip(Exception):
    """The case cannot run here; the message says what is missing and how to get it."""


class SetupFailed(RuntimeError):
    """A backing or pin mechanism that should work here could not be set up."""
