"""decide(): one HA cycle, from what was observed to one decision. Pure.

The ladder below is read top to bottom; the first rung that applies decides the mode. Each rung
says why in one line, with the numbers, and that line is what the journal and the simulator's
trace show.

    1. isolated          a self-fence in progress is finished before anything else
    2. lease lost        no contact with peer or gateway for lease_timeout: self-fence now
    3. stop requested    planned shutdown: hand the master role over, then exit
    4. HA off            pool switch off, or XenServer's own HA on: do nothing
    5. self-fenced       wait for the peer (rejoining finds the master and yields if needed);
                         seeing only the gateway, go on as a survivor
    6. starting          no contact yet: act on nothing
    7. hold              lost peer and gateway but the lease still runs: start nothing new
    8. maintenance       this host hands over and is emptied by the master
    9. normal            peer visible: the master restarts halted protected VMs
   10. survivor          peer silent, gateway visible: wait for proof, then take over
"""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from halizard.core.beacon import parse_beacon
from halizard.core.config import Config
from halizard.core.evidence import Facts, facts, lease_gap, probe_changes, record_probe
from halizard.core.observe import Observation, peer_says_master, task_outcome
from halizard.core.placement import plan_starts, wants_start
from halizard.core.pool import HostView, PoolView
from halizard.core.state import (
    ACTING_MODES,
    Attempt,
    DaemonState,
    Decision,
    Mode,
    Task,
    check_transition,
    evolve,
)
from halizard.core.timing import deadline_lead
from halizard.effects import (
    LOCAL,
    LOCAL_SESSION,
    POOL_SESSION,
    STALE,
    TIMEOUT,
    DestroyGuests,
    FenceOutcome,
    FenceStarted,
    GuestList,
    ProbeReport,
    StartFence,
    WatchdogControl,
    WatchdogResult,
    XapiCall,
    XapiResult,
    pool_action,
)

HANDOVER_PATIENCE = 60.0  # seconds a requested hand-over, promotion or yield may take
REJOIN_PATIENCE = 60.0  # seconds a rejoining master waits to hear the peer's beacon
MAX_STARTS_PER_CYCLE = 8


class Intent(NamedTuple):
    """Why an action was issued, so its result can be absorbed into the state."""

    kind: str
    vm: Optional[str] = None
    host: Optional[str] = None
    memory: int = 0


FEED = (Intent("feed"),)
ARM = (Intent("arm"),)
DISARM = (Intent("disarm"),)


class Step(NamedTuple):
    mode: Mode
    reason: str
    actions: Tuple[Any, ...] = ()
    intents: Tuple[Intent, ...] = ()


class _Cycle:
    """The inputs of one decision, with helpers to build actions. Lives for one call."""

    __slots__ = ("config", "state", "obs", "f", "now", "valid_until", "actions", "intents",
                 "unplaced")

    def __init__(self, config: Config, state: DaemonState, obs: Observation, f: Facts) -> None:
        self.config = config
        self.state = state
        self.obs = obs
        self.f = f
        self.now = obs.now
        self.valid_until = obs.now + config.probe_interval
        self.actions: List[Any] = []
        self.intents: List[Intent] = []
        self.unplaced: Tuple[str, ...] = ()  # restart VMs no healthy host has memory for

    def xapi(self, intent: Intent, method: str, *args: Any, **kw: Any) -> None:
        self.actions.append(
            XapiCall(method, tuple(args), kw.get("address", LOCAL), kw.get("session", POOL_SESSION),
                     self.config.xapi_timeout, self.valid_until)
        )
        self.intents.append(intent)

    def step(self, mode: Mode, reason: str) -> Step:
        return Step(mode, reason, tuple(self.actions), tuple(self.intents))


def _fmt(seconds: float) -> str:
    return "%.1fs" % seconds


# --- absorbing what was observed ---------------------------------------------------------------


def _failed(attempts: Dict[str, Attempt], vm: str, at: float, config: Config, code: str) -> None:
    """Record one more failed start (or migration) of ``vm``; retry after start_retry_delay."""
    old = attempts.get(vm)
    attempts[vm] = Attempt(vm, (old.failures if old else 0) + 1, at + config.start_retry_delay,
                           code)


def absorb_observation(config: Config, state: DaemonState, obs: Observation) -> DaemonState:
    s = state
    changes: Dict[str, Any] = {}
    if obs.role != s.role:
        changes["role"] = obs.role
        changes["local_uuid"] = obs.role.host_uuid
    probe_changes(config, state, obs.probe, changes)
    if obs.guests is not None:
        changes["guests"] = obs.guests.uuids if obs.guests.ok else None
    if obs.watch is not s.watch:
        changes["watch"] = obs.watch
    if obs.view is not None:
        changes["view"] = obs.view
        if not obs.watched:
            changes["view_at"] = obs.now  # when the pool database was last read in full
    if obs.settings is not None:
        settings = obs.settings
        if not obs.role.is_master and not obs.watched:
            changes["view_at"] = obs.now  # a slave's "view" is the settings it last read
        if settings != s.settings:
            changes["settings"] = settings
            changes["cache_dirty"] = True
            left = s.settings.maintenance - settings.maintenance
            changes["reenable"] = (s.reenable | left) - settings.maintenance
    if obs.view is not None:
        enabled = frozenset(h.uuid for h in obs.view.hosts if h.enabled)
        if s.reenable & enabled:
            changes["reenable"] = changes.get("reenable", s.reenable) - enabled
    elif obs.role.is_master and obs.view_error:
        # The master's own database is unreachable: nothing in the old view may be acted on.
        changes["view"] = None
    if obs.known is not None and obs.known != s.known_vms:
        changes["known_vms"] = obs.known
        changes["cache_dirty"] = True
    if obs.reread:
        changes["view_at"] = None  # the watch saw a change: read the database in full next
    if obs.peer_role is not None:
        changes["peer_role"] = obs.peer_role
        changes["peer_role_at"] = obs.now
        changes["peer_guests"] = obs.peer_guests
    if obs.probe.peer_beacon is not None:
        changes["peer_beacon"] = obs.probe.peer_beacon

    if obs.tasks:
        remaining: List[Task] = []
        attempts = {a.vm: a for a in s.attempts}
        answers = dict(obs.tasks)
        for task in s.tasks:
            result = answers.get(task.ref)
            if result is None:
                remaining.append(task)
                continue
            outcome, code = task_outcome(result)
            if outcome == "pending" or (outcome == "unknown" and code in (TIMEOUT, STALE)):
                if obs.now - task.started <= config.task_timeout:
                    remaining.append(task)
                continue
            if task.kind in ("start", "migrate") and task.vm is not None:
                if outcome == "success":
                    attempts.pop(task.vm, None)
                    changes["needs_sync"] = True
                elif outcome == "failure":
                    _failed(attempts, task.vm, obs.now, config, code)
            elif task.kind == "declare_dead":
                if outcome == "success":
                    changes["declared_dead_at"] = obs.now
                    changes["needs_sync"] = True
                elif code == "HOST_IS_LIVE":
                    # xapi reached the peer: it is alive, whatever our probes say.
                    changes["peer_dead"] = False
                    changes["peer_dead_reason"] = ""
                    changes["silence_floor"] = obs.now
            elif task.kind == "sync" and outcome != "success":
                changes["needs_sync"] = True
        changes["tasks"] = tuple(remaining)
        changes["attempts"] = tuple(attempts[k] for k in sorted(attempts))
    elif not obs.role.is_master and s.tasks:
        changes["tasks"] = ()  # tasks live on a master's database; we are not one any more

    for outcome in obs.fence:
        if not isinstance(outcome, FenceOutcome) or outcome.job != s.fence_job:
            continue
        changes["fence_job"] = None
        if outcome.action == "off" and outcome.result == "off":
            changes["fence_action"] = "status"
        elif outcome.action == "status" and outcome.result == "off":
            changes["fence_confirmed_at"] = obs.now
        else:
            changes["fence_failures"] = s.fence_failures + 1
            changes["fence_action"] = None
            changes["fence_retry_after"] = obs.now + config.start_retry_delay

    return evolve(s, **changes)


def absorb_results(
    config: Config, state: DaemonState, decision: Decision, results: Tuple[Any, ...]
) -> DaemonState:
    """Fold the results of a decision's actions into the state."""
    intents = decision.intents
    if intents is FEED or all(i.kind == "feed" for i in intents):
        return state  # feeding the watchdog changes nothing the daemon remembers
    changes: Dict[str, Any] = {}
    tasks = list(state.tasks)
    attempts = {a.vm: a for a in state.attempts}
    for intent, result in zip(intents, results):
        if intent.kind in ("start", "migrate", "declare_dead", "sync"):
            assert isinstance(result, XapiResult)
            started = result.ok and isinstance(result.value, str)
            if started:
                tasks.append(Task(result.value, intent.kind, intent.vm, intent.host,
                                  intent.memory, decision.at))
            elif intent.kind in ("start", "migrate") and intent.vm is not None \
                    and result.code != STALE:
                _failed(attempts, intent.vm, decision.at, config, result.code)
            if intent.kind == "sync":
                changes["needs_sync"] = not started
        elif intent.kind in ("promote", "yield", "handover"):
            assert isinstance(result, XapiResult)
            if result.ok:
                changes[intent.kind + "_requested_at"] = decision.at
        elif intent.kind in ("arm", "disarm"):
            assert isinstance(result, WatchdogResult)
            if result.ok:
                changes["watchdog_armed"] = intent.kind == "arm"
        elif intent.kind == "fence":
            if isinstance(result, FenceStarted):
                changes["fence_job"] = result.job
        elif intent.kind == "destroy":
            if isinstance(result, GuestList) and result.ok:
                changes["guests"] = result.uuids
    changes["tasks"] = tuple(tasks)
    changes["attempts"] = tuple(attempts[k] for k in sorted(attempts))
    return evolve(state, **changes)


# --- the ladder ---------------------------------------------------------------------------------


def decide(config: Config, state: DaemonState, obs: Observation) -> Decision:
    s = absorb_observation(config, state, obs)
    f = facts(config, s, obs.now)
    if f.peer_visible:
        # A peer in sight is not dead, whatever this host concluded while it was not (R013).
        s = _peer_alive_again(s)
    elif s.peer_role is not None or s.peer_beacon is not None:
        # What the peer said about itself is stale once it is out of sight: a host coming
        # back must decide on what the peer says now (the cause of I2 in R003).
        s = evolve(s, peer_role=None, peer_role_at=None, peer_guests=None, peer_beacon=None)
    if not f.lease_held or s.lease_lapsed or lease_gap(config, state, s) \
            or state.mode is Mode.DISABLED:
        # The peer's silence proves something only while this host could hear it and HA was
        # on (the peer self-fences only then): the timing rule bounds the peer's last contact
        # by our last evidence only if we were connected all along. While we have no contact
        # ourselves, at the first decision after we regain it (also after a stall longer than
        # the lease, which no decision saw), and while HA was off, the silence clock starts
        # again.
        s = evolve(s, silence_floor=obs.now, lease_lapsed=not f.lease_held, acting=False)
        f = facts(config, s, obs.now)
    c = _Cycle(config, s, obs, f)
    step, s = _ladder(c, s)
    if step.mode is not state.mode:
        check_transition(state.mode, step.mode)
        s = evolve(s, mode=step.mode, since=obs.now)
    # A start (or a migration) to this host issued now may put a guest here before the next
    # decision: the watchdog guards it from now on, armed with the call (R022).
    arriving = any(i.kind in ("start", "migrate") and i.host is not None
                   and i.host == s.local_uuid for i in step.intents)
    watchdog_actions, watchdog_intents = _watchdog(config, s, f, step.mode, obs.shutting_down,
                                                   arriving)
    actions = step.actions + watchdog_actions
    intents = step.intents + watchdog_intents
    exiting = step.mode is Mode.STOPPING and not step.actions and _stop_done(s, obs)
    acting = not exiting and _acting_master(config, s, f, step.mode)
    if acting != s.acting:
        s = evolve(s, acting=acting)
    # I4, checked where it is decided: only the acting master acts on the pool.
    assert acting or not any(isinstance(a, XapiCall) and pool_action(a.method)
                             for a in step.actions), step.reason
    return Decision(
        obs.now,  # at
        obs.wall,
        step.mode,
        step.reason,
        actions,
        intents,
        s,  # state
        acting,  # acting_master
        s.peer_dead,
        exiting,  # exit
        _next_cycle(config, s, f, step.mode, obs),  # next_cycle
        c.unplaced,  # unplaced
    )


def _acting_master(config: Config, s: DaemonState, f: Facts, mode: Mode) -> bool:
    """Whether this host acts as pool master after this decision (invariant I2: at most one
    does). Its xapi must be master, its mode one in which a master acts, and its lease held;
    a master that lost its peer must still hold the role (R004, R008); and while the peer
    claims the role too, only the master the two-masters rule keeps acts (R007)."""
    if s.role is None or not f.lease_held or not _acts_as_master(s.role.is_master, mode):
        return False
    if mode in (Mode.SURVIVOR, Mode.STOPPING) and not _holds_master_role(config, s, f.silence):
        return False
    if peer_claims_master(s):
        return _keeps_master_role(s) is True
    return not f.peer_visible or _may_act_beside(s)


def _may_act_beside(s: DaemonState) -> bool:
    """Whether a master in sight of its peer may act before the peer has said what it is. A
    master that acted at its previous decision goes on: a peer that became master meanwhile is
    the one that does not act until it hears this host's beacon. A master that did not (it has
    just started, or it could not hold the role while the peer was out of sight) may find the
    peer acting as master already, for instance after a reboot behind a one-way link that hid
    the new master from its xapi: it waits until the peer has said it is not one (R014)."""
    return s.acting or _peer_known_not_master(s)


def _next_cycle(config: Config, s: DaemonState, f: Facts, mode: Mode, obs: Observation) -> float:
    """When the next cycle is due: one probe_interval after this one began, four times as often
    while a takeover waits on xapi, and never later than the next deadline a rule is waiting for
    (lease expiry, promotion, takeover, fence), so deadlines are acted on when they fall due
    rather than up to a cycle late."""
    waiting = mode is Mode.TAKEOVER or (mode is Mode.SURVIVOR and s.promote_requested_at is not None)
    interval = config.probe_interval / 4 if waiting else config.probe_interval
    deadlines: List[float] = []
    if f.lease_expires is not None:
        deadlines.append(f.lease_expires)
    if mode is Mode.SURVIVOR and not s.peer_dead:
        seen = f.now - f.silence
        if config.fence_agent is not None:
            deadlines.append(seen + _fence_due(config, obs.role.is_master))
        else:
            deadlines.append(seen + config.takeover_delay)
            if not obs.role.is_master and s.promote_requested_at is None:
                deadlines.append(seen + config.promote_delay)
    # The cadence always counts (if it is already past, the next cycle starts at once); a
    # deadline only counts while it is still ahead. The cycle for a deadline starts one probe
    # round early, so that its decision, made when the round ends, falls on the deadline (if the
    # round is quicker, the deadline is still ahead and the next cycle follows at once).
    due = obs.cycle_start + interval
    lead = deadline_lead(config)
    for deadline in deadlines:
        if deadline > f.now and deadline - lead < due:
            due = max(deadline - lead, f.now)
    return due


def _may_request(requested_at: Optional[float], now: float) -> bool:
    """A hand-over, promotion or yield is asked for once, and again only if it has not taken
    effect within HANDOVER_PATIENCE (the call may have been lost)."""
    return requested_at is None or now - requested_at > HANDOVER_PATIENCE


def _fence_due(config: Config, is_master: bool) -> float:
    """Silence after which this host fences its peer: the master first, the slave fence_delay
    later, so that when both see the gateway but not each other the master's fence lands first."""
    return config.peer_timeout + (0.0 if is_master else config.fence_delay)


def _acts_as_master(is_master: bool, mode: Mode) -> bool:
    """A pool master acts as one in these modes; a stopping master still holds the role until
    its hand-over completes."""
    return is_master and (mode in ACTING_MODES or mode is Mode.STOPPING)


def _may_claim_master(config: Config, s: DaemonState, silence: float) -> bool:
    """Whether a host that lost its peer may take the master role: once the peer is certainly
    dead (with a fence agent: confirmed off), or without one once the peer has been silent for
    promote_delay, by which time a peer that was acting as master has stopped (the promotion
    inequality)."""
    if config.fence_agent is not None:
        return s.peer_dead
    return silence >= config.promote_delay


def _holds_master_role(config: Config, s: DaemonState, silence: float) -> bool:
    """Whether a master that lost its peer still acts as master. It does if it has held its
    lease without a break since it last saw the peer: then the peer could not have promoted
    itself first. A master that lost contact itself in between (its silence clock restarted
    after the last evidence of the peer, as after a self-fence) is no better placed than a
    slave: the peer may have promoted itself meanwhile and still hold its lease. It resumes
    under the slave's promotion rule (regression R004)."""
    if s.peer_upper is not None and s.silence_floor < s.peer_upper:
        return True
    return _may_claim_master(config, s, silence)


def _stop_done(s: DaemonState, obs: Observation) -> bool:
    """Whether the daemon may exit: the hand-over it asked for has taken effect (or never
    will), and, when the whole system is going down, no guest is left here for it to guard
    (regression R012: a host that hangs while xapi stops its guests must still be reset)."""
    if obs.shutting_down and _guests_here(s):
        return False
    if s.handover_requested_at is None:
        return True
    return not obs.role.is_master or obs.now - s.handover_requested_at > HANDOVER_PATIENCE


def _ladder(c: _Cycle, s: DaemonState) -> Tuple[Step, DaemonState]:
    f = c.f
    config = c.config
    ha_on = s.settings.ha_active

    if s.mode is Mode.ISOLATED:
        return _self_fence(c, s, "self-fence in progress")
    if ha_on and f.isolated and s.mode not in (Mode.SELF_FENCED, Mode.DISABLED):
        if f.since_contact is None:
            why = "no contact with peer or gateway since start %s ago" % _fmt(c.now - s.started_at)
        else:
            why = "no contact with peer or gateway for %s (lease_timeout %s)" % (
                _fmt(f.since_contact), _fmt(config.lease_timeout))
        # Starts under way on this host are not forgotten: until xapi says how they ended,
        # a guest may appear here at any moment, and the watchdog must stay armed (R009).
        return _self_fence(c, evolve(_forget_work(s), tasks=_arriving(s)), "isolated: " + why)
    if c.obs.stop_requested:
        return _stopping(c, s)
    if not ha_on:
        why = ("XenServer's own HA is enabled: halizard stands down" if s.settings.native_ha
               else "HA is disabled for the pool")
        return c.step(Mode.DISABLED, why), _forget_work(s)
    if s.mode is Mode.SELF_FENCED and s.guests and not f.lease_held:
        # A start that was under way when the lease expired has finished after the self-fence.
        return _self_fence(c, s, "a guest domain appeared after the self-fence")
    if s.mode is Mode.SELF_FENCED:
        if f.peer_visible:
            return c.step(Mode.REJOINING, "peer visible again after the self-fence; finding the "
                          "pool master before acting"), s
        if not (f.gateway_visible and f.lease_held):
            return c.step(Mode.SELF_FENCED, "self-fenced; waiting for the peer or the gateway"), s
        # Seeing only the gateway, a self-fenced host is a survivor like any other: its own
        # guests are already dead, and the peer's silence is counted from the last evidence.
    if s.mode is Mode.REJOINING:
        return _rejoin(c, s)
    if not f.lease_held:
        return c.step(Mode.STARTING, "waiting for first contact with peer or gateway"), s
    if not f.peer_visible and not f.gateway_visible:
        mode = s.mode if s.mode is not Mode.DISABLED else Mode.STARTING
        assert f.lease_expires is not None
        return c.step(mode, "lost peer and gateway; self-fence in %s unless contact returns"
                      % _fmt(f.lease_expires - c.now)), s
    if s.local_uuid in s.settings.maintenance:
        return _maintenance(c, s)
    if f.peer_visible:
        return _normal(c, s)
    return _survivor(c, s)


def _guests_here(s: DaemonState) -> bool:
    """Guests run here, may (unknown), or may appear (a start under way)."""
    return s.guests is None or len(s.guests) > 0 or bool(_arriving(s))


def _arriving(s: DaemonState) -> Tuple[Task, ...]:
    """Starts and migrations to this host that xapi has not reported finished: each may put a
    guest here at any moment."""
    return tuple(t for t in s.tasks if t.kind in ("start", "migrate")
                 and t.host is not None and t.host == s.local_uuid)


def _forget_work(s: DaemonState) -> DaemonState:
    return evolve(s, peer_dead=False, peer_dead_reason="", fence_job=None, fence_action=None,
                  fence_confirmed_at=None, promote_requested_at=None, tasks=(),
                  declared_dead_at=None)


def _self_fence(c: _Cycle, s: DaemonState, why: str) -> Tuple[Step, DaemonState]:
    """Every self-fence passes through `isolated` (even with nothing to destroy, for instance
    right after a boot), and leaves it only once the toolstack confirms no guest runs."""
    guests = s.guests
    if (s.mode is Mode.ISOLATED and guests is not None and not guests
            and c.obs.guests is not None and c.obs.guests.ok):
        return c.step(Mode.SELF_FENCED, "self-fence complete: no guest domains run here"), s
    c.actions.append(DestroyGuests(valid_until=c.now + c.config.watchdog_timeout,
                                   timeout=c.config.watchdog_timeout))
    c.intents.append(Intent("destroy"))
    count = "unknown number of" if guests is None else str(len(guests))
    return c.step(Mode.ISOLATED, "%s: destroying %s guest domains" % (why, count)), s


def _stopping(c: _Cycle, s: DaemonState) -> Tuple[Step, DaemonState]:
    role = c.obs.role
    if s.mode is Mode.SELF_FENCED:
        # It gave the master role up with its self-fence (regression R008): nothing to hand
        # over, nothing to wait for.
        return c.step(Mode.STOPPING, "planned shutdown after a self-fence: exiting"), evolve(
            s, handover_requested_at=None)
    peer = peer_host(s)
    if (role.is_master and c.f.peer_visible and s.handover_requested_at is None
            and not peer_claims_master(s) and not _may_act_beside(s)
            and (s.mode is not Mode.STOPPING or c.now - s.since < HANDOVER_PATIENCE)):
        return c.step(Mode.STOPPING, "planned shutdown: waiting to hear whether the peer is a "
                      "pool master before handing over"), s
    if (_acts_as_master(role.is_master, s.mode) and _acting_master(c.config, s, c.f, Mode.STOPPING)
            and s.handover_requested_at is None
            and c.f.peer_visible and s.view is not None and peer is not None
            and _host_healthy(s, peer)):
        c.xapi(Intent("handover"), "pool.designate_new_master", peer.ref)
        return c.step(Mode.STOPPING, "planned shutdown: handing the master role to %s"
                      % peer.name), s
    if s.handover_requested_at is not None and role.is_master and not _stop_done(s, c.obs):
        return c.step(Mode.STOPPING, "planned shutdown: waiting for %s to become master"
                      % (peer.name if peer else "the peer")), s
    if c.obs.shutting_down and _guests_here(s):
        count = "an unknown number of" if s.guests is None else str(len(s.guests))
        return c.step(Mode.STOPPING, "system shutdown: guarding %s guests until xapi has "
                      "stopped them" % count), s
    return c.step(Mode.STOPPING, "planned shutdown: watchdog disarmed, exiting"), s


def _rejoin(c: _Cycle, s: DaemonState) -> Tuple[Step, DaemonState]:
    """Back in contact after a self-fence: resume only once it is certain the peer is not
    becoming master meanwhile. Its xapi cannot say so (it answers as a slave until its
    promotion's fuse blows), its beacon can: pool.conf says master from the request on."""
    role = c.obs.role
    if role.is_master:
        peer = parse_beacon(s.peer_beacon)
        if peer is None:
            waited = c.now - s.since
            if s.peer_role != "slave" or waited < REJOIN_PATIENCE:
                return c.step(Mode.REJOINING, "peer visible; waiting to hear its own state "
                              "(%s)" % _fmt(waited)), s
            # No beacon for long (the peer's daemon may be down): a promotion would have
            # completed by now, and its xapi still answers as a slave.
        elif peer.claims_master or s.peer_role == "master":
            return c.step(Mode.REJOINING, _two_masters(c, s)), s
        elif s.peer_role is None:
            return c.step(Mode.REJOINING, "peer visible; asking its xapi which role it has"), s
        return c.step(Mode.NORMAL, "rejoined: this host is pool master, peer is %s"
                      % (s.peer_role or "a slave")), s
    if c.obs.settings is not None:
        return c.step(Mode.NORMAL, "rejoined as slave of %s" % role.master_address), s
    return c.step(Mode.REJOINING, "peer visible; waiting for the pool master %s to answer (%s)"
                  % (role.master_address, c.obs.view_error or "not asked")), s


def peer_claims_master(s: DaemonState) -> bool:
    """The peer's xapi answered as master, or its beacon says it is one."""
    return s.peer_role == "master" or peer_says_master(s)


def _peer_known_not_master(s: DaemonState) -> bool:
    """The peer has said, since it came back in sight, that it is not a pool master: its xapi
    answered as a slave, or its beacon says slave. (What it said is forgotten whenever it is
    out of sight.)"""
    if s.peer_role == "slave":
        return True
    peer = parse_beacon(s.peer_beacon)
    return peer is not None and not peer.claims_master


def _keeps_master_role(s: DaemonState) -> Optional[bool]:
    """With two pool masters, whether this one keeps the role: True, False (it yields), or None
    while the guests on both are not yet counted.

    Both hosts apply the same rule, so exactly one yields: the master running fewer guests
    yields; on a tie, the higher host UUID yields. A self-fenced host has no guests, so it is
    the one that yields to the host that took over."""
    peer = peer_host(s)
    mine = len(s.guests) if s.guests is not None else None
    theirs = s.peer_guests
    if peer is None or mine is None or theirs is None:
        return None
    return not (mine < theirs or (mine == theirs and (s.local_uuid or "") > peer.uuid))


def _two_masters(c: _Cycle, s: DaemonState) -> str:
    """Both xapis act as pool master (a self-fenced master came back, or a partition healed).
    Until the rule has decided, neither acts as master (regression R007). Yielding is
    pool.emergency_reset_master: xapi then rejoins as slave and kills any duplicate domain
    (xenapi.md 4.5)."""
    keeps = _keeps_master_role(s)
    peer = peer_host(s)
    if keeps is None or peer is None:
        return "two pool masters; counting guests on both before resolving"
    mine, theirs = len(s.guests or ()), s.peer_guests or 0
    if not keeps:
        if _may_request(s.yield_requested_at, c.now):
            c.xapi(Intent("yield"), "pool.emergency_reset_master", c.config.peer_addresses[0],
                   session=LOCAL_SESSION)
        return "two pool masters: yielding to %s (%d guests here, %d there)" % (
            peer.name, mine, theirs)
    return "two pool masters: %s must yield (%d guests here, %d there)" % (
        peer.name, mine, theirs)


def _maintenance(c: _Cycle, s: DaemonState) -> Tuple[Step, DaemonState]:
    role = c.obs.role
    peer = peer_host(s)
    guests = len(s.guests) if s.guests is not None else -1
    if role.is_master:
        if s.view is None:
            return c.step(Mode.MAINTENANCE, "in maintenance; pool database not readable"), s
        if peer is not None and c.f.peer_visible and not _acting_master(c.config, s, c.f,
                                                                       Mode.MAINTENANCE):
            return c.step(Mode.MAINTENANCE, "in maintenance; waiting to hear whether the peer is "
                          "a pool master before handing over"), s
        if peer is not None and c.f.peer_visible and _host_healthy(s, peer):
            if _may_request(s.handover_requested_at, c.now):
                c.xapi(Intent("handover"), "pool.designate_new_master", peer.ref)
            return c.step(Mode.MAINTENANCE, "in maintenance: handing the master role to %s"
                          % peer.name), s
        return c.step(Mode.MAINTENANCE, "in maintenance but the peer cannot take the master "
                      "role; staying master"), s
    return c.step(Mode.MAINTENANCE, "in maintenance; %s guest domains still here"
                  % ("unknown" if guests < 0 else guests)), s


def _peer_alive_again(s: DaemonState) -> DaemonState:
    """The peer is visible: it is not dead, and whatever a takeover or fence had under way for
    its death is over."""
    if (s.peer_dead or s.fence_job is not None or s.fence_action is not None
            or s.fence_confirmed_at is not None or s.fence_failures or s.declared_dead_at is not None
            or s.promote_requested_at is not None):
        s = evolve(s, peer_dead=False, peer_dead_reason="", fence_job=None, fence_action=None,
                   fence_confirmed_at=None, fence_failures=0, declared_dead_at=None,
                   promote_requested_at=None)
    return s


def _normal(c: _Cycle, s: DaemonState) -> Tuple[Step, DaemonState]:
    # The peer is back (decide() has cleared what its death had set under way): a hand-over or
    # a yield is over too.
    if s.handover_requested_at is not None or (
            s.yield_requested_at is not None and not c.obs.role.is_master):
        s = evolve(s, handover_requested_at=None,
                   yield_requested_at=s.yield_requested_at if c.obs.role.is_master else None)
    role = c.obs.role
    if not role.is_master:
        if s.peer_role == "slave":
            return c.step(Mode.NORMAL, "peer visible, but the pool has no master (%s answers as "
                          "a slave)" % role.master_address), s
        return c.step(Mode.NORMAL, "peer visible; slave of %s" % role.master_address), s
    if s.view is None:
        return c.step(Mode.NORMAL, "peer visible; pool database not readable (%s)"
                      % (c.obs.view_error or "no answer")), s
    if peer_claims_master(s):
        return c.step(Mode.NORMAL, _two_masters(c, s)), s
    if not _may_act_beside(s):
        return c.step(Mode.NORMAL, "peer visible; waiting to hear whether it is a pool master "
                      "before acting as one"), s
    note = _master_duties(c, s, peer_healthy=True)
    return c.step(Mode.NORMAL, "peer visible; " + note), s


def _survivor(c: _Cycle, s: DaemonState) -> Tuple[Step, DaemonState]:
    f = c.f
    config = c.config
    role = c.obs.role
    silence = f.silence
    lost = "peer silent %s, gateway visible%s" % (_fmt(silence), _stranded_note(s))

    # Proof that the peer's guests are dead.
    if not s.peer_dead:
        if config.fence_agent is not None:
            s, note = _fence(c, s, silence)
            if s.fence_confirmed_at is not None:
                s = evolve(s, peer_dead=True, peer_dead_reason="fence agent confirmed the peer off")
            elif note:
                return c.step(Mode.SURVIVOR, "%s; %s" % (lost, note)), s
        elif silence >= config.takeover_delay:
            s = evolve(s, peer_dead=True, peer_dead_reason="its self-fence deadline passed (%s "
                       "silent >= takeover_delay %s)" % (_fmt(silence),
                                                          _fmt(config.takeover_delay)))

    if not role.is_master:
        if not _may_claim_master(config, s, silence):
            return c.step(Mode.SURVIVOR, "%s; promotion at %s" % (
                lost, _fmt(config.promote_delay))), s
        if _may_request(s.promote_requested_at, c.now):
            c.xapi(Intent("promote"), "pool.emergency_transition_to_master", session=LOCAL_SESSION)
            return c.step(Mode.TAKEOVER if s.peer_dead else Mode.SURVIVOR,
                          "%s: promoting this host to pool master" % lost), s
        return c.step(Mode.TAKEOVER if s.peer_dead else Mode.SURVIVOR,
                      "%s; waiting for xapi to restart as master" % lost), s

    if s.view is None:
        return c.step(Mode.TAKEOVER if s.peer_dead else Mode.SURVIVOR,
                      "%s; pool database not readable (%s)" % (lost, c.obs.view_error or "no answer")), s
    if not s.peer_dead:
        if not _holds_master_role(config, s, silence):
            return c.step(Mode.SURVIVOR, "%s; lost contact itself since it last saw the peer: "
                          "acting as master again at %s, takeover at %s" % (
                              lost, _fmt(config.promote_delay), _fmt(config.takeover_delay))), s
        return c.step(Mode.SURVIVOR, "%s; takeover at %s" % (lost, _fmt(config.takeover_delay))), s

    peer = peer_host(s)
    view = s.view
    stranded = [v for v in view.vms if peer is not None and v.resident_on == peer.uuid and v.running]
    declaring = any(t.kind == "declare_dead" for t in s.tasks)
    if stranded and peer is not None and not declaring:
        c.xapi(Intent("declare_dead", host=peer.uuid), "Async.host.declare_dead", peer.ref)
        return c.step(Mode.TAKEOVER, "peer certainly dead (%s): clearing %d VM records on %s"
                      % (s.peer_dead_reason, len(stranded), peer.name)), s
    if stranded:
        return c.step(Mode.TAKEOVER, "peer certainly dead: waiting for xapi to clear its VMs"), s
    note = _master_duties(c, s, peer_healthy=False)
    busy = bool(c.actions) or any(t.kind == "start" for t in s.tasks)
    return c.step(Mode.TAKEOVER if busy else Mode.SURVIVOR,
                  "peer certainly dead (%s); %s" % (s.peer_dead_reason, note)), s


def _stranded_note(s: DaemonState) -> str:
    """What the local cache says ran on the peer: the operator's first question, answered even
    while the pool database is out of reach (a slave whose master is gone)."""
    there = sum(1 for v in s.known_vms if v.host is not None and v.host != s.local_uuid)
    return "; %d protected VM%s last seen on it" % (there, "" if there == 1 else "s") \
        if there else ""


def _fence(c: _Cycle, s: DaemonState, silence: float) -> Tuple[DaemonState, str]:
    """Drive the fence agent. Returns the state and a note while proof is still pending."""
    config = c.config
    due = _fence_due(config, c.obs.role.is_master)
    if silence < due:
        return s, "fence at %s%s" % (_fmt(due), "" if c.obs.role.is_master
                                     else " (slave waits fence_delay: tie-break)")
    if s.fence_confirmed_at is not None:
        return s, ""
    if s.fence_job is not None:
        return s, "fence agent running (%s)" % (s.fence_action or "off")
    if c.now < s.fence_retry_after:
        return s, "fence agent failed %d times; retrying" % s.fence_failures
    action = s.fence_action or "off"
    c.actions.append(StartFence(action, config.fence_timeout, c.valid_until))
    c.intents.append(Intent("fence"))
    return evolve(s, fence_action=action), "fencing the peer (%s)" % action


def peer_host(s: DaemonState) -> Optional[HostView]:
    if s.view is None:
        return None
    for h in s.view.hosts:
        if h.uuid != s.local_uuid:
            return h
    return None


def _host_healthy(s: DaemonState, host: HostView) -> bool:
    return host.enabled and host.live and host.uuid not in s.settings.maintenance


def _master_duties(c: _Cycle, s: DaemonState, peer_healthy: bool) -> str:
    """What an acting master does every cycle: empty hosts in maintenance, re-enable hosts that
    left it, restart halted protected VMs. Returns a short note for the decision's reason."""
    view = s.view
    assert view is not None
    if not (s.tasks or s.attempts or s.needs_sync or s.reenable or s.settings.maintenance) and \
            not any(map(wants_start, view.vms)):
        # nothing to plan: the common steady state, unless xapi holds a halted VM in an
        # operation of its own (say, a start sent to a host whose xapi hangs: finding 4)
        return _held_by_xapi(view, s) or "all protected VMs running"
    if any(t.kind == "declare_dead" for t in s.tasks):
        # Until xapi has cleared the peer's records, no VM record is stable: a VM started now
        # (on the peer, back in the meantime) could be reset to Halted by the declaration as it
        # completes, and then started a second time (regression R010).
        return "waiting for xapi to finish clearing the peer's VM records"
    me = view.host(s.local_uuid)
    peer = peer_host(s)
    notes: List[str] = []
    busy_vms = frozenset(t.vm for t in s.tasks if t.vm is not None)

    if peer is not None and peer.uuid in s.settings.maintenance and me is not None:
        moving = [v for v in view.vms if v.resident_on == peer.uuid and v.running]
        for vm in moving:
            if vm.uuid not in busy_vms and not vm.busy:
                c.xapi(Intent("migrate", vm=vm.uuid, host=me.uuid, memory=vm.memory),
                       "Async.VM.pool_migrate", vm.ref, me.ref, {"live": "true"})
        if not moving and peer.enabled:
            c.xapi(Intent("disable", host=peer.uuid), "host.disable", peer.ref)
        notes.append("emptying %s for maintenance (%d VMs to move)" % (peer.name, len(moving)))

    for host in (me, peer):
        if (host is not None and not host.enabled and host.live
                and host.uuid not in s.settings.maintenance
                and host.uuid in s.reenable):
            c.xapi(Intent("enable", host=host.uuid), "host.enable", host.ref)

    healthy: List[HostView] = []
    for host in (me, peer):
        if host is None or not _host_healthy(s, host):
            continue
        if host is peer and not peer_healthy:
            continue
        healthy.append(host)
    healthy.sort(key=lambda h: h.name)
    attempts = {a.vm: a for a in s.attempts}
    pending: Dict[str, int] = {}
    for t in s.tasks:
        if t.kind == "start" and t.host is not None:
            pending[t.host] = pending.get(t.host, 0) + t.memory
    plan = plan_starts(
        view,
        healthy,
        in_flight=busy_vms,
        failed_recently=frozenset(attempts),
        in_backoff=frozenset(vm for vm, a in attempts.items() if c.now < a.retry_after),
        pending_memory=pending,
    )
    for start in plan.starts[:MAX_STARTS_PER_CYCLE]:
        c.xapi(Intent("start", vm=start.vm.uuid, host=start.host.uuid, memory=start.vm.memory),
               "Async.VM.start_on", start.vm.ref, start.host.ref, False, False)
    if plan.starts:
        notes.append("starting %s" % ", ".join("%s on %s" % (st.vm.name, st.host.name)
                                                for st in plan.starts[:MAX_STARTS_PER_CYCLE]))
    if plan.no_capacity:
        notes.append("no host has memory for %s" % ", ".join(v.name for v in plan.no_capacity))
        c.unplaced = tuple(v.uuid for v in plan.no_capacity)
    if plan.waiting:
        notes.append("waiting for start order: %s" % ", ".join(plan.waiting))
    starting = [t for t in s.tasks if t.kind == "start"]
    if starting:
        notes.append("%d starts under way" % len(starting))
    if s.needs_sync and not starting and not plan.starts and not any(
            t.kind == "sync" for t in s.tasks):
        c.xapi(Intent("sync"), "Async.pool.sync_database")
    failing = [a for a in s.attempts if a.vm not in busy_vms]
    if failing:
        names = {v.uuid: v.name for v in view.vms}
        notes.append("retrying %s" % ", ".join("%s (%d failures, %s)" % (
            names.get(a.vm, a.vm), a.failures, a.last_error) for a in failing))
    held = _held_by_xapi(view, s)
    if held:
        notes.append(held)
    return "; ".join(notes) if notes else "all protected VMs running"


def _held_by_xapi(view: PoolView, s: DaemonState) -> str:
    """The note for protected VMs that are halted while xapi runs an operation on them that is
    not this daemon's (its own starts are counted as starts under way). Nothing may start them
    elsewhere: the operation may yet complete."""
    ours = frozenset(t.vm for t in s.tasks)
    held = [v.name for v in view.vms if v.protected and v.busy and v.power_state == "Halted"
            and v.uuid not in ours]
    return "waiting for xapi to finish an operation on %s" % ", ".join(held) if held else ""


def _watchdog(config: Config, s: DaemonState, f: Facts, mode: Mode, shutting_down: bool = False,
              arriving: bool = False) -> Tuple[Tuple[Any, ...], Tuple[Intent, ...]]:
    """Arm and feed only while the lease holds; disarm only when nothing needs protecting.

    Feeding is what keeps guests alive on this host: it is refused (valid_until) as soon as the
    lease has expired, even if the daemon stalled between deciding and feeding. A daemon
    stopped on its own (systemctl stop) disarms; while the system is going down it guards the
    guests until xapi has stopped them, like any other cycle. ``arriving``: this decision
    starts or moves a guest to this host."""
    ha_on = s.settings.ha_active
    timeout = int(config.watchdog_timeout)
    if not ha_on or (mode is Mode.STOPPING and f.lease_held and not shutting_down) or (
            not _guests_here(s) and not arriving and mode is not Mode.ISOLATED):
        if s.watchdog_armed:
            return (WatchdogControl("disarm", timeout, f.now + config.probe_interval),), DISARM
        return (), ()
    if not f.lease_held or f.lease_expires is None:
        return (), ()
    if s.watchdog_armed:
        return (WatchdogControl("feed", timeout, f.lease_expires),), FEED
    return (WatchdogControl("arm", timeout, f.lease_expires),), ARM


def feed_after_pause(config: Config, state: DaemonState, probe: ProbeReport, now: float,
                     shutting_down: bool = False) -> Optional[WatchdogControl]:
    """The watchdog feed a cycle makes when it finds its reads too old to decide on (the daemon
    was frozen or stalled), before it reads again; None when no feed is allowed.

    The rule is every feed's: only while the lease holds, valid until it expires. The round
    just discarded counts for the lease, by its lower bounds only (contact no later than the
    round's start), which are true whenever the pause fell: so a pause that ended before the
    round began costs no second round before the feed (finding 2 of the explorer,
    BENCHMARKS.md: a 3.9 s freeze, below the freeze tolerance, reset the host because the
    feed came only after the round read again). Nothing else is decided on those reads."""
    if not state.watchdog_armed:
        return None
    s = record_probe(config, state, probe)
    actions, _ = _watchdog(config, s, facts(config, s, now), s.mode, shutting_down)
    return next((a for a in actions if a.op == "feed"), None)
