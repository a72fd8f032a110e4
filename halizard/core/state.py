"""The daemon's modes, the transitions allowed between them, and its state.

Modes (the same words in the logs, the simulator's trace, the CLI and the docs):

    starting     process just started; acts on nothing until it has had contact
    normal       sees its peer; the master restarts halted protected VMs and serves maintenance
    survivor     lost its peer, still sees the gateway: waits until the peer is certainly dead
    takeover     the peer is certainly dead: promote if needed, clear its VMs, restart them
    isolated     lease expired (no peer, no gateway): self-fence now; this is irrevocable
    self-fenced  guests destroyed; waits for its peer before doing anything else
    rejoining    peer visible again after a self-fence: find the pool's master, yield if needed
    maintenance  this host is in maintenance: it hands over and is emptied, takes over nothing
    disabled     HA is switched off pool-wide (or XenServer's own HA is on): no actions
    stopping     planned shutdown: hand the master role over, disarm the watchdog, exit
"""
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, FrozenSet, Mapping, NamedTuple, Optional, Tuple

from halizard.core.pool import KnownVm, PoolView, Settings, load_known_vms
from halizard.core.watch import Watch
from halizard.effects import PoolRole


class Mode(Enum):
    STARTING = "starting"
    NORMAL = "normal"
    SURVIVOR = "survivor"
    TAKEOVER = "takeover"
    ISOLATED = "isolated"
    SELF_FENCED = "self-fenced"
    REJOINING = "rejoining"
    MAINTENANCE = "maintenance"
    DISABLED = "disabled"
    STOPPING = "stopping"


# Every allowed transition. Staying in a mode is always allowed. Note what is missing: nothing
# leaves `isolated` except `self-fenced` (a self-fence, once started, is finished), and a
# self-fenced host never goes straight back to `normal`: it first finds out who is master
# (`rejoining`), or, seeing only the gateway, waits like any survivor.
# `self-fenced -> isolated` fences again when a guest appears after the self-fence (a start that
# was under way when the lease expired, R009). `normal -> takeover` skips the survivor cycles in
# between: a daemon stalled for less than its lease (a longer stall restarts the silence clock,
# R006) can find, at its next decision, a peer silent for takeover_delay when peer_timeout +
# lease_timeout exceed it (D06; never with the default timings). `maintenance -> takeover`: the
# maintenance ends after the peer has been silent for takeover_delay (O08).
# Not allowed because the ladder cannot produce them (the coverage counters once showed them
# never reached): `disabled -> isolated` (a host back from HA off without a lease is first
# `starting`), `rejoining -> maintenance` and `rejoining -> self-fenced` (a rejoining host
# becomes normal, or is cut off: isolated), `self-fenced -> takeover` (the first decision of a
# self-fenced host that sees the gateway again starts its silence clock: survivor first).
TRANSITIONS: Dict[Mode, FrozenSet[Mode]] = {
    Mode.STARTING: frozenset({Mode.NORMAL, Mode.SURVIVOR, Mode.ISOLATED, Mode.MAINTENANCE,
                              Mode.DISABLED, Mode.STOPPING}),
    Mode.NORMAL: frozenset({Mode.SURVIVOR, Mode.TAKEOVER, Mode.ISOLATED, Mode.MAINTENANCE,
                            Mode.DISABLED, Mode.STOPPING}),
    Mode.SURVIVOR: frozenset({Mode.NORMAL, Mode.TAKEOVER, Mode.ISOLATED, Mode.MAINTENANCE,
                              Mode.DISABLED, Mode.STOPPING}),
    Mode.TAKEOVER: frozenset({Mode.NORMAL, Mode.SURVIVOR, Mode.ISOLATED, Mode.MAINTENANCE,
                              Mode.DISABLED, Mode.STOPPING}),
    Mode.ISOLATED: frozenset({Mode.SELF_FENCED}),
    Mode.SELF_FENCED: frozenset({Mode.REJOINING, Mode.SURVIVOR, Mode.ISOLATED, Mode.DISABLED,
                                 Mode.STOPPING}),
    Mode.REJOINING: frozenset({Mode.NORMAL, Mode.ISOLATED, Mode.DISABLED, Mode.STOPPING}),
    Mode.MAINTENANCE: frozenset({Mode.NORMAL, Mode.SURVIVOR, Mode.TAKEOVER, Mode.ISOLATED,
                                 Mode.DISABLED, Mode.STOPPING}),
    Mode.DISABLED: frozenset({Mode.STARTING, Mode.NORMAL, Mode.SURVIVOR, Mode.MAINTENANCE,
                              Mode.STOPPING}),
    Mode.STOPPING: frozenset({Mode.ISOLATED}),
}

# Modes in which a host that is pool master acts as master (issues pool-level actions).
ACTING_MODES = frozenset({Mode.NORMAL, Mode.SURVIVOR, Mode.TAKEOVER, Mode.MAINTENANCE})


class IllegalTransition(AssertionError):
    pass


def check_transition(old: Mode, new: Mode) -> None:
    if old is not new and new not in TRANSITIONS[old]:
        raise IllegalTransition("%s -> %s is not an allowed transition" % (old.value, new.value))


@dataclass(frozen=True)
class Task:
    """An xapi task this daemon started and is waiting for."""

    ref: str
    kind: str  # "start" | "migrate" | "declare_dead" | "sync"
    vm: Optional[str]  # VM uuid, for starts and migrations
    host: Optional[str]  # target host uuid
    memory: int
    started: float


@dataclass(frozen=True)
class Attempt:
    """Start attempts of one VM that failed; the next try waits until ``retry_after``."""

    vm: str
    failures: int
    retry_after: float
    last_error: str


@dataclass(frozen=True)
class DaemonState:
    mode: Mode
    since: float  # monotonic time the current mode began
    started_at: float
    # Contact bookkeeping (halizard.core.evidence): lower bounds for the lease, upper bounds for
    # the survivor's silence clock.
    contact_lower: Optional[float] = None
    peer_lower: Optional[float] = None
    peer_upper: Optional[float] = None
    gateway_upper: Optional[float] = None
    silence_floor: float = 0.0  # silence is never counted from before this time
    lease_lapsed: bool = False  # no contact at the previous decision (or no decision yet)
    # What the pool looks like.
    role: Optional[PoolRole] = None
    local_uuid: Optional[str] = None
    settings: Settings = Settings()
    known_vms: Tuple[KnownVm, ...] = ()  # protected VMs and where they ran, as last seen
    cache_dirty: bool = False  # settings or known_vms changed: save them (the local cache)
    view: Optional[PoolView] = None
    view_at: Optional[float] = None  # when the pool database was last read in full
    watch: Optional[Watch] = None  # the event.from watcher (halizard.core.watch)
    peer_role: Optional[str] = None  # "master" | "slave" | "other:<code>" | None
    peer_role_at: Optional[float] = None
    peer_guests: Optional[int] = None  # guests the peer's own database says it runs (when master)
    peer_beacon: Optional[str] = None  # what the peer last said about itself (core.beacon)
    acting: bool = False  # acted as pool master at the previous decision, with no lease gap since
    guests: Optional[Tuple[str, ...]] = None  # from the local toolstack; None = unknown
    # Watchdog.
    watchdog_armed: bool = False
    # Beliefs and work in progress.
    peer_dead: bool = False
    peer_dead_reason: str = ""
    fence_job: Optional[int] = None
    fence_action: Optional[str] = None
    fence_retry_after: float = 0.0
    fence_failures: int = 0
    fence_confirmed_at: Optional[float] = None
    promote_requested_at: Optional[float] = None
    yield_requested_at: Optional[float] = None
    handover_requested_at: Optional[float] = None
    declared_dead_at: Optional[float] = None
    tasks: Tuple[Task, ...] = ()
    attempts: Tuple[Attempt, ...] = ()
    needs_sync: bool = False
    reenable: FrozenSet[str] = frozenset()  # hosts that left maintenance, to enable again


def evolve(state: DaemonState, **changes: Any) -> DaemonState:
    """A copy of ``state`` with ``changes``; dataclasses.replace without its per-call
    introspection, because the simulator runs this every cycle of every host."""
    new = object.__new__(DaemonState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


def initial_state(started_at: float, saved: Optional[Mapping[str, Any]]) -> DaemonState:
    settings = Settings()
    known: Tuple[KnownVm, ...] = ()
    if saved and isinstance(saved.get("settings"), dict):
        settings = Settings.from_dict(saved["settings"])
    if saved:
        known = load_known_vms(saved.get("vms", ()))
    # No lease at start: the silence clock starts at the first decision made with contact
    # (regression R005: a process stalled right after starting must not count the stall as the
    # peer's silence).
    return DaemonState(
        mode=Mode.STARTING, since=started_at, started_at=started_at, silence_floor=started_at,
        lease_lapsed=True, settings=settings, known_vms=known,
    )


class Decision(NamedTuple):
    """One cycle's outcome: the mode, why (one line, with the numbers), and what to do."""

    at: float
    wall: float
    mode: Mode
    reason: str
    actions: Tuple[Any, ...]
    intents: Tuple[Any, ...]  # one per action: why it was issued (halizard.core.decide.Intent)
    state: DaemonState
    acting_master: bool
    peer_dead: bool
    exit: bool = False
    next_cycle: float = 0.0  # monotonic time the next cycle is due (the loop sleeps until then)
    # Restart VMs the acting master wants running that no healthy host has memory for (uuids):
    # in the reason too, kept apart for the alerts (halizard.core.alerts).
    unplaced: Tuple[str, ...] = ()

    def line(self) -> str:
        return "%s: %s" % (self.mode.value, self.reason)
