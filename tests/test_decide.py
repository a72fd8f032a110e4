"""The decision ladder, one rung at a time, with hand-built observations."""
import pytest

from halizard.core.config import load_config
from halizard.core.decide import absorb_results, decide, feed_after_pause
from halizard.core.evidence import heard_in_discarded_round
from halizard.core.observe import QUICK_WAIT, Observation, read_templates
from halizard.core.pool import HostView, PoolView, VmView, settings_of
from halizard.core.state import (
    IllegalTransition,
    Mode,
    Task,
    check_transition,
    evolve,
    initial_state,
)
from halizard.effects import (
    CallStarted,
    CollectCalls,
    CollectFenceResults,
    DestroyGuests,
    FenceOutcome,
    FenceStarted,
    GuestList,
    ListGuests,
    Now,
    Parallel,
    PathReport,
    PoolRole,
    Probe,
    ProbeReport,
    ReadClock,
    ReadPoolRole,
    StartCall,
    StartFence,
    WatchdogControl,
    WatchdogResult,
    XapiCall,
    XapiResult,
)
from halizard.loop import cycle

pytestmark = pytest.mark.runtime

CFG = load_config({"peer_addresses": ["198.18.0.12"], "gateway_addresses": ["198.18.0.1"]}).config
FENCED = load_config({"peer_addresses": ["198.18.0.12"], "gateway_addresses": ["198.18.0.1"],
                      "fence_agent": "fence_ipmilan"}).config
ME, PEER = "uuid-xs1", "uuid-xs2"
GiB = 1 << 30


def probe(t, peer=True, gw=True, heard=False):
    return ProbeReport(
        started=t - 0.4, finished=t - 0.05, heard_since=t - 1.4,
        peer=(PathReport("198.18.0.12", 5 if peer else 0, heard),),
        gateways=(PathReport("198.18.0.1", 5 if gw else 0),),
    )


def view(vms=(), enabled=True, ha=True, maintenance=()):
    hosts = (
        HostView("OpaqueRef:h1", ME, "xs1", "198.18.0.11", True, True, 64 * GiB, 4 * GiB),
        HostView("OpaqueRef:h2", PEER, "xs2", "198.18.0.12", enabled, True, 64 * GiB, 4 * GiB),
    )
    return PoolView(ME, ha, False, frozenset(maintenance), hosts, tuple(vms))


def vm(name, host, state="Running", policy="restart", order=0):
    return VmView("OpaqueRef:" + name, "uuid-" + name, name, state, host, policy, order, 0.0, GiB,
                  False)


def obs(t, probe_report, master=True, pool=None, guests=("uuid-vm-a",), peer_role="slave",
        stop=False, fence=()):
    role = PoolRole(ME, master, None if master else "198.18.0.12")
    return Observation(
        cycle_start=t - 0.45, now=t, wall=1.7e9 + t, stop_requested=stop, role=role,
        probe=probe_report, guests=GuestList(tuple(guests)), view=pool,
        settings=settings_of(pool) if pool is not None else None, view_error="",
        peer_role=peer_role, peer_guests=None, tasks=(), fence=tuple(fence),
    )


def settle(config, state, observation, results=None):
    """decide(), then absorb the given (or successful) results of its actions."""
    decision = decide(config, state, observation)
    outcomes = results if results is not None else tuple(_ok(a) for a in decision.actions)
    return decision, absorb_results(config, decision.state, decision, outcomes)


def _ok(action):
    if isinstance(action, XapiCall):
        async_call = action.method.startswith("Async.")
        return XapiResult(value="OpaqueRef:task-" + action.method if async_call else "")
    if isinstance(action, WatchdogControl):
        return WatchdogResult(True)
    if isinstance(action, DestroyGuests):
        return GuestList(())
    if isinstance(action, StartFence):
        return FenceStarted(1)
    return None


def healthy(config=CFG, master=True, pool=None, until=10.0):
    """A daemon that has run normally until ``until`` seconds."""
    state = evolve(initial_state(0.0, {"settings": {"ha_enabled": True}}))
    t = 1.0
    while t <= until:
        _, state = settle(config, state, obs(t, probe(t), master=master, pool=pool))
        t += 1.0
    return state


def test_healthy_master_is_normal_and_feeds_the_watchdog_within_its_lease():
    state = healthy(pool=view([vm("vm-a", ME), vm("vm-b", PEER)]))
    decision = decide(CFG, state, obs(11.0, probe(11.0), pool=view([vm("vm-a", ME)])))
    assert decision.mode is Mode.NORMAL and decision.acting_master
    feeds = [a for a in decision.actions if isinstance(a, WatchdogControl)]
    assert feeds and feeds[0].op == "feed"
    # The feed is valid exactly until the lease ends: last contact (round start) + lease_timeout.
    assert feeds[0].valid_until == pytest.approx(11.0 - 0.4 + CFG.lease_timeout)


def test_lease_lost_means_self_fence_and_no_feed():
    state = healthy()
    t = 10.0
    decision = None
    while t < 20.0:
        t += 1.0
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False, gw=False)))
        if decision.mode is Mode.ISOLATED:
            break
    assert decision is not None and decision.mode is Mode.ISOLATED
    assert any(isinstance(a, DestroyGuests) for a in decision.actions)
    assert not any(isinstance(a, WatchdogControl) and a.op == "feed" for a in decision.actions)
    assert not decision.acting_master
    # isolated within (lease_timeout, lease_timeout + one cycle] of the last contact (9.6 s)
    assert 9.6 + CFG.lease_timeout < t <= 9.6 + CFG.lease_timeout + 1.0
    # next cycle: guests confirmed gone -> self-fenced; the watchdog is given up
    decision, state = settle(CFG, state, obs(t + 1, probe(t + 1, peer=False, gw=False), guests=()))
    assert decision.mode is Mode.SELF_FENCED
    assert [a.op for a in decision.actions if isinstance(a, WatchdogControl)] == ["disarm"]


def test_self_fence_is_irrevocable_even_if_contact_returns_at_once():
    state = evolve(healthy(), mode=Mode.ISOLATED)
    decision = decide(CFG, state, obs(11.0, probe(11.0)))
    assert decision.mode is Mode.ISOLATED
    assert any(isinstance(a, DestroyGuests) for a in decision.actions)


def test_heard_requests_alone_keep_the_peer_visible():
    state = healthy(until=5.0)
    for t in range(6, 30):
        decision, state = settle(CFG, state, obs(float(t), probe(float(t), peer=False, heard=True)))
    assert decision.mode is Mode.NORMAL


def test_slave_survivor_promotes_after_promote_delay_not_before():
    state = healthy(master=False, until=10.0)
    last_seen = 10.0 - 0.05
    t = 10.0
    promoted_at = None
    while t < 30.0 and promoted_at is None:
        t += 0.5
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False), master=False))
        if any(isinstance(a, XapiCall) and a.method == "pool.emergency_transition_to_master"
               for a in decision.actions):
            promoted_at = t
    assert promoted_at is not None
    assert promoted_at - last_seen >= CFG.promote_delay
    assert promoted_at - last_seen < CFG.promote_delay + 0.6


def test_master_survivor_takes_over_after_takeover_delay():
    pool = view([vm("vm-a", ME), vm("vm-b", PEER)])
    state = healthy(pool=pool)
    t = 10.0
    while True:
        t += 0.5
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False), pool=pool))
        calls = [a.method for a in decision.actions if isinstance(a, XapiCall)]
        if "Async.host.declare_dead" in calls:
            break
        assert t - 9.95 < CFG.takeover_delay, calls
    assert t - 9.95 >= CFG.takeover_delay
    assert decision.mode is Mode.TAKEOVER and decision.peer_dead
    # Nothing starts while xapi is still clearing the records (R010) ...
    cleared = view([vm("vm-a", ME), vm("vm-b", None, state="Halted")])
    decision, state = settle(CFG, state, obs(t + 1, probe(t + 1, peer=False), pool=cleared))
    assert not any(isinstance(a, XapiCall) and a.method == "Async.VM.start_on"
                   for a in decision.actions)
    # ... and once the declaration has succeeded, the halted VM is restarted here.
    (task,) = state.tasks
    done = ((task.ref, XapiResult(value={"status": "success"})),)
    decision, state = settle(CFG, state, obs(t + 2, probe(t + 2, peer=False), pool=cleared)
                             ._replace(tasks=done))
    starts = [a for a in decision.actions if isinstance(a, XapiCall) and a.method == "Async.VM.start_on"]
    assert [s.args[:2] for s in starts] == [("OpaqueRef:vm-b", "OpaqueRef:h1")]


def test_no_takeover_without_the_gateway():
    pool = view([vm("vm-a", ME), vm("vm-b", PEER)])
    state = healthy(pool=pool)
    for t in (11.0, 12.0, 13.0):
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False, gw=False), pool=pool))
        assert not decision.peer_dead


def test_fence_agent_master_fences_at_peer_timeout_slave_waits_fence_delay():
    for master, due in ((True, FENCED.peer_timeout), (False, FENCED.peer_timeout + FENCED.fence_delay)):
        state = healthy(config=FENCED, master=master, pool=view([vm("vm-b", PEER)]) if master else None)
        t = 10.0
        while True:
            t += 0.25
            decision, state = settle(FENCED, state, obs(t, probe(t, peer=False), master=master,
                                                       pool=view([vm("vm-b", PEER)]) if master else None))
            if any(isinstance(a, StartFence) for a in decision.actions):
                break
            assert t < 40
        assert due <= t - 9.95 < due + 0.3


def test_fence_confirmation_makes_the_peer_dead_and_failure_does_not():
    pool = view([vm("vm-b", PEER)])
    state = healthy(config=FENCED, pool=pool)
    for t in (11.0, 12.0, 13.0, 14.0, 15.0):
        decision, state = settle(FENCED, state, obs(t, probe(t, peer=False), pool=pool))
    assert state.fence_job == 1
    # the agent could not reach the BMC: no proof, no takeover, retry later
    decision, state = settle(FENCED, state, obs(16.0, probe(16.0, peer=False), pool=pool,
                                                fence=[FenceOutcome(1, "off", "unreachable")]))
    assert not decision.peer_dead and state.fence_failures == 1
    state = evolve(state, fence_retry_after=0.0, fence_job=2, fence_action="off")
    decision, state = settle(FENCED, state, obs(17.0, probe(17.0, peer=False), pool=pool,
                                                fence=[FenceOutcome(2, "off", "off")]))
    state = evolve(state, fence_job=3)
    decision, state = settle(FENCED, state, obs(18.0, probe(18.0, peer=False), pool=pool,
                                                fence=[FenceOutcome(3, "status", "off")]))
    assert decision.peer_dead and "fence agent confirmed" in decision.state.peer_dead_reason


def test_two_masters_the_one_with_fewer_guests_yields():
    pool = view([vm("vm-a", ME)])
    state = evolve(healthy(pool=pool), peer_role="master")
    o = obs(11.0, probe(11.0), pool=pool, guests=(), peer_role="master")
    o = o._replace(peer_guests=2)
    decision = decide(CFG, state, o)
    assert any(isinstance(a, XapiCall) and a.method == "pool.emergency_reset_master"
               for a in decision.actions)
    assert not decision.acting_master
    o = o._replace(guests=GuestList(("a", "b", "c")), peer_guests=2)
    decision = decide(CFG, state, o)
    assert not any(isinstance(a, XapiCall) and a.method == "pool.emergency_reset_master"
                   for a in decision.actions)
    assert decision.acting_master
    # R007: until the guests on both are counted, neither master acts as one.
    decision = decide(CFG, state, o._replace(peer_guests=None))
    assert decision.mode is Mode.NORMAL and not decision.acting_master


def test_ha_disabled_disarms_and_does_nothing():
    state = healthy()
    assert state.watchdog_armed
    off = view([vm("vm-b", None, state="Halted")], ha=False)
    decision = decide(CFG, state, obs(11.0, probe(11.0), pool=off))
    assert decision.mode is Mode.DISABLED
    assert [a.op for a in decision.actions if isinstance(a, WatchdogControl)] == ["disarm"]
    assert not any(isinstance(a, XapiCall) for a in decision.actions)


def test_master_restarts_halted_protected_vms_by_order_and_never_others():
    pool = view([
        vm("db", None, state="Halted", order=1),
        vm("app", None, state="Halted", order=2),
        vm("scratch", None, state="Halted", policy="never"),
    ])
    state = healthy(pool=view([]))
    decision = decide(CFG, state, obs(11.0, probe(11.0), pool=pool))
    started = [a.args[0] for a in decision.actions if isinstance(a, XapiCall)
               and a.method == "Async.VM.start_on"]
    assert started == ["OpaqueRef:db"]  # app waits for db's start to finish


def test_a_start_on_this_host_arms_the_watchdog_with_it():
    """R022: a master with no guest (its watchdog disarmed) that starts one on itself arms the
    watchdog in the same decision: frozen before its next one, it is reset, and the start dies
    with it, instead of completing after the peer has restarted the VM elsewhere."""
    state = healthy(pool=view([]))
    state = evolve(state, guests=(), watchdog_armed=False)
    pool = view([vm("db", None, state="Halted")])
    decision = decide(CFG, state, obs(11.0, probe(11.0), pool=pool, guests=()))
    starts = [a for a in decision.actions if isinstance(a, XapiCall)
              and a.method == "Async.VM.start_on"]
    assert [a.args[1] for a in starts] == ["OpaqueRef:h1"]  # on this host
    assert [a.op for a in decision.actions if isinstance(a, WatchdogControl)] == ["arm"]
    nothing = decide(CFG, state, obs(11.0, probe(11.0), pool=view([]), guests=()))
    assert not any(isinstance(a, WatchdogControl) for a in nothing.actions)


def test_planned_stop_hands_the_master_role_over():
    state = healthy(pool=view([vm("vm-a", ME)]))
    decision = decide(CFG, state, obs(11.0, probe(11.0), pool=view([vm("vm-a", ME)]), stop=True))
    assert decision.mode is Mode.STOPPING
    calls = [a for a in decision.actions if isinstance(a, XapiCall)]
    assert [c.method for c in calls] == ["pool.designate_new_master"]
    assert not decision.exit


def test_transition_table_forbids_leaving_isolated_except_to_self_fenced():
    check_transition(Mode.ISOLATED, Mode.SELF_FENCED)
    for mode in Mode:
        if mode not in (Mode.ISOLATED, Mode.SELF_FENCED):
            with pytest.raises(IllegalTransition):
                check_transition(Mode.ISOLATED, mode)
    with pytest.raises(IllegalTransition):
        check_transition(Mode.SELF_FENCED, Mode.NORMAL)


def test_next_cycle_is_never_later_than_the_cadence_or_a_pending_deadline():
    pool = view([vm("vm-a", ME), vm("vm-b", PEER)])
    state = healthy(pool=pool)
    # A cycle that began long ago (it overran): the next one is due at once, not at the lease.
    late = obs(20.0, probe(20.0), pool=pool)
    late = late._replace(cycle_start=15.0)
    decision = decide(CFG, state, late)
    assert decision.next_cycle <= 20.0
    # A survivor's cycle for its takeover starts one probe round early, so the decision falls on
    # the deadline, not up to a cycle later: here the deadline comes before this cycle's cadence.
    lead = (CFG.probe_count - 1) * CFG.probe_spacing + QUICK_WAIT
    t, seen = 10.0, 9.95
    while True:
        t += 0.5
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False), pool=pool))
        if t < seen + CFG.takeover_delay - lead < (t - 0.45) + CFG.probe_interval:
            break
    assert decision.next_cycle == pytest.approx(seen + CFG.takeover_delay - lead)


def test_silence_is_counted_from_the_first_contact_not_from_start():
    """R005: a daemon whose first decision with contact comes 20 s after it started heard
    nothing meanwhile; the peer's silence starts at that decision."""
    state = initial_state(0.0, {"settings": {"ha_enabled": True}})
    pool = view([vm("vm-a", ME), vm("vm-b", PEER)])
    decision, state = settle(CFG, state, obs(20.0, probe(20.0, peer=False), pool=pool))
    assert decision.mode is Mode.SURVIVOR and not decision.peer_dead
    t = 20.0
    while not decision.peer_dead:
        t += 0.5
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False), pool=pool))
    assert CFG.takeover_delay <= t - 20.0 < CFG.takeover_delay + 0.6


def test_a_master_back_from_its_own_loss_of_contact_acts_only_under_the_promotion_rule():
    """R004: a master that was cut off itself, then sees only the gateway, may face a peer
    that promoted itself meanwhile; it acts as master again after promote_delay, like a slave."""
    pool = view([vm("vm-a", ME), vm("vm-b", PEER)])
    state = healthy(pool=pool)
    for t in range(11, 30):  # cut off: isolated, self-fenced
        decision, state = settle(CFG, state, obs(float(t), probe(float(t), peer=False, gw=False),
                                                 pool=pool, guests=()))
    assert decision.mode is Mode.SELF_FENCED
    back = 30.0
    decision, state = settle(CFG, state, obs(back, probe(back, peer=False), pool=pool, guests=()))
    assert decision.mode is Mode.SURVIVOR and not decision.acting_master
    t = back
    while not decision.acting_master:
        t += 0.5
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False), pool=pool, guests=()))
    assert CFG.promote_delay <= t - back < CFG.promote_delay + 0.6
    # A master that kept its lease throughout keeps acting as master when the peer goes silent.
    state = healthy(pool=pool)
    decision, state = settle(CFG, state, obs(11.0, probe(11.0, peer=False), pool=pool))
    assert decision.mode is Mode.NORMAL and decision.acting_master
    decision, state = settle(CFG, state, obs(15.0, probe(15.0, peer=False), pool=pool))
    assert decision.mode is Mode.SURVIVOR and decision.acting_master


def test_a_stall_longer_than_the_lease_restarts_the_silence_clock():
    """R006: a master stalled for 20 s heard nothing meanwhile; its first decision after the
    stall must not count the stall as the peer's silence."""
    pool = view([vm("vm-a", ME), vm("vm-b", PEER)])
    state = healthy(pool=pool)
    decision, state = settle(CFG, state, obs(30.0, probe(30.0, peer=False), pool=pool))
    assert decision.mode is Mode.SURVIVOR and not decision.peer_dead
    t = 30.0
    while not decision.peer_dead:
        t += 0.5
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False), pool=pool))
    assert CFG.takeover_delay <= t - 30.0 < CFG.takeover_delay + 0.6
    # A stall shorter than the lease leaves the clock alone: the silence counts from the last
    # evidence of the peer (9.95 s).
    state = healthy(pool=pool)
    decision, state = settle(CFG, state, obs(14.0, probe(14.0, peer=False), pool=pool))
    assert decision.mode is Mode.SURVIVOR
    assert decision.state.silence_floor < 9.95


def test_a_self_fenced_host_asked_to_stop_exits_at_once_and_acts_as_nothing():
    """R008: the self-fence gave the master role up; a pending hand-over is moot."""
    state = evolve(healthy(), mode=Mode.SELF_FENCED, handover_requested_at=5.0)
    decision = decide(CFG, state, obs(11.0, probe(11.0), guests=(), stop=True))
    assert decision.mode is Mode.STOPPING and decision.exit
    assert not decision.acting_master


def test_a_start_under_way_keeps_the_watchdog_armed_through_a_self_fence():
    """R009: a start this master issued to itself may finish after the self-fence. The watchdog
    stays armed (and unfed) until xapi says how the start ended, and a guest that appears after
    the self-fence is destroyed at once."""
    pool = view([vm("vm-a", PEER, state="Halted"), vm("vm-b", ME)])
    state = healthy(pool=pool)
    assert state.watchdog_armed
    task = Task("OpaqueRef:task-start", "start", "uuid-vm-a", ME, GiB, 10.0)
    state = evolve(state, tasks=(task,))
    t = 10.0
    while state.mode is not Mode.ISOLATED:
        t += 1.0
        decision, state = settle(CFG, state, obs(t, probe(t, peer=False, gw=False), pool=pool))
    assert state.tasks == (task,)
    t += 1.0
    decision, state = settle(CFG, state, obs(t, probe(t, peer=False, gw=False), pool=pool,
                                             guests=()))
    assert decision.mode is Mode.SELF_FENCED
    assert not any(isinstance(a, WatchdogControl) for a in decision.actions)  # no feed, no disarm
    t += 1.0
    decision, state = settle(CFG, state, obs(t, probe(t, peer=False, gw=False), pool=pool,
                                             guests=("uuid-vm-a",)))
    assert decision.mode is Mode.ISOLATED
    assert any(isinstance(a, DestroyGuests) for a in decision.actions)


def test_a_system_shutdown_guards_the_guests_until_xapi_has_stopped_them():
    """R012: while the system goes down, the watchdog stays fed until no guest is left; a stop
    of the daemon alone (systemctl stop) disarms and exits at once, as before."""
    state = healthy(master=False)

    def stopping(t, guests, shutting_down):
        o = obs(t, probe(t), master=False, guests=guests, stop=True)
        return decide(CFG, state, o._replace(shutting_down=shutting_down))

    decision = stopping(11.0, ("uuid-vm-a",), True)
    assert decision.mode is Mode.STOPPING and not decision.exit
    assert [a.op for a in decision.actions if isinstance(a, WatchdogControl)] == ["feed"]
    decision = stopping(11.0, (), True)
    assert decision.exit
    assert [a.op for a in decision.actions if isinstance(a, WatchdogControl)] == ["disarm"]
    decision = stopping(11.0, ("uuid-vm-a",), False)
    assert decision.exit
    assert [a.op for a in decision.actions if isinstance(a, WatchdogControl)] == ["disarm"]


def test_a_master_that_was_not_acting_waits_to_hear_its_peer_before_acting():
    """R014: a master that comes up (after a reboot, or without holding the role while the peer
    was out of sight) does not act beside a peer that has not said it is not a master; one that
    was acting goes on."""
    halted = view([vm("vm-a", None, state="Halted")])
    state = evolve(initial_state(0.0, {"settings": {"ha_enabled": True}}))
    unknown = obs(1.0, probe(1.0), pool=halted, peer_role=None)
    decision = decide(CFG, state, unknown)
    assert decision.mode is Mode.STARTING or not decision.acting_master
    _, state = settle(CFG, state, unknown)
    decision = decide(CFG, state, obs(2.0, probe(2.0), pool=halted, peer_role=None))
    assert decision.mode is Mode.NORMAL and not decision.acting_master
    assert not [a for a in decision.actions if isinstance(a, XapiCall)]
    assert "waiting to hear whether it is a pool master" in decision.reason
    # once the peer's xapi has answered as a slave, it acts
    decision = decide(CFG, decision.state, obs(3.0, probe(3.0), pool=halted, peer_role="slave"))
    assert decision.acting_master
    assert [a.method for a in decision.actions if isinstance(a, XapiCall)] == ["Async.VM.start_on"]
    # and a master that was acting goes on when the peer's state is forgotten and unknown again
    acting = healthy(pool=view([]))
    assert acting.acting
    forgotten = evolve(acting, peer_role=None, peer_beacon=None)
    decision = decide(CFG, forgotten, obs(11.0, probe(11.0), pool=halted, peer_role=None))
    assert decision.acting_master
    decision = decide(CFG, evolve(forgotten, acting=False),
                      obs(11.0, probe(11.0), pool=halted, peer_role=None))
    assert not decision.acting_master


def test_after_a_pause_the_feed_needs_a_round_that_renews_the_lease():
    """A round discarded after a pause counts for the lease by its start (a lower bound of the
    contact, whenever the pause fell): the feed is allowed, valid until that lease expires. A
    round that saw no contact, or whose start is older than the lease, allows none."""
    state = healthy()  # fed until 10 s: the lease runs to 9.6 + 4
    assert state.watchdog_armed
    fresh = probe(15.0)  # began at 14.6, after the pause
    feed = feed_after_pause(CFG, state, fresh, 15.0)
    assert feed is not None and feed.op == "feed"
    assert feed.valid_until == pytest.approx(14.6 + CFG.lease_timeout)
    assert feed_after_pause(CFG, state, probe(15.0, peer=False, gw=False), 15.0) is None
    old = probe(10.9)  # began at 10.5, before a pause that ended at 15.0
    assert feed_after_pause(CFG, state, old, 15.0) is None
    assert feed_after_pause(CFG, evolve(state, watchdog_armed=False), fresh, 15.0) is None


def test_a_discarded_round_keeps_when_the_peer_was_heard_never_the_lease():
    state = healthy()
    report = probe(15.0)._replace(peer=(PathReport("198.18.0.12", 5, False, 14.9),))
    kept = heard_in_discarded_round(CFG, state, report)
    assert kept.peer_upper == pytest.approx(14.9) and kept.gateway_upper == pytest.approx(14.95)
    assert kept.contact_lower == state.contact_lower and kept.peer_lower == state.peer_lower


def _answer(effect, report):
    if isinstance(effect, Probe):
        return report
    if isinstance(effect, ListGuests):
        return GuestList(("uuid-vm-a",))
    if isinstance(effect, (CollectCalls, CollectFenceResults)):
        return ()
    if isinstance(effect, StartCall):
        return CallStarted(1)
    return XapiResult(error=("TIMEOUT",))


def test_a_cycle_paused_before_its_reads_feeds_then_reads_again():
    """Finding 2 of the explorer (BENCHMARKS.md): the first cycle after a freeze found its reads
    too old and read again before it fed the watchdog, which fired meanwhile. Now it feeds on
    the discarded round's contact first, and what that round heard of the peer still counts
    for the silence clock."""
    state = healthy()
    gen = cycle(CFG, read_templates(CFG), state, Now(10.6, 0.0))  # woke at 10.6, then froze
    assert isinstance(next(gen), ReadPoolRole)
    reads = gen.send(PoolRole(ME, True, None))
    assert isinstance(reads, Parallel)
    heard = probe(15.0)._replace(peer=(PathReport("198.18.0.12", 5, False, 14.9),))
    assert isinstance(gen.send(tuple(_answer(e, heard) for e in reads.effects)), ReadClock)
    feed = gen.send(Now(15.0, 0.0))
    assert isinstance(feed, WatchdogControl) and feed.op == "feed"
    assert feed.valid_until == pytest.approx(14.6 + CFG.lease_timeout)
    assert isinstance(gen.send(WatchdogResult(True)), ReadPoolRole)  # then it reads again
    reads = gen.send(PoolRole(ME, True, None))
    silent = probe(15.6, peer=False)
    assert isinstance(gen.send(tuple(_answer(e, silent) for e in reads.effects)), ReadClock)
    enact = gen.send(Now(15.6, 0.0))
    assert enact.decision.state.peer_upper == pytest.approx(14.9)
