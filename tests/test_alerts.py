"""Alerts read off the decisions (halizard.core.alerts): what an administrator hears, once.

The rules of the book (raise once, remind, resolve after a hold-down that doubles on flaps,
judge nothing it cannot see) on hand-made decisions; the events and conditions on whole
simulated scenarios, whose decisions are the daemon's own.
"""
import dataclasses
import json
import os

import pytest

from halizard.core.alerts import (
    EVENT,
    GATEWAY_LOST,
    NATIVE_HA,
    PEER_LOST,
    RAISED,
    REJOIN,
    REMINDER,
    RESOLVED,
    SELF_FENCE,
    TAKEOVER_FINISHED,
    TAKEOVER_STARTED,
    TWO_MASTERS,
    VM_NOT_RESTARTED,
    WATCHDOG_UNAVAILABLE,
    AlertBook,
    AlertPolicy,
    event_alert,
    observe,
)
from halizard.core.config import load_config
from halizard.core.decide import Intent
from halizard.core.pool import HostView, PoolView, Settings
from halizard.core.state import Decision, Mode, initial_state
from halizard.effects import STALE, WatchdogControl, WatchdogResult
from simulations.runner import run_scenario
from simulations.scenario import load_scenario

pytestmark = pytest.mark.runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = load_config({"peer_addresses": ["198.18.0.12"], "gateway_addresses": ["198.18.0.1"]}).config
POLICY = AlertPolicy(reminder_interval=3600.0, resolve_after=60.0)
HA_ON = Settings(ha_enabled=True)


def decision(at, peer_silent=0.0, gateway_silent=0.0, mode=Mode.NORMAL, settings=HA_ON,
             intents=(), actions=()):
    """A decision at ``at`` by a host that last heard its peer and its gateway that long ago."""
    state = dataclasses.replace(initial_state(0.0, None), mode=mode, settings=settings,
                                contact_lower=at - min(peer_silent, gateway_silent),
                                peer_upper=at - peer_silent, gateway_upper=at - gateway_silent)
    return Decision(at=at, wall=1.7e9 + at, mode=mode, reason="%s: test" % mode.value,
                    actions=tuple(actions), intents=tuple(intents), state=state,
                    acting_master=False, peer_dead=False)


def feed(book, *decisions, policy=POLICY, outcomes=None):
    sent = []
    for d in decisions:
        book, alerts = observe(book, policy, CFG, d, outcomes)
        sent.extend(alerts)
    return book, sent


def kinds(alerts):
    return [(a.kind, a.state) for a in alerts]


def test_a_lost_peer_is_raised_once_reminded_and_resolved_after_its_hold_down():
    book = AlertBook("xs2")
    book, sent = feed(book, decision(10.0), decision(11.0, peer_silent=5.0, mode=Mode.SURVIVOR))
    assert kinds(sent) == [(PEER_LOST, RAISED)]
    alert = sent[0]
    assert alert.host == "xs2" and alert.severity == "warning"
    assert "198.18.0.12 silent for 5.0 s" in alert.summary and "gateway visible" in alert.summary
    assert ("peer_silent_s", 5.0) in alert.facts
    # while it lasts: nothing new, until the reminder interval has passed
    book, sent = feed(book, *[decision(t, peer_silent=t - 6.0, mode=Mode.SURVIVOR)
                              for t in (12.0, 100.0, 3610.0)])
    assert kinds(sent) == []
    book, sent = feed(book, decision(3611.0, peer_silent=3605.0, mode=Mode.SURVIVOR))
    assert kinds(sent) == [(PEER_LOST, REMINDER)]
    assert "Ongoing for 60 min." in sent[0].details
    # back: resolved only once clear for resolve_after (60 s)
    book, sent = feed(book, decision(3700.0), decision(3759.0))
    assert kinds(sent) == []
    book, sent = feed(book, decision(3760.0))
    assert kinds(sent) == [(PEER_LOST, RESOLVED)]
    assert sent[0].summary.startswith("198.18.0.12 answers again (peer lost for")


def test_a_condition_that_returns_within_its_hold_down_was_never_resolved():
    book = AlertBook("xs1")
    book, sent = feed(book, decision(10.0, gateway_silent=5.0))
    assert kinds(sent) == [(GATEWAY_LOST, RAISED)]
    flapping = []
    for t in range(11, 600, 10):  # the gateway answers 5 s, is lost 5 s, for ten minutes
        flapping.append(decision(float(t), gateway_silent=0.0 if t % 20 == 11 else 6.0))
    book, sent = feed(book, *flapping)
    assert kinds(sent) == []


def test_a_slower_flap_doubles_the_hold_down():
    book = AlertBook("xs1")
    book, sent = feed(book, decision(10.0, gateway_silent=5.0), decision(20.0),
                      decision(80.0))
    assert kinds(sent) == [(GATEWAY_LOST, RAISED), (GATEWAY_LOST, RESOLVED)]
    book, sent = feed(book, decision(200.0, gateway_silent=5.0))
    assert kinds(sent) == [(GATEWAY_LOST, RAISED)]
    assert "It returned 1 time within 60 min of being resolved." in sent[0].details
    # now 120 s of quiet are needed, not 60
    book, sent = feed(book, decision(210.0), decision(329.0))
    assert kinds(sent) == []
    book, sent = feed(book, decision(331.0))
    assert kinds(sent) == [(GATEWAY_LOST, RESOLVED)]


def test_a_daemon_that_has_just_started_has_not_lost_its_peer():
    def unheard(at):  # the gateway answers; the peer not yet, since the start at 0
        state = dataclasses.replace(initial_state(0.0, None), mode=Mode.SURVIVOR,
                                    settings=HA_ON, contact_lower=at, gateway_upper=at)
        return Decision(at=at, wall=at, mode=Mode.SURVIVOR, reason="survivor: test",
                        actions=(), intents=(), state=state, acting_master=False,
                        peer_dead=False)

    book, sent = feed(AlertBook("xs1"), unheard(0.5), unheard(1.5), unheard(4.0))
    assert sent == []
    book, sent = feed(book, unheard(4.5))
    assert kinds(sent) == [(PEER_LOST, RAISED)]
    assert "silent since this daemon started" in sent[0].summary


def test_alerts_name_the_host_as_the_pool_does_after_the_view_is_gone():
    # A slave whose master dies loses its view of the pool with it; its peer-lost alert must
    # still carry the name the pool gives it, not the machine's name (found in the lab).
    me = HostView("OpaqueRef:me", "uuid-me", "xs2", "198.18.0.12", True, True, 8 << 30, 0)
    viewed = decision(10.0)
    viewed = viewed._replace(state=dataclasses.replace(
        viewed.state, local_uuid="uuid-me",
        view=PoolView("uuid-peer", True, False, frozenset(), (me,), ())))
    book, sent = feed(AlertBook("dom0-machine"), viewed, decision(20.0, peer_silent=5.0))
    assert kinds(sent) == [(PEER_LOST, RAISED)]
    assert sent[0].host == "xs2" and book.host == "xs2"


def test_nothing_is_judged_while_starting_and_links_not_while_ha_is_off():
    book = AlertBook("xs1")
    book, sent = feed(book, decision(10.0, peer_silent=100.0, gateway_silent=100.0,
                                     mode=Mode.STARTING))
    assert sent == []
    book, sent = feed(book, decision(20.0, peer_silent=5.0, mode=Mode.SURVIVOR))
    assert kinds(sent) == [(PEER_LOST, RAISED)]
    off = Settings(ha_enabled=False)
    book, sent = feed(book, *[decision(t, mode=Mode.DISABLED, settings=off)
                              for t in (30.0, 200.0, 5000.0)])
    assert sent == []  # held: neither resolved (HA off hides the links) nor reminded
    book, sent = feed(book, decision(5001.0), decision(5062.0))
    assert kinds(sent) == [(PEER_LOST, RESOLVED)]


def test_xenservers_own_ha_is_a_condition():
    native = Settings(ha_enabled=True, native_ha=True)
    book, sent = feed(AlertBook("xs1"), decision(10.0, mode=Mode.DISABLED, settings=native))
    assert kinds(sent) == [(NATIVE_HA, RAISED)]
    assert "xe pool-ha-disable" in sent[0].text()
    book, sent = feed(book, decision(20.0), decision(81.0))
    assert kinds(sent) == [(NATIVE_HA, RESOLVED)]


def test_a_watchdog_that_will_not_arm_is_a_condition_and_a_stale_arm_is_not():
    arm = (WatchdogControl("arm", 5, 100.0),)
    intents = (Intent("arm"),)
    book, sent = feed(AlertBook("xs1"), decision(10.0, intents=intents, actions=arm),
                      outcomes=(WatchdogResult(False, "/dev/watchdog: busy (another process "
                                                      "holds the watchdog)"),))
    assert kinds(sent) == [(WATCHDOG_UNAVAILABLE, RAISED)]
    assert "busy" in sent[0].summary and sent[0].severity == "critical"
    book, sent = feed(book, decision(11.0, intents=intents, actions=arm),
                      outcomes=(WatchdogResult(True),))
    book, sent = feed(book, decision(72.0, intents=(Intent("feed"),), actions=arm),
                      outcomes=(WatchdogResult(True),))
    assert kinds(sent) == [(WATCHDOG_UNAVAILABLE, RESOLVED)]
    _, sent = feed(AlertBook("xs1"), decision(10.0, intents=intents, actions=arm),
                   outcomes=(WatchdogResult(False, STALE),))
    assert sent == []


def test_an_alert_carries_host_decision_reason_and_numbers_in_every_form():
    _, sent = feed(AlertBook("xs2"), decision(10.0), decision(11.0, peer_silent=5.0,
                                                             mode=Mode.SURVIVOR))
    alert = sent[0]
    text = alert.text()
    assert text.startswith("halizard xs2: peer lost: 198.18.0.12 silent for 5.0 s")
    assert "Decision: survivor: survivor: test" in text
    assert "Numbers: peer_silent_s=5.0, gateway_visible=True, takeover_delay_s=12.0" in text
    data = json.loads(json.dumps(alert.to_dict()))
    assert data["kind"] == "peer-lost" and data["state"] == "raised" and data["host"] == "xs2"
    assert data["decision"] == {"mode": "survivor", "reason": "survivor: test"}
    assert data["facts"]["peer_silent_s"] == 5.0 and data["at"] == 1.7e9 + 11.0
    refusal = event_alert("unsafe-configuration", "xs1", "the daemon refuses to start",
                          ("f: takeover_delay: too short",))
    assert refusal.state == EVENT and refusal.severity == "critical"
    assert "f: takeover_delay: too short" in refusal.text()


# --- on whole scenarios: the daemon's own decisions ----------------------------------------------


def scenario_alerts(name, seed=0):
    sc = load_scenario(os.path.join(ROOT, "simulations", "scenarios", name + ".toml"))
    result = run_scenario(sc, seed, alerts=True)
    assert result.passed, (result.violations, result.unmet)
    return result.alerts


def by_host(alerts, host):
    return [(a.kind, a.state) for _, h, a in alerts if h == host]


def test_a_master_crash_the_survivor_says_peer_lost_takeover_started_and_finished():
    alerts = scenario_alerts("H02-master-crash")
    assert by_host(alerts, "xs2") == [(PEER_LOST, RAISED), (TAKEOVER_STARTED, EVENT),
                                      (TAKEOVER_FINISHED, EVENT)]
    finished = [a for _, _, a in alerts if a.kind == TAKEOVER_FINISHED][0]
    assert finished.summary.startswith("1 VM restarted in ")
    assert any(line.endswith("restarted on xs2") for line in finished.details)
    assert any(line.startswith("This host promoted itself to pool master, ")
               for line in finished.details)
    facts = dict(finished.facts)
    assert facts["restarted"] == 1 and facts["not_running"] == 0
    assert 12.0 < facts["since_peer_heard_s"] < 40.0  # the failover, as the survivor saw it
    times = [t for t, _, a in alerts if a.kind in (TAKEOVER_STARTED, TAKEOVER_FINISHED)]
    assert times[1] - times[0] == pytest.approx(facts["took_s"], abs=0.5)


def test_an_isolated_slave_self_fences_and_says_so():
    alerts = scenario_alerts("N03-slave-nic-down")
    assert (SELF_FENCE, EVENT) in by_host(alerts, "xs2")
    fence = [a for _, h, a in alerts if h == "xs2" and a.kind == SELF_FENCE][0]
    assert "no contact with peer or gateway" in fence.summary
    assert dict(fence.facts)["guests"] == 1
    assert [k for k in by_host(alerts, "xs1") if k[0] in (TAKEOVER_STARTED, TAKEOVER_FINISHED)] \
        == [(TAKEOVER_STARTED, EVENT), (TAKEOVER_FINISHED, EVENT)]


def test_a_healed_partition_two_masters_then_a_rejoin():
    alerts = scenario_alerts("N10-partition-heals-mid-failover")
    xs1 = by_host(alerts, "xs1")
    assert (SELF_FENCE, EVENT) in xs1 and (TWO_MASTERS, RAISED) in xs1
    assert xs1.index((REJOIN, EVENT)) > xs1.index((SELF_FENCE, EVENT))
    assert (TWO_MASTERS, RESOLVED) in xs1 and (TWO_MASTERS, RESOLVED) in by_host(alerts, "xs2")
    two = [a for _, _, a in alerts if a.kind == TWO_MASTERS and a.state == RAISED]
    assert all(a.severity == "critical" for a in two)


def test_a_vm_that_fails_to_start_is_raised_then_resolved_where_it_runs():
    alerts = scenario_alerts("F05-vm-fails-to-start-twice")
    vm = [(a.state, a.summary) for _, h, a in alerts if a.kind == VM_NOT_RESTARTED]
    assert vm[0][0] == RAISED and "vm-a" in vm[0][1] and "SR_BACKEND_FAILURE_46" in vm[0][1]
    assert vm[-1][0] == RESOLVED and vm[-1][1].startswith("vm-a runs on xs1")
    finished = [a for _, _, a in alerts if a.kind == TAKEOVER_FINISHED][0]
    assert "not running: vm-a" in finished.summary and finished.severity == "critical"


def test_no_memory_for_a_vm_is_raised():
    alerts = scenario_alerts("P01-start-order-memory-short")
    raised = [a for _, _, a in alerts if a.kind == VM_NOT_RESTARTED and a.state == RAISED]
    assert raised and all("batch" in a.summary for a in raised)


def test_a_fence_agent_that_cannot_reach_the_bmc_is_raised_and_no_takeover_is_announced():
    alerts = scenario_alerts("F01-fence-unreachable-master-crash")
    xs2 = by_host(alerts, "xs2")
    assert ("fence-agent-failure", RAISED) in xs2
    assert (TAKEOVER_STARTED, EVENT) not in xs2


def test_heartbeat_loss_below_the_tolerances_raises_nothing():
    assert scenario_alerts("N09-heartbeat-loss") == ()


def test_recording_alerts_changes_nothing_the_simulation_does():
    sc = load_scenario(os.path.join(ROOT, "simulations", "scenarios", "N10-partition-heals-mid"
                                    "-failover.toml"))
    assert run_scenario(sc, 3, alerts=True).trace_hash == run_scenario(sc, 3).trace_hash
