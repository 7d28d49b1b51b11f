"""How pytest-xdist hands a run's groups to its workers (the plugin's
pytest_xdist_make_scheduler, for `-n N` with xdist's default `--dist load`).

Every group on a hugetlb backing goes to one worker, first: their trials run one at a time
on the machine anyway (hugepages.PoolWatch), so spread over workers they only wait on each
other. Every other item is a work unit of its own, as under `--dist load`, and while the
queue is long a worker is kept AHEAD items ahead. (xdist's own `--dist loadgroup` with an
xdist_group mark would say the same, but on pytest 9.2 its node id suffix no longer takes,
and it silently stops grouping: pytest-xdist#1386.)
"""

from __future__ import annotations

from xdist.scheduler.loadscope import LoadScopeScheduling
from xdist.workermanage import WorkerController

from .backings import BACKINGS
from .dimensions import is_group_id
from .plugin import param_id_of

HUGETLB = "hugetlb"
# Items kept queued on a worker while the queue is long (xdist's scope scheduling keeps 2):
# with both CPUs busy the controller hears of a finished item late, and a worker of
# single-item units waited for its next 0.29-0.31 s of a 6.3 s host run (0.10-0.14 s with 4
# ahead, 0.07-0.08 s with 6). Once fewer than DEEP units a worker are left (and in a small
# run from the start) xdist's own rule hands them out, for an even end.
AHEAD = 6
DEEP = 2 * AHEAD


def scope_of(nodeid: str) -> str:
    """The work unit of a node id: HUGETLB for a group on a hugetlb backing
    (cases/test_matrix.py::test_group[PIN.BACKING.MAPPING.ACCESS.STATE]), else the id."""
    group = param_id_of(nodeid)
    on_hugetlb = group is not None and is_group_id(group) and BACKINGS[group.split(".")[1]].hugetlb
    return HUGETLB if on_hugetlb else nodeid


class HugetlbTogether(LoadScopeScheduling):
    """xdist's scope scheduling (the largest unit first) over scope_of()'s units."""

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)

    def _reschedule(self, node: WorkerController) -> None:
        """xdist's, but while DEEP units a worker wait the worker is topped up to AHEAD
        pending items."""
        if node.shutting_down or len(self.workqueue) < DEEP * len(self.nodes):
            super()._reschedule(node)
            return
        while self.workqueue and self._pending_of(self.assigned_work[node]) <= AHEAD:
            self._assign_work_unit(node)

    def remove_node(self, node: WorkerController) -> str | None:
        """A worker gone: as under `--dist load`, the item it was running is reported lost
        and not run again, and its other unfinished items go back to the queue. (Scope
        scheduling would queue the lost item again with its unit, and run it twice.)"""
        workload = self.assigned_work.pop(node)
        unfinished = [nodeid for unit in workload.values()
                      for nodeid, done in unit.items() if not done]
        if not unfinished:
            return None
        crashed = unfinished[0]  # a unit's items run in order: the first not done is running
        for scope, unit in workload.items():
            unit.pop(crashed, None)
            if not all(unit.values()):
                self.workqueue[scope] = unit
        for other in self.assigned_work:
            self._reschedule(other)
        return crashed
