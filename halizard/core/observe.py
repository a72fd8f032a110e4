"""What the loop reads each cycle, and the Observation built from the answers. Pure.

The read plan depends on the situation: a master reads the pool database from its own xapi; a
slave reads it from its master only while its master is visible (a slave's xapi hangs on
database calls while its master is unreachable); a rejoining host asks its peer's xapi which role
it has. Every read carries a timeout, so one slow xapi never stalls probing for long.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from halizard.core.config import Config
from halizard.core.pool import PoolParseError, PoolView, parse_pool
from halizard.core.state import DaemonState, Mode
from halizard.effects import (
    LOCAL,
    POOL_SESSION,
    CollectFenceResults,
    GuestList,
    ListGuests,
    PoolRole,
    Probe,
    ProbeReport,
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
QUICK_WAIT = 0.1  # how long a round waits for replies from a peer that is already silent


@dataclass(frozen=True)
class ReadPlan:
    effects: Tuple[Any, ...]
    pool_at: Optional[int]  # index of the first of the four pool reads
    pool_address: Optional[str]
    peer_role_at: Optional[int]
    peer_vms_at: Optional[int]
    tasks_at: Tuple[Tuple[str, int], ...]
    fence_at: Optional[int]


@dataclass(frozen=True)
class Observation:
    cycle_start: float
    now: float
    wall: float
    stop_requested: bool
    role: PoolRole
    probe: ProbeReport
    guests: Optional[GuestList]
    view: Optional[PoolView]
    view_error: str
    peer_role: Optional[str]
    peer_guests: Optional[int]
    tasks: Tuple[Tuple[str, XapiResult], ...]
    fence: Tuple[Any, ...]


def plan_reads(config: Config, state: DaemonState, role: PoolRole, now: float) -> ReadPlan:
    peer_recent = state.peer_upper is not None and now - state.peer_upper <= config.peer_timeout
    effects: List[Any] = [
        Probe(config.peer_addresses, config.gateway_addresses, config.probe_count,
              config.probe_spacing, config.probe_timeout,
              peer_wait=config.probe_timeout if peer_recent else QUICK_WAIT),
        ListGuests(timeout=config.xapi_timeout),
    ]
    peer_address = config.peer_addresses[0]

    pool_at = None
    pool_address = None
    if role.is_master:
        pool_address = LOCAL
    elif role.master_address is not None and (peer_recent or state.mode is Mode.STARTING):
        pool_address = role.master_address
    if pool_address is not None or role.is_master:
        pool_at = len(effects)
        for method in POOL_READS:
            effects.append(XapiCall(method, (), pool_address, POOL_SESSION, config.xapi_timeout))

    peer_role_at = None
    if role.is_master and peer_recent and (
        state.mode is Mode.REJOINING
        or state.peer_role != "slave"
        or state.peer_role_at is None
        or now - state.peer_role_at > PEER_ROLE_RECHECK
    ):
        peer_role_at = len(effects)
        effects.append(XapiCall("pool.get_all_records", (), peer_address, POOL_SESSION,
                                config.xapi_timeout))
    peer_vms_at = None
    if role.is_master and peer_recent and state.peer_role == "master":
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
    return ReadPlan(tuple(effects), pool_at, pool_address, peer_role_at, peer_vms_at,
                    tuple(tasks_at), fence_at)


def role_from_answer(result: XapiResult) -> Optional[str]:
    """What a pool-session call to another host's xapi says about that host's role."""
    if result.ok:
        return "master"
    code = result.code
    if code == "HOST_IS_SLAVE":
        return "slave"
    if code in ("TIMEOUT", "UNREACHABLE", "CONNECTION_REFUSED", "STALE"):
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
) -> Observation:
    probe = results[0]
    guests = results[1]
    view = None
    view_error = ""
    peer_role = None
    if plan.pool_at is not None:
        answers = results[plan.pool_at:plan.pool_at + len(POOL_READS)]
        failed = [a for a in answers if not a.ok]
        if failed:
            view_error = failed[0].code
            if plan.pool_address is not None:
                # A slave reading at its master's address learns the master's role for free.
                peer_role = role_from_answer(failed[0])
        else:
            try:
                view = parse_pool(*(a.value for a in answers))
            except PoolParseError:
                view_error = "GARBAGE"
            if plan.pool_address is not None:
                peer_role = "master"
    peer_guests = None
    if plan.peer_role_at is not None:
        answer = results[plan.peer_role_at]
        peer_role = role_from_answer(answer)
        if plan.peer_vms_at is not None and answer.ok and results[plan.peer_vms_at].ok:
            peer_guests = count_own_guests(answer.value, results[plan.peer_vms_at].value)
    tasks = tuple((ref, results[i]) for ref, i in plan.tasks_at)
    fence = tuple(results[plan.fence_at]) if plan.fence_at is not None else ()
    return Observation(
        cycle_start=cycle_start,
        now=now,
        wall=wall,
        stop_requested=stop_requested,
        role=role,
        probe=probe,
        guests=guests,
        view=view,
        view_error=view_error,
        peer_role=peer_role,
        peer_guests=peer_guests,
        tasks=tasks,
        fence=fence,
    )


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
    return "unknown", "GARBAGE"
