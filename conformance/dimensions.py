"""The matrix: its vocabulary, and the cases it crosses.

A case id joins pin.backing.mapping.access.state.mutation.check, e.g.
``io_uring.ext4.shared.rw.hole.none.file-to-pin``: selectable with ``-k`` and a valid
KernelCI test path.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

PINS = ("io_uring", "udmabuf", "rdma", "gup_test", "vmsplice", "odirect")
BACKINGS = ("memfd", "memfd-hugetlb", "tmpfs", "hugetlbfs", "ext4", "xfs", "btrfs",
            "ext4-dax", "xfs-dax")
MAPPINGS = ("shared", "private")
ACCESS = ("ro", "rw")
STATES = ("hole", "faulted-hole", "stored", "written", "unwritten", "punched")
MUTATIONS = ("none", "pwrite", "store", "pin-write", "truncate-down", "truncate-down-up",
             "punch-hole", "madv-remove", "zero-range", "collapse-range", "insert-range",
             "fallocate", "madv-dontneed", "madv-pageout", "madv-cold", "fadvise-dontneed",
             "drop-caches", "cgroup-reclaim", "odirect-write", "odirect-read", "fsync-msync",
             "copy-file-range", "reflink", "fork-write", "munmap-mmap")
CHECKS = ("admission", "zeropage", "file-to-pin", "pin-to-file")
# Checks that look at the pin itself, before anything changes the file.
PIN_CHECKS = ("admission", "zeropage")


def writes_through_pin(check: str, mutation: str) -> bool:
    """Only a pin with access 'rw' can be written through."""
    return check == "pin-to-file" or mutation == "pin-write"

VOCABULARY: dict[str, tuple[str, ...]] = {
    "pin": PINS, "backing": BACKINGS, "mapping": MAPPINGS, "access": ACCESS,
    "state": STATES, "mutation": MUTATIONS, "check": CHECKS,
}

KCIDB_PATH = re.compile(r"^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$")


@dataclass(frozen=True, order=True)
class Case:
    pin: str
    backing: str
    mapping: str
    access: str
    state: str
    mutation: str
    check: str

    @property
    def id(self) -> str:
        return ".".join(asdict(self).values())

    def __str__(self) -> str:
        return self.id

    @classmethod
    def from_id(cls, case_id: str) -> Case:
        parts = case_id.split(".")
        names = [f.name for f in fields(cls)]
        if len(parts) != len(names):
            raise ValueError(f"a case id has {len(names)} parts ({'.'.join(names)}): {case_id}")
        for name, value in zip(names, parts, strict=True):
            unknown(name, [value])
        return cls(*parts)


class UnknownName(ValueError):
    """A name outside the vocabulary; the message lists the valid ones."""


def unknown(dimension: str, names: list[str]) -> None:
    valid = VOCABULARY[dimension]
    bad = [n for n in names if n not in valid]
    if bad:
        raise UnknownName(f"unknown {dimension} {', '.join(map(repr, bad))}; "
                          f"valid: {', '.join(valid)}")


def cross(pins: dict[str, tuple[str, ...]], backings: list[str],
          states: tuple[str, ...], mutations: tuple[str, ...] = MUTATIONS,
          read_only: frozenset[str] = frozenset()) -> list[Case]:
    """Every case of the given pins (name → access modes) over the given backings.

    Pin checks run once per start state with no mutation; coherence checks run after every
    mutation; a read-only pin, or a pin in `read_only`, has no writes through it.
    """
    out = []
    for pin, accesses in pins.items():
        for backing in backings:
            for mapping in MAPPINGS:
                for access in accesses:
                    for state in states:
                        for mutation in mutations:
                            for check in CHECKS:
                                if check in PIN_CHECKS and mutation != "none":
                                    continue
                                no_writes = access == "ro" or pin in read_only
                                if no_writes and writes_through_pin(check, mutation):
                                    continue
                                out.append(Case(pin, backing, mapping, access, state,
                                                mutation, check))
    return out


def cases_for(pin: str) -> list[Case]:
    """The cases of one registered pin mechanism over every registered backing."""
    from .backings import BACKINGS
    from .pins import MECHANISMS

    mech = MECHANISMS[pin]
    return cross({pin: mech.access}, list(BACKINGS), STATES,
                 read_only=frozenset() if mech.writable else frozenset({pin}))


def universe() -> list[Case]:
    """Every case the vocabulary allows, on any kernel: what spec entries are checked against."""
    return cross({p: ACCESS for p in PINS}, list(BACKINGS), STATES)
