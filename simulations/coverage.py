"""Coverage counters: what a set of runs exercised, and what it never reached.

Every run records (simulations.runner.Tracer) the daemon modes it entered, the mode transitions
it made, each fault kind it injected on the pool master or on a slave (the role its xapi had at
the onset), and the paths that matter: a self-fence, a watchdog reset, a fence agent started, a
promotion, a takeover (the peer declared dead), a restart, a yield, a hand-over, an evacuation.
The built-in matrix must reach every counter: `halizard simulate` says which it missed and
fails, and so does `make test` (tests/test_matrix.py). Exploration reports what it missed among
the counters its fault vocabulary can reach.
"""
from typing import FrozenSet, Iterable, List, Sequence

from halizard.core.state import TRANSITIONS, Mode
from simulations.scenario import HOST_KINDS, KINDS

ROLES = ("master", "slave")
# Actions whose performance marks a path (the effect's method, or its type for non-xapi ones).
PATHS = {
    "DestroyGuests": "self-fence",
    "StartFence": "fence agent",
    "pool.emergency_transition_to_master": "promotion",
    "Async.host.declare_dead": "takeover",
    "Async.VM.start_on": "restart",
    "pool.emergency_reset_master": "yield",
    "pool.designate_new_master": "hand-over",
    "Async.VM.pool_migrate": "evacuation",
}
WATCHDOG_RESET = "path watchdog reset"


def mode(name: str) -> str:
    return "mode %s" % name


def transition(old: str, new: str) -> str:
    return "%s -> %s" % (old, new)


def fault(kind: str, role: str = "") -> str:
    """A fault kind, on (or, for a one-way link, from) the master or a slave."""
    if not role:
        return "fault %s" % kind
    return "fault %s %s the %s" % (kind, "from" if kind == "link.oneway" else "on", role)


def path(what: str) -> str:
    return "path %s" % what


def by_role(kind: str) -> bool:
    """Whether a fault kind is counted on the master and on a slave separately."""
    return kind in HOST_KINDS or kind == "link.oneway"


def counters(kinds: Sequence[str] = KINDS, agent: bool = True) -> FrozenSet[str]:
    """Everything a run set should reach, with faults of ``kinds`` (and, if ``agent``, runs
    with a fence agent configured)."""
    items = {mode(m.value) for m in Mode}
    items |= {transition(a.value, b.value) for a, bs in TRANSITIONS.items() for b in bs}
    for kind in kinds:
        items |= {fault(kind, r) for r in ROLES} if by_role(kind) else {fault(kind)}
    items |= {path(p) for p in PATHS.values() if agent or p != "fence agent"}
    return frozenset(items | {WATCHDOG_RESET})


def missing(reached: Iterable[str], kinds: Sequence[str] = KINDS, agent: bool = True
            ) -> List[str]:
    """The counters that no run reached, sorted."""
    return sorted(counters(kinds, agent) - frozenset(reached))


def describe(reached: Iterable[str], kinds: Sequence[str] = KINDS, agent: bool = True) -> str:
    """One line: every counter reached, or how many and which were not."""
    gaps = missing(reached, kinds, agent)
    total = len(counters(kinds, agent))
    if not gaps:
        return "coverage: all %d counters reached" % total
    return "coverage: %d of %d counters never reached: %s" % (len(gaps), total, ", ".join(gaps))
