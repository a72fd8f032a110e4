"""What an administrator must hear about, read off the daemon's decisions. Pure.

The daemon decides; this module decides nothing. It watches the decisions go by (and the
outcomes of their actions) and says which of them an administrator must be told about, once,
with the host, the decision, the reason and the numbers behind it. The real executor hands
the alerts to its channels (halizard.runtime.alerts: the journal, XenAPI messages, e-mail, a
webhook); the simulator records them in its timeline, so a scenario shows what its operator
would have received.

Two kinds of alert:

* **Conditions** last: the peer lost, the gateway lost, two pool masters, XenServer's own HA
  on, a protected VM that could not be restarted, the fence agent failing, the watchdog not
  available. Each is ``raised`` when it begins, repeated as a ``reminder`` every
  ``reminder_interval`` while it lasts, and ``resolved`` once it has been clear for its
  hold-down (``resolve_after``). A condition that clears and returns within its hold-down was
  never resolved: a gateway that flaps every few seconds is one alert, not hundreds. Each time
  a resolved condition returns within ``reminder_interval`` of its resolution, its hold-down
  doubles (up to ``reminder_interval``), so a slower flap quiets down too.
* **Events** happen once: takeover started, takeover finished (which VMs run where, how long it
  took), self-fence, rejoin; outside the decisions, the daemon refusing an unsafe
  configuration (``event_alert``).

A condition is only judged where the decision can tell: while a daemon is ``starting`` it has
not yet had contact, so nothing it sees then raises or resolves anything; while HA is off the
links are not watched. What cannot be judged keeps its last state, without reminders.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Set, Tuple

from halizard.core.config import Config
from halizard.core.decide import peer_claims_master, peer_host
from halizard.core.evidence import facts
from halizard.core.pool import VmView
from halizard.core.state import DaemonState, Decision, Mode
from halizard.effects import STALE, WatchdogResult, XapiResult

# Kinds: the same words in the journal (HALIZARD_ALERT=...), the mail subject, the webhook's
# JSON and the XenAPI message name (HALIZARD_PEER_LOST).
PEER_LOST = "peer-lost"
GATEWAY_LOST = "gateway-lost"
TWO_MASTERS = "two-masters"
NATIVE_HA = "native-ha"
VM_NOT_RESTARTED = "vm-not-restarted"
FENCE_AGENT_FAILURE = "fence-agent-failure"
WATCHDOG_UNAVAILABLE = "watchdog-unavailable"
TAKEOVER_STARTED = "takeover-started"
TAKEOVER_FINISHED = "takeover-finished"
SELF_FENCE = "self-fence"
REJOIN = "rejoin"
UNSAFE_CONFIGURATION = "unsafe-configuration"
TEST = "test"

# States of an alert.
RAISED = "raised"
REMINDER = "reminder"
RESOLVED = "resolved"
EVENT = "event"

# Severities (the XenAPI message priority and the journal priority follow from them).
CRITICAL = "critical"
WARNING = "warning"
INFO = "info"

SEVERITY = {
    PEER_LOST: WARNING, GATEWAY_LOST: WARNING, TWO_MASTERS: CRITICAL, NATIVE_HA: WARNING,
    VM_NOT_RESTARTED: CRITICAL, FENCE_AGENT_FAILURE: CRITICAL, WATCHDOG_UNAVAILABLE: CRITICAL,
    TAKEOVER_STARTED: CRITICAL, TAKEOVER_FINISHED: WARNING, SELF_FENCE: CRITICAL,
    REJOIN: INFO, UNSAFE_CONFIGURATION: CRITICAL, TEST: INFO,
}
TITLE = {
    PEER_LOST: "peer lost", GATEWAY_LOST: "gateway lost", TWO_MASTERS: "two pool masters",
    NATIVE_HA: "XenServer's own HA is on", VM_NOT_RESTARTED: "VM not restarted",
    FENCE_AGENT_FAILURE: "fence agent failing", WATCHDOG_UNAVAILABLE: "watchdog not available",
    TAKEOVER_STARTED: "takeover started", TAKEOVER_FINISHED: "takeover finished",
    SELF_FENCE: "self-fence", REJOIN: "rejoined", UNSAFE_CONFIGURATION: "unsafe configuration",
    TEST: "test alert",
}
KINDS = tuple(SEVERITY)

# What each condition's judgement needs (see conditions()).
LINKS, POOL, VMS, FENCE, WATCHDOG = "links", "pool", "vms", "fence", "watchdog"
_SCOPE = {PEER_LOST: LINKS, GATEWAY_LOST: LINKS, TWO_MASTERS: POOL, NATIVE_HA: POOL,
          VM_NOT_RESTARTED: VMS, FENCE_AGENT_FAILURE: FENCE, WATCHDOG_UNAVAILABLE: WATCHDOG}

Facts = Tuple[Tuple[str, Any], ...]


@dataclass(frozen=True)
class AlertPolicy:
    """How often a lasting condition is repeated, and how long it must stay clear before it
    is resolved (seconds)."""

    reminder_interval: float = 3600.0  # 0: no reminders
    resolve_after: float = 60.0


@dataclass(frozen=True)
class Alert:
    """One thing to tell the administrator, complete: every channel renders it from here."""

    key: str  # what is deduplicated: the kind, and for a VM its uuid
    kind: str
    state: str  # raised | reminder | resolved | event
    severity: str
    host: str
    summary: str  # one line, with the numbers
    details: Tuple[str, ...] = ()
    facts: Facts = ()
    mode: str = ""  # the decision's mode and reason, when it came from one
    reason: str = ""
    wall: float = 0.0  # the decision's wall clock (epoch seconds): for people, never compared

    @property
    def subject(self) -> str:
        """The one-line heading: the mail subject, the XenAPI message's first line."""
        state = "" if self.state in (EVENT, RAISED) else " (%s)" % self.state
        return "halizard %s: %s%s: %s" % (self.host, TITLE.get(self.kind, self.kind), state,
                                          self.summary)

    def text(self) -> str:
        """The body every channel sends: the heading, the decision, the details, the numbers."""
        lines = [self.subject, ""]
        if self.mode:
            lines.append("Decision: %s: %s" % (self.mode, self.reason))
        lines.extend(self.details)
        if self.facts:
            lines.append("Numbers: " + ", ".join("%s=%s" % (k, _show(v)) for k, v in self.facts))
        return "\n".join(lines).rstrip() + "\n"

    def to_dict(self) -> Dict[str, Any]:
        """The JSON document of the webhook (and of `halizard alert test`), stable."""
        return {
            "key": self.key, "kind": self.kind, "state": self.state,
            "severity": self.severity, "host": self.host, "summary": self.summary,
            "subject": self.subject, "details": list(self.details),
            "facts": {k: v for k, v in self.facts},
            "decision": {"mode": self.mode, "reason": self.reason} if self.mode else None,
            "at": round(self.wall, 3),
        }


def _show(value: Any) -> str:
    if isinstance(value, float):
        return "%.1f" % value
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(str(v) for v in value)
    return str(value)


class Condition(NamedTuple):
    """A condition as one decision shows it."""

    key: str
    kind: str
    subject: str  # what it is about: the peer, the gateway, a VM
    summary: str
    details: Tuple[str, ...] = ()
    facts: Facts = ()


@dataclass(frozen=True)
class Record:
    """What the book remembers of one condition."""

    condition: Condition  # as last seen
    raised_at: float  # when the current episode began (monotonic)
    announced_at: float  # the last raise or reminder
    active: bool  # False: resolved, kept to notice it flapping
    clear_since: Optional[float] = None  # active, but not seen since then
    resolved_at: Optional[float] = None
    flaps: int = 0  # returns within reminder_interval of a resolution


@dataclass(frozen=True)
class Takeover:
    """A takeover under way: from the peer certainly dead to every protected VM placed."""

    started_at: float
    peer_heard: Optional[float]  # when the peer was last heard (monotonic, upper bound)
    reason: str
    starts: Tuple[Tuple[str, str], ...] = ()  # (vm uuid, host uuid) started by this takeover
    finished: bool = False  # announced; kept until the peer is no longer believed dead


@dataclass(frozen=True)
class AlertBook:
    """What has been announced; observe() is its only transition."""

    host: str  # this host's name in the pool, as last seen (the machine's name until then)
    records: Tuple[Tuple[str, Record], ...] = ()
    mode: Optional[Mode] = None  # the mode of the decision observed last
    takeover: Optional[Takeover] = None
    self_fenced_at: Optional[float] = None
    master: Optional[bool] = None  # this host's xapi role at the decision observed last
    promoted_at: Optional[float] = None  # when it last went from slave to master


def observe(book: AlertBook, policy: AlertPolicy, config: Config, decision: Decision,
            outcomes: Optional[Sequence[Any]] = None) -> Tuple[AlertBook, Tuple[Alert, ...]]:
    """The book after ``decision`` (and the ``outcomes`` of its actions, when known), and the
    alerts to send now."""
    host = _host_name(book, decision)
    if host != book.host:
        # Remembered: a slave that loses its master loses its view of the pool with it, and
        # the alerts of that moment must name the host as the pool does.
        book = dataclasses.replace(book, host=host)
    alerts: List[Alert] = []
    book = _events(book, config, decision, outcomes or (), host, alerts)
    seen, scopes = conditions(config, decision, outcomes)
    now = decision.at
    records = dict(book.records)
    for key in sorted(set(records) | set(seen)):
        record = records.get(key)
        condition = seen.get(key)
        if record is None:
            assert condition is not None
            records[key] = Record(condition, now, now, True)
            alerts.append(_alert(condition, RAISED, host, decision))
            continue
        kind = record.condition.kind
        if _SCOPE.get(kind) not in scopes:
            continue  # cannot be judged now: keep it as it is, without reminders
        if condition is not None:
            records[key] = _still(record, condition, now, policy, host, decision, alerts)
        else:
            updated = _clear(record, now, policy, host, decision, alerts)
            if updated is None:
                del records[key]
            else:
                records[key] = updated
    book = dataclasses.replace(book, records=tuple(sorted(records.items())), mode=decision.mode)
    return book, tuple(alerts)


def _still(record: Record, condition: Condition, now: float, policy: AlertPolicy, host: str,
           decision: Decision, alerts: List[Alert]) -> Record:
    """``record``'s condition is seen (again)."""
    if not record.active:
        assert record.resolved_at is not None
        flaps = record.flaps + 1 if now - record.resolved_at < policy.reminder_interval else 0
        note = () if not flaps else ("It returned %d time%s within %s of being resolved." % (
            flaps, "" if flaps == 1 else "s", _duration(policy.reminder_interval)),)
        alerts.append(_alert(condition, RAISED, host, decision, note))
        return Record(condition, now, now, True, flaps=flaps)
    if record.clear_since is not None:  # it came back within its hold-down: never resolved
        return Record(condition, record.raised_at, record.announced_at, True, flaps=record.flaps)
    if policy.reminder_interval > 0 and now - record.announced_at >= policy.reminder_interval:
        note = ("Ongoing for %s." % _duration(now - record.raised_at),)
        alerts.append(_alert(condition, REMINDER, host, decision, note,
                             (("lasting_s", round(now - record.raised_at, 1)),)))
        return Record(condition, record.raised_at, now, True, flaps=record.flaps)
    return Record(condition, record.raised_at, record.announced_at, True, flaps=record.flaps)


def _clear(record: Record, now: float, policy: AlertPolicy, host: str, decision: Decision,
           alerts: List[Alert]) -> Optional[Record]:
    """``record``'s condition is not seen; None: forget it."""
    if not record.active:
        assert record.resolved_at is not None
        if now - record.resolved_at >= policy.reminder_interval:
            return None  # long enough: a return is news again, not a flap
        return record
    since = record.clear_since if record.clear_since is not None else now
    hold = min(policy.resolve_after * 2 ** record.flaps,
               max(policy.reminder_interval, policy.resolve_after))
    if now - since < hold:
        return Record(record.condition, record.raised_at, record.announced_at, True, since,
                      flaps=record.flaps)
    c = record.condition
    lasted = since - record.raised_at
    summary = "%s (%s for %s)" % (_resolved(c, decision), TITLE[c.kind], _duration(lasted))
    alerts.append(Alert(c.key, c.kind, RESOLVED, INFO, host, summary, (),
                        (("lasted_s", round(lasted, 1)),), decision.mode.value, decision.reason,
                        decision.wall))
    return Record(c, record.raised_at, record.announced_at, False, resolved_at=now,
                  flaps=record.flaps)


def _resolved(c: Condition, decision: Decision) -> str:
    """What ended ``c``, as ``decision`` shows it."""
    s = decision.state
    if c.kind == PEER_LOST:
        return "%s answers again" % c.subject
    if c.kind == GATEWAY_LOST:
        return "gateway %s answers again" % c.subject
    if c.kind == TWO_MASTERS:
        return "one pool master again"
    if c.kind == NATIVE_HA:
        return "XenServer's own HA is off again"
    if c.kind == FENCE_AGENT_FAILURE:
        return ("the fence agent confirmed the peer off" if s.fence_confirmed_at is not None
                else "the fence agent is no longer needed: the peer answers")
    if c.kind == WATCHDOG_UNAVAILABLE:
        return "the watchdog device is armed"
    vm = s.view.vm(c.key.split(":", 1)[-1]) if s.view is not None else None
    if vm is not None and vm.running:
        host = s.view.host(vm.resident_on) if s.view is not None else None
        return "%s runs on %s" % (c.subject, host.name if host else vm.resident_on)
    return "%s is no longer this host's to restart (%s)" % (c.subject, decision.mode.value)


def _alert(c: Condition, state: str, host: str, decision: Decision,
           note: Tuple[str, ...] = (), more: Facts = ()) -> Alert:
    return Alert(c.key, c.kind, state, SEVERITY[c.kind], host, c.summary, c.details + note,
                 c.facts + more, decision.mode.value, decision.reason, decision.wall)


def _host_name(book: AlertBook, decision: Decision) -> str:
    s = decision.state
    if s.view is not None:
        me = s.view.host(s.local_uuid)
        if me is not None and me.name:
            return me.name
    return book.host


def _peer_name(config: Config, s: DaemonState) -> str:
    """The peer's name in the pool, or its addresses where this host has no view of the pool
    (a slave whose master is the peer)."""
    peer = peer_host(s)
    return peer.name if peer is not None else ", ".join(config.peer_addresses)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return "%.1f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def _ago(now: float, then: Optional[float]) -> Optional[float]:
    return None if then is None else round(max(0.0, now - then), 1)


# --- conditions ------------------------------------------------------------------------------------


def conditions(config: Config, decision: Decision, outcomes: Optional[Sequence[Any]] = None
               ) -> Tuple[Dict[str, Condition], FrozenSet[str]]:
    """The conditions ``decision`` shows, and the scopes it can judge (a condition whose scope
    is missing is neither raised nor resolved)."""
    s = decision.state
    mode = decision.mode
    now = decision.at
    seen: Dict[str, Condition] = {}
    scopes: Set[str] = set()
    if mode is Mode.STARTING:
        return seen, frozenset()  # no contact yet: nothing to judge

    scopes.add(POOL)
    if s.settings.native_ha:
        seen[NATIVE_HA] = Condition(NATIVE_HA, NATIVE_HA, "pool", "halizard stands down while "
                                    "XenServer's own HA is enabled", (
                                        "Two HA managers would fight over the same VMs. Disable "
                                        "one of them: `xe pool-ha-disable`, or `halizard "
                                        "disable`.",))
    if s.role is not None and s.role.is_master and peer_claims_master(s):
        seen[TWO_MASTERS] = Condition(
            TWO_MASTERS, TWO_MASTERS, "pool", "this host and %s both act as pool master"
            % _peer_name(config, s),
            ("The master running fewer guests yields (pool.emergency_reset_master); until "
             "then neither acts as master.",),
            (("guests_here", len(s.guests) if s.guests is not None else -1),
             ("guests_on_peer", s.peer_guests if s.peer_guests is not None else -1)))

    if s.settings.ha_active and mode not in (Mode.DISABLED, Mode.STOPPING):
        scopes.add(LINKS)
        f = facts(config, s, now)
        # Silent for peer_timeout, counted from the daemon's start when it never heard it (a
        # daemon that has just started has not heard its peer yet: that is not news).
        if not f.peer_visible and _silent(s.peer_upper, s.started_at, now, config):
            name = _peer_name(config, s)
            heard = _ago(now, s.peer_upper)
            seen[PEER_LOST] = Condition(
                PEER_LOST, PEER_LOST, name, "%s silent %s (peer_timeout %s); gateway %s" % (
                    name, "since this daemon started" if heard is None else "for %.1f s" % heard,
                    _duration(config.peer_timeout),
                    "visible" if f.gateway_visible else "not visible either"),
                (), (("peer_silent_s", heard if heard is not None else -1.0),
                     ("gateway_visible", f.gateway_visible),
                     ("takeover_delay_s", config.takeover_delay)))
        if not f.gateway_visible and _silent(s.gateway_upper, s.started_at, now, config):
            heard = _ago(now, s.gateway_upper)
            seen[GATEWAY_LOST] = Condition(
                GATEWAY_LOST, GATEWAY_LOST, ", ".join(config.gateway_addresses),
                "gateway %s (policy %s) not answering %s; peer %s" % (
                    ", ".join(config.gateway_addresses), config.gateway_policy,
                    "since this daemon started" if heard is None else "for %.1f s" % heard,
                    "visible" if f.peer_visible else "not visible either"),
                (), (("gateway_silent_s", heard if heard is not None else -1.0),
                     ("peer_visible", f.peer_visible)))

    if config.fence_agent is not None:
        scopes.add(FENCE)
        if s.fence_failures and s.fence_confirmed_at is None:
            seen[FENCE_AGENT_FAILURE] = Condition(
                FENCE_AGENT_FAILURE, FENCE_AGENT_FAILURE, config.fence_agent.command,
                "%s failed %d time%s: no takeover "
                "until it confirms the peer off" % (config.fence_agent.command, s.fence_failures,
                                                    "" if s.fence_failures == 1 else "s"),
                ("Check the BMC's address, the credentials in fence_options and that this "
                 "host reaches the BMC.",), (("failures", s.fence_failures),))

    _vm_conditions(decision, seen, scopes)
    _watchdog_condition(decision, outcomes, seen, scopes)
    return seen, frozenset(scopes)


def _silent(heard: Optional[float], started_at: float, now: float, config: Config) -> bool:
    return now - (heard if heard is not None else started_at) > config.peer_timeout


def _vm_conditions(decision: Decision, seen: Dict[str, Condition], scopes: Set[str]) -> None:
    """Protected VMs this host, as the acting master, wants running and cannot start."""
    s = decision.state
    if s.role is not None and not s.role.is_master:
        scopes.add(VMS)  # restarts are the master's: a slave holds none of these
        return
    if not decision.acting_master or s.view is None:
        return
    scopes.add(VMS)
    view = s.view
    halted = {v.uuid: v for v in view.vms if v.protected and v.power_state == "Halted"}
    for a in s.attempts:
        vm = halted.get(a.vm)
        if vm is not None:
            seen[VM_NOT_RESTARTED + ":" + vm.uuid] = _vm_condition(
                vm, "%d failed attempt%s, last error %s; next try in %s" % (
                    a.failures, "" if a.failures == 1 else "s", a.last_error or "unknown",
                    _duration(max(0.0, a.retry_after - decision.at))),
                (("failures", a.failures), ("last_error", a.last_error)))
    for uuid in decision.unplaced:
        vm = halted.get(uuid)
        if vm is not None:
            seen[VM_NOT_RESTARTED + ":" + uuid] = _vm_condition(
                vm, "no healthy host has %d MiB free for it" % (vm.memory >> 20),
                (("memory_mib", vm.memory >> 20),))


def _vm_condition(vm: VmView, why: str, numbers: Facts) -> Condition:
    return Condition(VM_NOT_RESTARTED + ":" + vm.uuid, VM_NOT_RESTARTED, vm.name,
                     "%s (restart policy %s): %s" % (vm.name, vm.policy, why),
                     ("VM uuid %s." % vm.uuid,), (("vm", vm.name),) + numbers)


def _watchdog_condition(decision: Decision, outcomes: Optional[Sequence[Any]],
                        seen: Dict[str, Condition], scopes: Set[str]) -> None:
    """The device would not arm (missing, busy, or a timeout it will not take)."""
    if not outcomes:
        return
    for intent, result in zip(decision.intents, outcomes):
        if getattr(intent, "kind", None) not in ("arm", "feed") \
                or not isinstance(result, WatchdogResult):
            continue
        if result.ok:
            scopes.add(WATCHDOG)
        elif intent.kind == "arm" and result.detail != STALE:
            scopes.add(WATCHDOG)
            seen[WATCHDOG_UNAVAILABLE] = Condition(
                WATCHDOG_UNAVAILABLE, WATCHDOG_UNAVAILABLE, "watchdog",
                "cannot arm the watchdog device: %s" % result.detail,
                ("Without it a hung host is not reset by the self-fence deadline, which the "
                 "takeover on the other host relies on. Load xen_wdt (or softdog) and check "
                 "watchdog_device.",))


# --- events ----------------------------------------------------------------------------------------


def _events(book: AlertBook, config: Config, decision: Decision, outcomes: Sequence[Any],
            host: str, alerts: List[Alert]) -> AlertBook:
    s = decision.state
    mode = decision.mode
    now = decision.at
    before = book.mode
    self_fenced_at = book.self_fenced_at
    master = book.master if s.role is None else s.role.is_master
    promoted_at = now if book.master is False and master else book.promoted_at
    if mode is Mode.ISOLATED and before is not Mode.ISOLATED:
        self_fenced_at = now
        f = facts(config, s, now)
        alerts.append(Alert(
            SELF_FENCE, SELF_FENCE, EVENT, CRITICAL, host,
            decision.reason.split(": ", 1)[-1],
            ("This host lost its peer and every gateway (or found a guest after its "
             "self-fence). It gives up the master role; the other host takes its protected "
             "VMs over once it is certain they are dead.",),
            (("since_contact_s", _round(f.since_contact)),
             ("lease_timeout_s", config.lease_timeout),
             ("guests", len(s.guests) if s.guests is not None else -1),
             ("peer_seen_ago_s", _ago(now, s.peer_upper)),
             ("gateway_seen_ago_s", _ago(now, s.gateway_upper))),
            mode.value, decision.reason, decision.wall))
    if mode is Mode.NORMAL and before is Mode.REJOINING:
        away = None if self_fenced_at is None else round(now - self_fenced_at, 1)
        alerts.append(Alert(
            REJOIN, REJOIN, EVENT, INFO, host, decision.reason.split(": ", 1)[-1] if
            decision.reason.startswith("rejoined") else decision.reason,
            () if away is None else ("Self-fenced %s earlier." % _duration(away),),
            (("self_fenced_s_ago", away if away is not None else -1.0),),
            mode.value, decision.reason, decision.wall))
        self_fenced_at = None
    takeover = _takeover(book.takeover, config, decision, outcomes, host, promoted_at, alerts)
    return dataclasses.replace(book, takeover=takeover, self_fenced_at=self_fenced_at,
                               master=master, promoted_at=promoted_at)


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)


def _takeover(t: Optional[Takeover], config: Config, decision: Decision,
              outcomes: Sequence[Any], host: str, promoted_at: Optional[float],
              alerts: List[Alert]) -> Optional[Takeover]:
    s = decision.state
    now = decision.at
    if t is not None and t.finished:
        return t if decision.peer_dead else None
    if t is None:
        if not decision.peer_dead:
            return None
        t = Takeover(now, s.peer_upper, s.peer_dead_reason)
        elsewhere = sum(1 for v in s.known_vms if v.host is not None and v.host != s.local_uuid)
        alerts.append(Alert(
            TAKEOVER_STARTED, TAKEOVER_STARTED, EVENT, CRITICAL, host,
            "%s is certainly dead (%s): taking over its protected VMs" % (
                _peer_name(config, s), s.peer_dead_reason),
            ("This host %s." % ("is pool master" if s.role is not None and s.role.is_master
                                else "promotes itself to pool master first"),),
            (("peer_silent_s", _ago(now, s.peer_upper)),
             ("protected_vms_on_peer", elsewhere),
             ("takeover_delay_s", config.takeover_delay)),
            decision.mode.value, decision.reason, decision.wall))
    starts = list(t.starts)
    for i, intent in enumerate(decision.intents):
        result = outcomes[i] if i < len(outcomes) else None
        ok = result is None or (isinstance(result, XapiResult) and result.ok)
        if intent.kind == "start" and intent.vm is not None and intent.host is not None and ok:
            starts.append((intent.vm, intent.host))
    t = dataclasses.replace(t, starts=tuple(starts))
    if decision.peer_dead and decision.mode is not Mode.SURVIVOR:
        return t  # still at work (takeover), or a rung above took this decision: wait
    promoted = promoted_at is not None and (t.peer_heard is None or promoted_at >= t.peer_heard)
    alerts.append(_finished(t, decision, host, promoted_at if promoted else None))
    return dataclasses.replace(t, finished=True) if decision.peer_dead else None


def _finished(t: Takeover, decision: Decision, host: str, promoted_at: Optional[float]
              ) -> Alert:
    s = decision.state
    now = decision.at
    names = {}
    where: List[str] = []
    missing: List[str] = []
    view = s.view
    if view is not None:
        names = {h.uuid: h.name for h in view.hosts}
        started = {vm for vm, _ in t.starts}
        for vm in sorted(view.vms, key=lambda v: (v.order, v.name)):
            if not vm.protected:
                continue
            if vm.running:
                if vm.uuid in started:
                    where.append("%s restarted on %s" % (vm.name, names.get(vm.resident_on or "",
                                                                              vm.resident_on)))
            else:
                missing.append(vm.name)
    took = now - t.started_at
    outage = _ago(now, t.peer_heard)
    if decision.peer_dead:
        summary = "%d VM%s restarted in %s%s" % (
            len(where), "" if len(where) == 1 else "s", _duration(took),
            "" if outage is None else " (%s after the peer was last heard)" % _duration(outage))
        if missing:
            summary += "; not running: %s" % ", ".join(missing)
    else:
        summary = "stopped before it completed: %s" % decision.reason
    details = tuple(where) + (("Not running: %s." % ", ".join(missing),) if missing else ())
    if promoted_at is not None:
        details += ("This host promoted itself to pool master%s." % (
            "" if t.peer_heard is None else ", %s after the peer was last heard"
            % _duration(promoted_at - t.peer_heard)),)
    return Alert(TAKEOVER_FINISHED, TAKEOVER_FINISHED, EVENT,
                 WARNING if decision.peer_dead and not missing else CRITICAL, host, summary,
                 details, (("took_s", round(took, 1)),
                           ("since_peer_heard_s", outage if outage is not None else -1.0),
                           ("restarted", len(where)), ("not_running", len(missing))),
                 decision.mode.value, decision.reason, decision.wall)


# --- outside the decisions -------------------------------------------------------------------------


def event_alert(kind: str, host: str, summary: str, details: Sequence[str] = (),
                facts_: Facts = (), wall: float = 0.0, severity: Optional[str] = None) -> Alert:
    """An alert that no decision carries: the daemon refusing its configuration, a test."""
    return Alert(kind, kind, EVENT, severity or SEVERITY.get(kind, WARNING), host, summary,
                 tuple(details), facts_, "", "", wall)
