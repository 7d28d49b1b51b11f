"""Whether this machine has each pin mechanism and backing: asked once per process, here
only, by the plan of a run, the worker and the probe."""

from __future__ import annotations

import functools

from .backings import BACKINGS
from .model import Availability
from .pins import MECHANISMS

REGISTRIES = {"pin": MECHANISMS, "backing": BACKINGS}


@functools.cache
def availability(dimension: str, name: str) -> Availability:
    """What a fresh instance of the pin mechanism or backing says; what a machine lacks does
    not change mid-run."""
    return REGISTRIES[dimension][name]().availability()


def missing(pin: str, backing: str) -> str | None:
    """Why a cell of this pin and backing cannot run here, or None."""
    for dimension, name in (("pin", pin), ("backing", backing)):
        found = availability(dimension, name)
        if not found.ok:
            return found.reason
    return None
