"""The effect vocabulary: what the daemon loop asks its environment to do, and the answers.

The loop (halizard.loop) is a generator that yields these effects and receives their results.
The real executor performs them on a XenServer host; the simulator performs them against a
virtual world. Both obey the same contract, written here once:

* Every effect that changes something outside the daemon carries ``valid_until``, a time on the
  host's monotonic clock. An executor must refuse such an effect with ``STALE`` when its own
  monotonic clock has passed that time. This is how a daemon that was frozen or stalled between
  deciding and acting re-validates before it acts (invariant I5): a decision is only good for
  the moment it was made. ``is_stale`` is the one implementation of that check.
* Every effect that waits on the outside world carries a ``timeout``; no wait is unbounded.
* Times are seconds as floats on the host's clocks: ``monotonic`` for every decision, ``wall``
  only for human-readable logs.

Effects and results are immutable records (typing.NamedTuple: cheap to build, and the loop
builds several every cycle). Executors dispatch on ``type(effect)``, never on equality: two
empty records such as ReadClock() and LoadState() compare equal as tuples.
"""
from typing import Any, Mapping, NamedTuple, Optional, Tuple, Union

# --- Reading the world -------------------------------------------------------------------------


class ReadClock(NamedTuple):
    """Read both clocks and whether the daemon is asked to stop."""


class Now(NamedTuple):
    """``stop_requested``: the daemon is asked to stop (systemctl stop, or the system going
    down). ``shutting_down``: the whole system is going down (logind's PreparingForShutdown):
    xapi is about to stop the guests, and the daemon guards them until they are gone."""

    monotonic: float
    wall: float
    stop_requested: bool = False
    shutting_down: bool = False


class Sleep(NamedTuple):
    """Sleep until ``until`` on the monotonic clock (at once if already past). The answer is
    the clock read on waking (a Now), which starts the next cycle."""

    until: float


class Probe(NamedTuple):
    """One probe round: ``echoes`` ICMP echo requests ``spacing`` apart to every address, in
    parallel; replies are awaited until ``timeout`` after the last request was sent (``peer_wait``
    for the peer's replies: shorter when the peer is already silent, since a peer that is back
    answers in milliseconds).

    Besides the replies, the report tells for each peer address whether echo requests *from* the
    peer arrived since the previous round (the peer's own probes of us): a passive heartbeat that
    keeps the peer visible through heavy loss.

    Every request carries ``beacon`` in its payload: a short line saying this daemon's pool
    role and mode (halizard.core.beacon). The peer reads it from the requests it hears. A
    beacon is only ever used to refrain from acting, so a forged one can delay, never harm.
    """

    peer_addresses: Tuple[str, ...]
    gateway_addresses: Tuple[str, ...]
    echoes: int
    spacing: float
    timeout: float
    peer_wait: float
    beacon: str = ""


class PathReport(NamedTuple):
    """``last_at``: when the latest reply (or, for the peer, its latest request) arrived, on the
    monotonic clock. It must never be earlier than the true arrival: the survivor counts the
    peer's silence from it. A real prober takes the kernel's receive timestamp (SO_TIMESTAMPNS,
    wall clock) and converts it with the wall-to-monotonic offset read at the same time; when
    that offset (monotonic minus wall) shrank since the previous read (the wall clock stepped
    forward, so a stamp taken before the step would convert to a time earlier than the true
    arrival), it uses the read time instead, for every packet read until the queue is empty:
    later than the arrival, and so still safe. A step back only makes stamps late."""

    address: str
    replies: int
    heard: bool = False
    last_at: Optional[float] = None


class ProbeReport(NamedTuple):
    """``started`` and ``finished`` bracket the round on the monotonic clock. ``heard_since`` is
    when listening for the peer's requests began (the previous round's end, or process start)."""

    started: float
    finished: float
    heard_since: float
    peer: Tuple[PathReport, ...]
    gateways: Tuple[PathReport, ...]
    peer_beacon: Optional[str] = None  # the latest beacon heard from the peer, if any


class ReadPoolRole(NamedTuple):
    """Read this host's identity and xapi role from local files (the xensource inventory and
    pool.conf): never blocks on xapi, works on an orphaned slave."""


class PoolRole(NamedTuple):
    host_uuid: str
    is_master: bool
    master_address: Optional[str]  # None on a master


class ListGuests(NamedTuple):
    """Ask the local toolstack (not xapi) which guest domains run on this host."""

    timeout: float


class GuestList(NamedTuple):
    uuids: Tuple[str, ...]
    ok: bool = True  # False: the toolstack did not answer in time


# --- Acting on the world -----------------------------------------------------------------------

LOCAL = None  # XapiCall.address for this host's own xapi (its Unix socket)
POOL_SESSION = "pool"  # session.login_with_password: full API on a master
LOCAL_SESSION = "local"  # session.slave_local_login_with_password: emergency calls only


class XapiCall(NamedTuple):
    """One XenAPI call. ``address`` None means this host's own xapi; otherwise the management
    address of another host. The executor owns sessions (login, re-login on SESSION_INVALID);
    ``session`` selects a pool session or a slave-local one. ``args`` exclude the session."""

    method: str
    args: Tuple[Any, ...] = ()
    address: Optional[str] = LOCAL
    session: str = POOL_SESSION
    timeout: float = 1.0
    valid_until: Optional[float] = None  # None: a read, safe at any time


class XapiResult(NamedTuple):
    """``error`` is empty on success, else xapi's ErrorDescription list, or one of the transport
    outcomes TIMEOUT, CONNECTION_REFUSED, UNREACHABLE, or STALE (refused before sending)."""

    value: Any = None
    error: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def code(self) -> str:
        return self.error[0] if self.error else ""


class DestroyGuests(NamedTuple):
    """Self-fence: destroy every guest domain through the local toolstack (``xl destroy``)."""

    valid_until: float
    timeout: float


class WatchdogControl(NamedTuple):
    """``arm`` opens the device with ``timeout_s`` (opening counts as a feed), ``feed`` pings it,
    ``disarm`` stops it with the magic close. Arm and feed are refused when stale."""

    op: str  # "arm" | "feed" | "disarm"
    timeout_s: int
    valid_until: float


class WatchdogResult(NamedTuple):
    ok: bool
    detail: str = ""


class StartFence(NamedTuple):
    """Start the fence agent against the peer in the background (``off`` or ``status``); the
    outcome arrives later through CollectFenceResults. An agent runs at most ``timeout``."""

    action: str
    timeout: float
    valid_until: float


class FenceStarted(NamedTuple):
    job: int


class CollectFenceResults(NamedTuple):
    """Outcomes of fence jobs that finished since the last collection."""


class FenceOutcome(NamedTuple):
    job: int
    action: str
    result: str  # "off" | "on" | "failed" | "timeout" | "unreachable"


class StartCall(NamedTuple):
    """Perform ``call`` in the background (a long poll such as ``event.from``, which must not
    hold up a cycle); the answer is CallStarted at once, the result arrives later through
    CollectCalls. The call keeps its own timeout: no background call is unbounded."""

    call: XapiCall


class CallStarted(NamedTuple):
    job: int


class CollectCalls(NamedTuple):
    """Results of background calls that finished since the last collection: a tuple of
    CallOutcome. A daemon that restarts forgets its jobs (their results are dropped)."""


class CallOutcome(NamedTuple):
    job: int
    result: XapiResult


class Parallel(NamedTuple):
    """Run several effects at once; the result is the tuple of their results, in order."""

    effects: Tuple[Any, ...]


class Enact(NamedTuple):
    """Log this cycle's decision (journal, systemd STATUS; the simulator's trace), then perform
    its actions in parallel, each under the staleness rule. The answer is the tuple of the
    actions' outcomes, in order (empty when the decision has none). Logging comes first, so a
    daemon that dies while acting has already said what it was doing."""

    decision: Any


class LoadState(NamedTuple):
    """Read the daemon's persisted state (a mapping), or None when there is none."""


class SaveState(NamedTuple):
    data: Mapping[str, Any]


Effect = Union[
    ReadClock,
    Sleep,
    Probe,
    ReadPoolRole,
    ListGuests,
    XapiCall,
    DestroyGuests,
    WatchdogControl,
    StartFence,
    CollectFenceResults,
    StartCall,
    CollectCalls,
    Parallel,
    Enact,
    LoadState,
    SaveState,
]

# The transport outcomes of a XapiCall (XapiResult.error[0]); anything else is xapi's own code.
STALE = "STALE"  # not sent: its valid_until had passed
TIMEOUT = "TIMEOUT"  # no answer by the deadline (a black hole, a hung xapi, a slave's DB call)
CONNECTION_REFUSED = "CONNECTION_REFUSED"  # xapi not running (restarting, stopped)
CONNECTION_RESET = "CONNECTION_RESET"  # xapi went away with the call outstanding
UNREACHABLE = "UNREACHABLE"  # no route, unknown name: the network said no at once
GARBAGE = "GARBAGE"  # an answer that is not xapi's envelope (HTTP error, bad XML)


# xapi methods that act on the pool: only the acting master issues them (invariant I4).
POOL_ACTIONS = frozenset({
    "VM.start", "VM.start_on", "VM.hard_shutdown", "VM.power_state_reset", "VM.pool_migrate",
    "host.declare_dead", "host.disable", "host.enable", "pool.designate_new_master",
    "pool.sync_database",
})


def pool_action(method: str) -> bool:
    return (method[6:] if method.startswith("Async.") else method) in POOL_ACTIONS


def is_stale(effect: Any, monotonic_now: float) -> bool:
    """True when ``effect`` must be refused because its decision is out of date.

    Both executors call this immediately before performing an effect; it is the I5 rule."""
    valid_until = getattr(effect, "valid_until", None)
    return valid_until is not None and monotonic_now > valid_until


STALE_XAPI = XapiResult(error=(STALE,))
STALE_WATCHDOG = WatchdogResult(ok=False, detail=STALE)


def refusal(effect: Any) -> Any:
    """What an executor answers instead of performing a stale action."""
    if isinstance(effect, XapiCall):
        return STALE_XAPI
    if isinstance(effect, WatchdogControl):
        return STALE_WATCHDOG
    if isinstance(effect, DestroyGuests):
        return GuestList((), ok=False)
    return STALE
