"""What the operator's `halizard` command does to the pool: find the master, read the pool, switch
HA, set VM restart policies. Every call goes through the daemon's own adapter
(halizard.runtime.xapi), so the CLI has the same deadlines and the same error codes.

Pool-wide state lives in the pool database where both hosts and the GUIs see it: the switch and
the default policy in the pool's other_config, each VM's policy in its own, all as XenCenter
custom fields (halizard.core.pool); start order and delay are the VM's own ``order`` and
``start_delay`` fields, which XenCenter edits too.
"""
import difflib
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from halizard.core.pool import (
    KEY_ENABLED,
    KEY_VM_RESTART,
    POLICIES,
    PoolParseError,
    PoolView,
    VmView,
    daemon_reports,
    parse_pool,
    parse_report,
)
from halizard.effects import LOCAL, POOL_SESSION, XapiCall, XapiResult
from halizard.runtime.xapi import XapiAdapter, find_masters

TIMEOUT = 10.0  # seconds per call: an operator waits longer than the daemon does


class AdminError(Exception):
    """A clear, one-paragraph reason the command did nothing (or stopped)."""


@dataclass(frozen=True)
class Pool:
    """A session on the pool master: ``address`` LOCAL when the xapi asked first is the master."""

    adapter: XapiAdapter
    address: Optional[str]
    timeout: float = TIMEOUT

    def call(self, method: str, *args: Any) -> Any:
        result = self.attempt(method, *args)
        if not result.ok:
            raise AdminError("%s failed: %s" % (method, " ".join(result.error)))
        return result.value

    def attempt(self, method: str, *args: Any) -> XapiResult:
        """The call's result, an error included: for callers that act on xapi's error codes."""
        return self.adapter.perform(XapiCall(method, tuple(args), self.address, POOL_SESSION,
                                             self.timeout))


def connect(adapter: XapiAdapter, timeout: float = TIMEOUT) -> Pool:
    """The pool's master, following HOST_IS_SLAVE once from the xapi asked first."""
    result = adapter.perform(XapiCall("pool.get_all", (), LOCAL, POOL_SESSION, timeout))
    if result.ok:
        return Pool(adapter, LOCAL, timeout)
    if result.code == "HOST_IS_SLAVE" and len(result.error) > 1:
        master = result.error[1]
        again = adapter.perform(XapiCall("pool.get_all", (), master, POOL_SESSION, timeout))
        if again.ok:
            return Pool(adapter, master, timeout)
        raise AdminError("this host is a slave of %s, which does not answer (%s): is the "
                         "master down? `halizard status` on the other host tells more"
                         % (master, " ".join(again.error)))
    raise AdminError("cannot reach xapi: %s" % " ".join(result.error))


@dataclass(frozen=True)
class PoolState:
    """The view, and the pool's other_config read with it (daemon reports, pool-wide
    settings, HA-Lizard's keys: what the view does not keep)."""

    view: PoolView
    other_config: Dict[str, Any]


def read_state(pool: Pool) -> PoolState:
    pools = pool.call("pool.get_all_records")
    try:
        view = parse_pool(pools, pool.call("host.get_all_records"),
                          pool.call("host_metrics.get_all_records"),
                          pool.call("VM.get_all_records"))
    except PoolParseError as exc:
        raise AdminError("the pool database answered something unexpected: %s" % exc) from None
    return PoolState(view, pool_other_config(pools))


def read_view(pool: Pool) -> PoolView:
    return read_state(pool).view


def pool_other_config(pools: Any) -> Dict[str, Any]:
    """The pool's other_config from ``pool.get_all_records`` (parse_pool checked its shape)."""
    try:
        record = next(iter(pools.values()))
        other = record.get("other_config") or {}
        return dict(other)
    except (AttributeError, StopIteration, TypeError, ValueError):
        raise AdminError("the pool record answered something unexpected") from None


def read_other_config(pool: Pool) -> Dict[str, Any]:
    """The pool's other_config alone (one call): what a wait polls."""
    return pool_other_config(pool.call("pool.get_all_records"))


PROBE_TIMEOUT = 3.0  # seconds to wait for each host's xapi in `status`


def roles(pool: Pool, view: PoolView, timeout: float = PROBE_TIMEOUT) -> Dict[str, str]:
    """host uuid -> what its xapi says it is now: "master", "slave", or why it did not answer.
    The database alone cannot tell: xapi marks a crashed host not live only after ten minutes.
    The master whose database ``view`` came from is asked through the session already held
    (on a host's own socket there is no password to log in to it afresh); the others are
    asked with a login, which a slave answers with HOST_IS_SLAVE before any password check."""
    master = view.host(view.master_uuid)
    held = replace(pool, timeout=timeout).attempt("pool.get_all")
    answered = (master.address,) if master is not None and held.ok else ()
    found = find_masters(pool.adapter, tuple(h.address for h in view.hosts
                                             if h.address not in answered), timeout, answered)
    answers = {}
    for h in view.hosts:
        code = found.unreachable.get(h.address, "")
        answers[h.uuid] = ("master" if h.address in found.masters
                           else "slave" if h.address in found.slaves or code == "HOST_IS_SLAVE"
                           else code)
    return answers


def set_other_config(pool: Pool, cls: str, ref: str, key: str, value: Optional[str]) -> None:
    """Set (or, with None, remove) one other_config key. xapi refuses to add a key that exists,
    and removing an absent key is allowed: remove, then add."""
    pool.call("%s.remove_from_other_config" % cls, ref, key)
    if value is not None:
        pool.call("%s.add_to_other_config" % cls, ref, key, value)


def pool_ref(pool: Pool) -> str:
    refs = pool.call("pool.get_all")
    if not isinstance(refs, list) or len(refs) != 1:
        raise AdminError("expected one pool object, got %r" % (refs,))
    return str(refs[0])


def switch(pool: Pool, view: PoolView, on: bool) -> bool:
    """Switch halizard on or off pool-wide. Returns False when it already was. Refuses to
    switch on beside XenServer's own HA: two HA managers would fight over the same VMs."""
    if on and view.native_ha:
        raise AdminError("XenServer's own HA is enabled on this pool: halizard stays off while "
                         "it is. Disable it first (`xe pool-ha-disable`), then enable halizard.")
    if view.ha_enabled == on:
        return False
    set_other_config(pool, "pool", pool_ref(pool), KEY_ENABLED, "true" if on else "false")
    return True


DISABLED_STATE = "disabled"  # the daemon's mode while the switch is off (halizard.core.state)
POLL = 0.5  # seconds between two looks at the pool while waiting for something


def acknowledges(raw: Any, on: bool, now: float) -> bool:
    """Whether a daemon's published report shows it has taken up the switch: a current (not
    stale) report whose state is "disabled" exactly when the switch is off."""
    report = parse_report(raw)
    return report is not None and not report.stale(now) and (report.state == DISABLED_STATE) != on


def bounded(pool: Pool, deadline: float, clock: Callable[[], float] = time.monotonic) -> Pool:
    """The same session with each call's timeout cut to what is left before ``deadline``."""
    return replace(pool, timeout=max(0.5, min(pool.timeout, deadline - clock())))


def await_switch(pool: Pool, host_uuids: Sequence[str], on: bool, timeout: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """Wait until the daemon of every host in ``host_uuids`` has acknowledged the switch, at
    most ``timeout`` seconds. Returns the hosts that did not (host uuid -> its last raw report,
    None when it has none): empty when all did."""
    deadline = clock() + timeout
    waiting: Dict[str, Any] = {uuid: None for uuid in host_uuids}
    while True:
        try:
            reports = daemon_reports(read_other_config(bounded(pool, deadline, clock)))
        except AdminError:
            reports = {}  # the master may be busy; the deadline decides
        now = wall()
        for uuid in list(waiting):
            waiting[uuid] = reports.get(uuid, waiting[uuid])
            if acknowledges(reports.get(uuid), on, now):
                del waiting[uuid]
        if not waiting or clock() >= deadline:
            return waiting
        sleep(min(POLL, max(0.0, deadline - clock())))


def resolve_vms(view: PoolView, names: Sequence[str]) -> Tuple[VmView, ...]:
    """The VMs ``names`` name (a name label or a UUID). Every name must match exactly one VM;
    an unknown or ambiguous one is an error that lists the candidates, and nothing is changed."""
    found: List[VmView] = []
    problems: List[str] = []
    for name in names:
        matches = [v for v in view.vms if v.uuid == name or v.name == name]
        if len(matches) == 1:
            if matches[0] not in found:
                found.append(matches[0])
        elif matches:
            problems.append("%r names %d VMs; use a UUID: %s" % (
                name, len(matches), ", ".join(v.uuid for v in matches)))
        else:
            close = difflib.get_close_matches(name, sorted({v.name for v in view.vms}), n=5)
            problems.append("no VM is named %r%s" % (
                name, "; did you mean: %s" % ", ".join(repr(c) for c in close) if close else ""))
    if problems:
        raise AdminError("\n".join(problems))
    return tuple(found)


@dataclass(frozen=True)
class VmChange:
    restart: Optional[str] = None
    order: Optional[int] = None
    start_delay: Optional[int] = None  # seconds


def check_change(change: VmChange) -> VmChange:
    if change.restart is not None and change.restart not in POLICIES:
        raise AdminError("--restart must be one of %s, not %r" % (", ".join(POLICIES),
                                                                  change.restart))
    if change.order is not None and change.order < 0:
        raise AdminError("--order must be 0 or more, not %d" % change.order)
    if change.start_delay is not None and change.start_delay < 0:
        raise AdminError("--start-delay must be 0 or more seconds, not %d" % change.start_delay)
    if change == VmChange():
        raise AdminError("nothing to set: give --restart, --order or --start-delay")
    return change


def change_vm(pool: Pool, vm: VmView, change: VmChange) -> None:
    """Apply ``change`` to one VM. Integers travel as strings, as xapi's int64 do."""
    if change.restart is not None:
        set_other_config(pool, "VM", vm.ref, KEY_VM_RESTART, change.restart)
    if change.order is not None:
        pool.call("VM.set_order", vm.ref, str(change.order))
    if change.start_delay is not None:
        pool.call("VM.set_start_delay", vm.ref, str(change.start_delay))
