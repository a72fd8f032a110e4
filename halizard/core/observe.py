"""What the loop reads each cycle, and the Observation built from the answers. Pure.

The read plan depends on the situation: a master reads the pool database from its own xapi; a
slave reads it from its master only while its master is visible (a slave's xapi hangs on
database calls while its master is unreachable); a rejoining host asks its peer's xapi which role
it has. Every read carries a timeout, so one slow xapi never stalls probing for long.
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from halizard.core import watch as watching
from halizard.core.beacon import beacon, parse_beacon
from halizard.core.config import Config
from halizard.core.pool import (
    KnownVm,
    PoolParseError,
    PoolView,
    Settings,
    known_vms,
    parse_pool,
    parse_settings,
    settings_of,
)
from halizard.core.state import DaemonState, Mode
from halizard.core.timing import QUICK_WAIT, read_budget
from halizard.core.watch import Watch
from halizard.effects import (
    CONNECTION_REFUSED,
    GARBAGE,
    LOCAL,
    POOL_SESSION,
    STALE,
    TIMEOUT,
    UNREACHABLE,
    CallStarted,
    CollectCalls,
    CollectFenceResults,
    GuestList,
    ListGuests,
    PoolRole,
    Probe,
    ProbeReport,
    StartCall,
    XapiCall,
    XapiResult,
)

POOL_READS = (
    "pool.get_all_records",
    "host.get_all_records",
    "host_metrics.get_all_records",
    "VM.get_all_records",
)
PEER_ROLE_RECHECK = 30.0  # seconds between checks that the peer's xapi is our slave
POOL_REFRESH = 5.0  # seconds between pool database reads in a quiet steady state, unwatched
FULL_REFRESH = 120.0  # the same while the watcher keeps the view current (host_metrics, and a
                      # consistency check of the watched records)


class ReadPlan(NamedTuple):
    effects: Tuple[Any, ...]
    pool_at: Optional[int]  # index of the first pool read
    pool_reads: int  # 4 on a master (the whole database), 1 on a slave (the pool record)
    pool_address: Optional[str]
    peer_role_at: Optional[int]
    peer_vms_at: Optional[int]
    tasks_at: Tuple[Tuple[str, int], ...]
    fence_at: Optional[int]
    watch: Optional[Watch] = None  # the watch this cycle, before its outcomes
    # The reply of the poll in flight is newer than the last full read (the poll was sent
    # after it): its records may replace the view. Otherwise a change it reports is read again.
    watch_newer: bool = False
    watch_start_at: Optional[int] = None  # index of the StartCall of a new poll
    calls_at: Optional[int] = None  # index of the CollectCalls


class Observation(NamedTuple):
    cycle_start: float
    now: float
    wall: float
    stop_requested: bool
    role: PoolRole
    probe: ProbeReport
    guests: Optional[GuestList]
    view: Optional[PoolView]
    settings: Optional[Settings]  # fresh pool-wide settings, when the pool was read
    view_error: str
    peer_role: Optional[str]
    peer_guests: Optional[int]
    tasks: Tuple[Tuple[str, XapiResult], ...]
    fence: Tuple[Any, ...]
    shutting_down: bool = False  # the system is going down, not only the daemon (effects.Now)
    watch: Optional[Watch] = None  # the watch after this cycle's outcomes
    watched: bool = False  # ``view`` / ``settings`` came from the watch, not from full reads
    reread: bool = False  # the watch saw a change it cannot tell is newer: read in full next
    known: Optional[Tuple[KnownVm, ...]] = None  # protected VMs as seen now (the local cache)


@dataclass(frozen=True)
class ReadTemplates:
    """The reads that are the same every cycle, built once per configuration."""

    probe: Probe
    probe_quick: Probe  # when the peer is already silent: do not wait long for its replies
    guests: ListGuests
    master_reads: Tuple[XapiCall, ...]
    read_budget: float  # longer than this, a cycle's reads were stalled (timing.read_budget)


def read_templates(config: Config) -> ReadTemplates:
    def probe(peer_wait: float) -> Probe:
        return Probe(config.peer_addresses, config.gateway_addresses, config.probe_count,
                     config.probe_spacing, config.probe_timeout, peer_wait=peer_wait)

    return ReadTemplates(
        probe=probe(config.probe_timeout),
        probe_quick=probe(QUICK_WAIT),
        guests=ListGuests(timeout=config.xapi_timeout),
        master_reads=tuple(XapiCall(m, (), LOCAL, POOL_SESSION, config.xapi_timeout)
                           for m in POOL_READS),
        read_budget=read_budget(config),
    )


def plan_reads(config: Config, templates: ReadTemplates, state: DaemonState, role: PoolRole,
               now: float) -> ReadPlan:
    peer_recent = state.peer_upper is not None and now - state.peer_upper <= config.peer_timeout
    effects: List[Any] = [_probe(templates.probe if peer_recent else templates.probe_quick,
                                 beacon(role.is_master, state.mode.value)),
                          templates.guests]
    peer_claims_master = peer_says_master(state)
    peer_address = config.peer_addresses[0]

    # The watcher (halizard.core.watch): a master watches its own xapi, a slave its master
    # while the master is visible.
    watch = state.watch
    call = None
    if role.is_master or (role.master_address is not None
                          and (peer_recent or state.mode is Mode.STARTING)):
        watch = watching.retarget(watch, LOCAL if role.is_master else role.master_address,
                                  POOL_SESSION)
        call = watching.poll(watch, now, config.xapi_timeout)
    watch_start_at = None
    calls_at = None
    if watch is not None:
        calls_at = len(effects)
        effects.append(COLLECT_CALLS)
    if call is not None:
        watch_start_at = len(effects)
        effects.append(StartCall(call))

    # A master reads the whole pool database, but in a quiet steady state only every
    # POOL_REFRESH seconds, or every FULL_REFRESH while the watcher keeps its view current:
    # xapi refuses to start a VM that is not halted, so acting on a view a few seconds old is
    # safe, and the daemon must not load xapi with a stream of calls. A slave reads only the
    # pool record (the settings it caches), and only from a visible master (a slave's database
    # calls hang while its master is unreachable).
    pool_at = None
    pool_address = None
    pool_reads: Tuple[str, ...] = ()
    refresh = POOL_REFRESH
    if watch is not None and watch.is_current(now, config):
        refresh = FULL_REFRESH
    quiet = state.mode is Mode.NORMAL and state.view_at is not None \
        and now - state.view_at < refresh
    if role.is_master:
        if not (quiet and state.view is not None and not state.tasks and not state.needs_sync
                and not state.reenable and not state.settings.maintenance
                and state.peer_role in (None, "slave")):
            pool_reads = POOL_READS
    elif role.master_address is not None and (peer_recent or state.mode is Mode.STARTING):
        if not quiet:
            pool_address = role.master_address
            pool_reads = POOL_READS[:1]
    if pool_reads:
        pool_at = len(effects)
        if pool_address is None:
            effects.extend(templates.master_reads)
        else:
            for method in pool_reads:
                effects.append(XapiCall(method, (), pool_address, POOL_SESSION,
                                        config.xapi_timeout))

    peer_role_at = None
    if role.is_master and peer_recent and (
        state.mode is Mode.REJOINING
        or peer_claims_master
        or state.peer_role != "slave"
        or state.peer_role_at is None
        or now - state.peer_role_at > PEER_ROLE_RECHECK
    ):
        peer_role_at = len(effects)
        effects.append(XapiCall("pool.get_all_records", (), peer_address, POOL_SESSION,
                                config.xapi_timeout))
    peer_vms_at = None
    if role.is_master and peer_recent and (state.peer_role == "master" or peer_claims_master):
        # Two masters: how many guests does the peer's own database say it runs?
        peer_vms_at = len(effects)
        effects.append(XapiCall("VM.get_all_records", (), peer_address, POOL_SESSION,
                                config.xapi_timeout))

    tasks_at = []
    if role.is_master:
        for task in state.tasks:
            tasks_at.append((task.ref, len(effects)))
            effects.append(XapiCall("task.get_record", (task.ref,), LOCAL, POOL_SESSION,
                                    config.xapi_timeout))

    fence_at = None
    if state.fence_job is not None:
        fence_at = len(effects)
        effects.append(CollectFenceResults())
    watch_newer = watch is not None and watch.polling_since is not None and (
        state.view_at is None or watch.polling_since > state.view_at)
    return ReadPlan(tuple(effects), pool_at, len(pool_reads), pool_address, peer_role_at,
                    peer_vms_at, tuple(tasks_at), fence_at, watch, watch_newer, watch_start_at,
                    calls_at)


COLLECT_CALLS = CollectCalls()


Carried = Tuple[Tuple[Any, ...], Tuple[Any, ...]]  # (fence outcomes, background call outcomes)
NOTHING_CARRIED: Carried = ((), ())


def carry(plan: ReadPlan, results: Tuple[Any, ...], carried: Carried) -> Tuple[Tuple[Any, ...],
                                                                              Carried]:
    """The round's results with the outcomes collected in discarded rounds put back in front,
    and what to carry if this round is discarded too. A collection hands each outcome over
    once: a round thrown away after a stall must not take a fence's "off" (or the watcher's
    reply) with it (finding 1 of the explorer, BENCHMARKS.md: the survivor waited forever)."""
    fences, calls = carried
    out = list(results)
    if plan.fence_at is not None:
        out[plan.fence_at] = fences + tuple(results[plan.fence_at])
        fences = out[plan.fence_at]
    if plan.calls_at is not None:
        out[plan.calls_at] = calls + tuple(results[plan.calls_at])
        calls = out[plan.calls_at]
    return tuple(out), (fences, calls)


@lru_cache(maxsize=64)
def _probe(template: Probe, text: str) -> Probe:
    """The probe carrying this beacon (memoized: it is the same nearly every cycle)."""
    return template._replace(beacon=text)


def peer_says_master(state: DaemonState) -> bool:
    peer = parse_beacon(state.peer_beacon)
    return peer is not None and peer.claims_master


def role_from_answer(result: XapiResult) -> Optional[str]:
    """What a pool-session call to another host's xapi says about that host's role."""
    if result.ok:
        return "master"
    code = result.code
    if code == "HOST_IS_SLAVE":
        return "slave"
    if code in (TIMEOUT, UNREACHABLE, CONNECTION_REFUSED, STALE):
        return None
    return "other:%s" % code


def observe(
    plan: ReadPlan,
    results: Tuple[Any, ...],
    cycle_start: float,
    now: float,
    wall: float,
    stop_requested: bool,
    role: PoolRole,
    shutting_down: bool = False,
) -> Observation:
    probe = results[0]
    guests = results[1]
    view = None
    settings = None
    view_error = ""
    peer_role = None
    if plan.pool_at is not None:
        answers = results[plan.pool_at:plan.pool_at + plan.pool_reads]
        failed = [a for a in answers if not a.ok]
        if failed:
            view_error = failed[0].code
            if plan.pool_address is not None:
                # A slave reading at its master's address learns the master's role for free.
                peer_role = role_from_answer(failed[0])
        else:
            try:
                if plan.pool_reads == len(POOL_READS):
                    view = parse_pool(*(a.value for a in answers))
                    settings = settings_of(view)
                else:
                    settings = parse_settings(answers[0].value)
            except PoolParseError:
                view_error = GARBAGE
            if plan.pool_address is not None:
                peer_role = "master"
    peer_guests = None
    if plan.peer_role_at is not None:
        answer = results[plan.peer_role_at]
        peer_role = role_from_answer(answer)
        if plan.peer_vms_at is not None and answer.ok and results[plan.peer_vms_at].ok:
            peer_guests = count_own_guests(answer.value, results[plan.peer_vms_at].value)
    tasks = tuple((ref, results[i]) for ref, i in plan.tasks_at) if plan.tasks_at else ()
    fence = tuple(results[plan.fence_at]) if plan.fence_at is not None else ()
    watch, watched, reread = plan.watch, False, False
    if watch is not None:
        watch, view, settings, watched, reread = _watched(plan, results, watch, role,
                                                          cycle_start, view, settings)
    known = None
    if view is not None:
        known = known_vms(view)
    elif watch is not None and plan.watch is not None \
            and watch.records.tables is not plan.watch.records.tables:
        try:  # a slave: what its master's database says (metrics do not matter here)
            known = known_vms(watching.view_of(watch))
        except PoolParseError:
            pass
    return Observation(cycle_start, now, wall, stop_requested, role, probe, guests, view,
                       settings, view_error, peer_role, peer_guests, tasks, fence, shutting_down,
                       watch, watched, reread, known)


def _watched(plan: ReadPlan, results: Tuple[Any, ...], watch: Watch, role: PoolRole,
             cycle_start: float, view: Optional[PoolView], settings: Optional[Settings]
             ) -> Tuple[Watch, Optional[PoolView], Optional[Settings], bool, bool]:
    """The watch after this cycle's outcomes, and what its records say when they changed and no
    full read answered this cycle: (watch, view, settings, watched, reread)."""
    before = watch.records
    if plan.calls_at is not None:
        watch = watching.absorb(watch, results[plan.calls_at], cycle_start)
    if plan.watch_start_at is not None:
        started: CallStarted = results[plan.watch_start_at]
        call: XapiCall = plan.effects[plan.watch_start_at].call
        watch = watching.started(watch, started.job, call.args[1], cycle_start)
    if view is not None and plan.pool_at is not None and plan.pool_reads == len(POOL_READS):
        watch = watching.with_metrics(watch, results[plan.pool_at + 2].value)
    if watch.records.tables is before.tables or view is not None or settings is not None:
        return watch, view, settings, False, False
    if not plan.watch_newer:
        return watch, view, settings, False, True
    try:
        if role.is_master and watch.address is LOCAL:
            if not watch.metrics:
                return watch, view, settings, False, True
            view = watching.view_of(watch)
            return watch, view, settings_of(view), True, False
        if not role.is_master and watch.address == role.master_address:
            return watch, view, parse_settings(watch.records.table("pool")), True, False
    except PoolParseError:
        return watching.resync(watch), view, settings, False, True
    return watch, view, settings, False, False


def count_own_guests(pools: Any, vms: Any) -> Optional[int]:
    """Guests a master's database says run on that master itself (None if garbage)."""
    try:
        master = next(iter(pools.values()))["master"]
        return sum(
            1 for rec in vms.values()
            if rec.get("resident_on") == master and rec.get("power_state") in ("Running", "Paused")
            and not rec.get("is_control_domain")
        )
    except (AttributeError, KeyError, StopIteration, TypeError):
        return None


def task_outcome(result: XapiResult) -> Tuple[str, str]:
    """("pending" | "success" | "failure" | "gone" | "unknown", error code) for a task read."""
    if not result.ok:
        if result.code == "HANDLE_INVALID":
            return "gone", result.code
        return "unknown", result.code
    record: Dict[str, Any] = result.value
    status = record.get("status", "") if isinstance(record, dict) else ""
    if status == "success":
        return "success", ""
    if status in ("failure", "cancelled"):
        info = record.get("error_info") or ["UNKNOWN"]
        return "failure", str(info[0])
    if status in ("pending", "cancelling"):
        return "pending", ""
    return "unknown", GARBAGE
