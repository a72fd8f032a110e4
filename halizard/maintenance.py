"""Planned maintenance of one host, so that it can be rebooted safely: mark it, hand the master
role to the other host, move its protected VMs there by live migration, disable it.

The mark (``halizard.maintenance.<host uuid>`` in the pool's other_config) tells the daemons:
the host in maintenance takes over nothing, and an acting master empties it too (the daemon's
own maintenance rung, halizard.core.decide). The command does the work itself as well, so
that it also works while halizard is switched off, and waits for each step by a deadline,
reporting each VM's outcome; where the daemon got there first (a VM already moving), it waits
for that. Every step can be repeated: running the command again retries what is left.
"""
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from halizard.admin import (
    POLL,
    AdminError,
    Pool,
    connect,
    pool_ref,
    read_view,
    set_other_config,
)
from halizard.core.pool import HostView, PoolView, VmView, maintenance_key
from halizard.effects import CONNECTION_REFUSED, CONNECTION_RESET, GARBAGE, TIMEOUT, UNREACHABLE

INVENTORY = "/etc/xensource-inventory"  # on a XenServer host: INSTALLATION_UUID names it
# Answers that say nothing about whether a call took effect: look again.
TRANSPORT_CODES = (TIMEOUT, CONNECTION_REFUSED, CONNECTION_RESET, UNREACHABLE, GARBAGE)
Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --- pure: which host, where to, what moves -----------------------------------------------------


def inventory_uuid(text: str) -> Optional[str]:
    """INSTALLATION_UUID from /etc/xensource-inventory (shell-style KEY='value' lines)."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "INSTALLATION_UUID":
            return value.strip().strip("'\"") or None
    return None


def find_host(view: PoolView, name: str) -> HostView:
    """The host ``name`` names (name label, UUID or management address), or a clear error."""
    matches = [h for h in view.hosts if name in (h.name, h.uuid, h.address)]
    if len(matches) == 1:
        return matches[0]
    hosts = ", ".join("%s (%s)" % (h.name, h.address) for h in view.hosts)
    if matches:
        raise AdminError("%r names %d hosts; use a UUID. Hosts: %s" % (name, len(matches), hosts))
    raise AdminError("no host is named %r. Hosts: %s" % (name, hosts))


def destination(view: PoolView, host: HostView, answers: Mapping[str, str]) -> HostView:
    """The host that takes over the master role and the VMs: the other one, and only if it can
    (its xapi answers, live, enabled, not in maintenance itself)."""
    others = [h for h in view.hosts if h.uuid != host.uuid]
    if not others:
        raise AdminError("%s is the only host in the pool: there is nowhere to move its VMs"
                         % host.name)
    why: List[str] = []
    for h in others:
        answer = answers.get(h.uuid)
        if answer not in ("master", "slave"):
            why.append("%s's xapi does not answer (%s)" % (h.name, answer))
        elif not h.live:
            why.append("%s is not live" % h.name)
        elif not h.enabled:
            why.append("%s is disabled (`xe host-enable`)" % h.name)
        elif h.uuid in view.maintenance:
            why.append("%s is in maintenance itself (`halizard maintenance off --host %s`)"
                       % (h.name, h.name))
        else:
            return h
    raise AdminError("cannot empty %s: %s; nothing changed" % (host.name, "; ".join(why)))


def plan_moves(view: PoolView, host_uuid: str) -> Tuple[Tuple[VmView, ...], Tuple[VmView, ...]]:
    """(the protected VMs running on the host, to move; its unprotected ones, left there)."""
    here = [v for v in view.vms if v.running and v.resident_on == host_uuid]
    return (tuple(v for v in here if v.protected), tuple(v for v in here if not v.protected))


@dataclass(frozen=True)
class VmOutcome:
    name: str
    moved: bool  # off the host (moved, or no longer running there)
    detail: str


# --- the steps, each by a deadline --------------------------------------------------------------


def mark(pool: Pool, host: HostView, on: bool) -> None:
    set_other_config(pool, "pool", pool_ref(pool), maintenance_key(host.uuid),
                     "true" if on else None)


def hand_over(pool: Pool, to: HostView, timeout: float, clock: Clock = time.monotonic,
              sleep: Sleep = time.sleep) -> Pool:
    """Make ``to`` the pool master (pool.designate_new_master; both xapis restart) and return a
    session on it, once it answers as master. The daemon of a master in maintenance asks for
    the same hand-over: whichever request lands first, the other finds it done."""
    deadline = clock() + timeout
    asked = pool.attempt("pool.designate_new_master", to.ref)
    if not asked.ok and asked.code not in TRANSPORT_CODES and _master_session(pool, to,
                                                                             3.0) is None:
        raise AdminError("could not hand the master role to %s: %s" % (to.name,
                                                                      " ".join(asked.error)))
    while True:
        remaining = deadline - clock()
        session = _master_session(pool, to, max(0.5, min(3.0, remaining)))
        if session is not None:
            return session
        if clock() >= deadline:
            raise AdminError("%s did not answer as pool master within %gs of the hand-over; "
                             "the master role may be changing hands: `halizard status`, then "
                             "run this command again" % (to.name, timeout))
        sleep(min(POLL, max(0.0, deadline - clock())))


def _master_session(pool: Pool, host: HostView, timeout: float) -> Optional[Pool]:
    """A session on the pool master, found the way the command found the first one (the
    xapi it was given, then the master its slave names), if that master is ``host``; None while
    it is not (yet), or while the xapis restart. No new login to ``host`` is needed: on a
    host's own socket there is no password."""
    try:
        session = connect(pool.adapter, timeout)
        pools = session.call("pool.get_all_records")
        master = next(iter(pools.values())).get("master")
    except (AdminError, AttributeError, StopIteration, TypeError):
        return None
    return Pool(session.adapter, session.address, pool.timeout) if master == host.ref else None


def move_vm(pool: Pool, vm: VmView, source: HostView, to: HostView, timeout: float,
            clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> VmOutcome:
    """Live-migrate one VM from ``source`` to ``to`` (Async.VM.pool_migrate, its task watched),
    at most ``timeout`` seconds. A migration already under way (the master's daemon moving it)
    is waited for, not doubled."""
    started = clock()
    deadline = started + timeout
    task: Optional[str] = None
    last = ""
    while True:
        record = _vm_record(pool, vm.uuid)
        if record is GONE:
            return VmOutcome(vm.name, True, "no longer in the pool database")
        if record is not None:
            power, resident = record.get("power_state"), record.get("resident_on")
            if power not in ("Running", "Paused"):
                return VmOutcome(vm.name, True, "no longer running (%s)" % str(power).lower())
            if resident == to.ref:
                return VmOutcome(vm.name, True, "moved to %s (%.1fs)" % (to.name,
                                                                         clock() - started))
            if resident != source.ref:
                return VmOutcome(vm.name, True, "no longer on %s" % source.name)
            if task is None and not record.get("current_operations"):
                started_call = pool.attempt("Async.VM.pool_migrate", record["ref"], to.ref,
                                            {"live": "true"})
                if started_call.ok:
                    task = str(started_call.value)
                elif started_call.code not in TRANSPORT_CODES + ("OTHER_OPERATION_IN_PROGRESS",):
                    return VmOutcome(vm.name, False, " ".join(started_call.error))
                else:
                    last = " ".join(started_call.error)
        if task is not None:
            task, failure = _task_state(pool, task)
            if failure is not None:
                if failure.split(" ")[0] != "OTHER_OPERATION_IN_PROGRESS":
                    return VmOutcome(vm.name, False, failure)
                last = failure
        if clock() >= deadline:
            return VmOutcome(vm.name, False, "still on %s after %gs%s" % (
                source.name, timeout, " (last: %s)" % last if last else ""))
        sleep(min(POLL, max(0.0, deadline - clock())))


GONE: Dict[str, Any] = {}  # what _vm_record answers for a VM deleted meanwhile


def _vm_record(pool: Pool, uuid: str) -> Optional[Dict[str, Any]]:
    """The VM's record with its ref; GONE when the VM no longer exists; None when it cannot be
    read just now."""
    ref = pool.attempt("VM.get_by_uuid", uuid)
    if ref.code == "UUID_INVALID":
        return GONE
    if not ref.ok:
        return None
    record = pool.attempt("VM.get_record", ref.value)
    if not record.ok or not isinstance(record.value, dict):
        return None
    return dict(record.value, ref=ref.value)


def _task_state(pool: Pool, task: str) -> Tuple[Optional[str], Optional[str]]:
    """(the task, while it is pending; its error when it failed). A task that cannot be read
    any more (xapi restarted) is forgotten: the VM's record tells what happened."""
    status = pool.attempt("task.get_status", task)
    if status.ok and status.value == "pending":
        return task, None
    failure = None
    if status.ok and status.value == "failure":
        info = pool.attempt("task.get_error_info", task)
        failure = " ".join(str(e) for e in info.value) if info.ok else "the migration failed"
    elif status.ok and status.value == "cancelled":
        failure = "the migration was cancelled"
    if status.ok:
        pool.attempt("task.destroy", task)
    return None, failure


# --- the whole procedure ------------------------------------------------------------------------


@dataclass(frozen=True)
class Emptied:
    outcomes: Tuple[VmOutcome, ...]
    left: Tuple[VmView, ...]  # unprotected VMs still running there

    @property
    def failed(self) -> Tuple[VmOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.moved)


def enter(pool: Pool, view: PoolView, host: HostView, to: HostView, timeout: float,
          say: Callable[[str], None]) -> Emptied:
    """Mark ``host``, hand the master role to ``to`` if ``host`` holds it, move the protected
    VMs, disable the host (no new VM lands there). Maintenance stays on whatever happens."""
    if host.uuid not in view.maintenance:
        mark(pool, host, True)
    say("%s: in maintenance" % host.name)
    if view.master_uuid == host.uuid:
        say("%s: handing the master role to %s" % (host.name, to.name))
        pool = hand_over(pool, to, timeout)
        say("%s: pool master" % to.name)
        view = read_view(pool)  # what the new master says
        host = find_host(view, host.uuid)
        to = find_host(view, to.uuid)
    moving, left = plan_moves(view, host.uuid)
    outcomes: List[VmOutcome] = []
    for vm in sorted(moving, key=lambda v: (v.order, v.name)):
        outcome = move_vm(pool, vm, host, to, timeout)
        say("  %-24s %s%s" % (vm.name, "" if outcome.moved else "NOT MOVED: ", outcome.detail))
        outcomes.append(outcome)
    disabled = pool.attempt("host.disable", host.ref)
    if not disabled.ok:
        say("%s: could not disable it (%s): xapi may still place VMs there"
            % (host.name, " ".join(disabled.error)))
    return Emptied(tuple(outcomes), left)


def leave(pool: Pool, view: PoolView, host: HostView, say: Callable[[str], None]) -> bool:
    """Clear the mark and enable the host again. Returns False when it could not be enabled
    (the mark is cleared all the same: the daemon's master enables it once it can)."""
    if host.uuid in view.maintenance:
        mark(pool, host, False)
    say("%s: out of maintenance" % host.name)
    if host.enabled:
        return True
    enabled = pool.attempt("host.enable", host.ref)
    if enabled.ok:
        say("%s: enabled" % host.name)
        return True
    say("%s: could not enable it yet (%s): `xe host-enable host=%s` once it has started"
        % (host.name, " ".join(enabled.error), host.name))
    return False


def unprotected_note(left: Sequence[VmView], host: HostView) -> Optional[str]:
    if not left:
        return None
    return ("left running on %s (restart policy never, so not moved): %s; shut them down or "
            "move them before rebooting it" % (host.name, ", ".join(v.name for v in left)))
