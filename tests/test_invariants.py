"""The checkers must be able to fail: each test breaks the world or the daemon on purpose and
expects the matching invariant to fire."""
import dataclasses
import os

import pytest

import halizard.core.decide as decide_module
from halizard.effects import GuestList, WatchdogControl
from halizard.toml import loads
from simulations.executor import SimDaemon
from simulations.runner import Simulation, scenario_config
from simulations.scenario import load_scenario, parse_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.runtime


def scenario(name):
    return load_scenario(os.path.join(ROOT, "simulations", "scenarios", name))


def invariants(result):
    return {v.invariant for v in result.violations}


def test_a_lying_fence_device_is_caught_as_a_double_run():
    """F03: the BMC answers "off" but leaves the host running. The master then restarts the
    slave's VM although it still runs: I1 (twice live) and I6 (believes the peer fenced)."""
    s = scenario("N01-link-down-fence-agent.toml")
    sim = Simulation(s, 0, scenario_config(s))

    def lying_fence(caller, target, action, done):
        sim.world.scheduler.after(1_000_000_000, done, "off")

    sim.world.fence = lying_fence
    result = sim.run()
    assert {"I1", "I6"} <= invariants(result), result.violations


def test_a_fence_device_that_lies_only_about_off_is_caught_by_i8():
    """The catalog's lying device (simulations.mutants, lying-fence-device): "off" answered, the
    host left running, "status" still truthful. The daemon confirms with "status", so it never
    believes the lie (no I1, no I6) and nothing it does is unsafe; only the checker's own
    distrust of the device can see it (I8). Without the lie the run is clean."""
    s = scenario("N01-link-down-fence-agent.toml")
    assert not Simulation(s, 0, scenario_config(s)).run().violations
    sim = Simulation(s, 0, scenario_config(s))
    power_off = sim.world.power_off

    def lying(name, cause):
        if cause != "fenced":
            power_off(name, cause)

    sim.world.power_off = lying
    result = sim.run()
    assert invariants(result) == {"I8"}, result.violations


HUNG_AND_CUT_OFF = """
id = "M06"
title = "Slave cut off while its daemon hangs: only its watchdog can kill its guests"
[cluster]
hosts = ["xs1", "xs2"]
master = "xs1"
vms = [ { name = "vm-a", host = "xs1", restart = "restart" },
        { name = "vm-b", host = "xs2", restart = "restart" } ]
[[fault]]
at = "60s"
kind = "nic.down"
target = "xs2"
[[fault]]
at = "60s"
kind = "daemon.stall"
target = "xs2"
duration = "2m"
[expect]
liveness_bound = "none"
"""


def test_an_unsafe_takeover_delay_is_caught():
    """Mutation 6: takeover_delay not longer than lease + watchdog. Validation refuses such a
    configuration; forced here, the master restarts vm-b while the hung, cut-off slave (whose
    watchdog is 30 s) still runs it. The same schedule with safe timings passes."""
    s = parse_scenario(loads(HUNG_AND_CUT_OFF), "M06")
    safe = scenario_config(s)
    assert not Simulation(s, 0, safe).run().violations
    unsafe = dataclasses.replace(safe, watchdog_timeout=30.0)
    result = Simulation(s, 0, unsafe).run()
    assert {"I1", "I6"} <= invariants(result), result.violations


def _break_the_toolstack(monkeypatch):
    """``xl destroy`` fails at once (say, xenopsd is wedged): DestroyGuests reports failure and
    every guest keeps running. Only the watchdog can end them now."""

    def failing(self, effect, generation, slot):
        self._later(generation, slot, 100_000_000,
                    GuestList(tuple(sorted(self.host.domains)), ok=False))
        return False, None

    monkeypatch.setattr(SimDaemon, "_destroy", failing)


def test_feeding_the_watchdog_without_a_lease_is_caught(monkeypatch):
    """Mutation: feed whatever the lease says. The cut-off master's self-fence fails, so only its
    watchdog can stop its guests; fed regardless, it never fires, and the survivor restarts a VM
    that still runs: I5 (fed after the lease), then I1. Unmutated, the same run is clean."""
    _break_the_toolstack(monkeypatch)
    s = scenario("N02-master-nic-down.toml")
    assert not Simulation(s, 0, scenario_config(s)).run().violations
    original = decide_module._watchdog

    def always_feed(config, s, f, mode, *rest):
        actions, intents = original(config, s, f, mode, *rest)
        if s.watchdog_armed and not actions:
            return (WatchdogControl("feed", int(config.watchdog_timeout), 1e18),), \
                decide_module.FEED
        return actions, intents

    monkeypatch.setattr(decide_module, "_watchdog", always_feed)
    result = Simulation(s, 0, scenario_config(s)).run()
    assert {"I5", "I1"} <= invariants(result), result.violations


def test_a_decision_on_reads_older_than_the_read_budget_is_caught(monkeypatch):
    """Mutation: decide on the reads of a round the daemon was stalled in (never read again).
    R005's survivor stalls 20 s right after it starts: I5."""
    import halizard.loop as loop
    from simulations.matrix import REGRESSIONS_DIR

    s = load_scenario(os.path.join(REGRESSIONS_DIR, "R005-daemon-stalled-right-after-start.toml"))
    assert not Simulation(s, 0, scenario_config(s)).run().violations
    templates = loop.read_templates
    monkeypatch.setattr(loop, "read_templates",
                        lambda config: dataclasses.replace(templates(config), read_budget=1e9))
    assert "I5" in invariants(Simulation(s, 0, scenario_config(s)).run())


def test_a_promotion_before_promote_delay_is_caught(monkeypatch):
    """Mutation: the slave promotes itself once the master has been silent for peer_timeout.
    xapi's own slowness to become master hides the two masters it risks; I7 sees the timing."""
    s = scenario("H02-master-crash.toml")
    assert not Simulation(s, 0, scenario_config(s)).run().violations
    monkeypatch.setattr(decide_module, "_may_claim_master",
                        lambda config, st, silence: silence >= config.peer_timeout)
    result = Simulation(s, 0, scenario_config(s)).run()
    assert "I7" in invariants(result), result.violations
    assert "promotes itself" in next(v.detail for v in result.violations if v.invariant == "I7")


def test_a_slave_that_fences_as_early_as_the_master_is_caught(monkeypatch):
    """Mutation: no tie-break delay for the slave. On N01 both fence each other at once; I7
    sees the slave's fence start before peer_timeout + fence_delay."""
    s = scenario("N01-link-down-fence-agent.toml")
    assert not Simulation(s, 0, scenario_config(s)).run().violations
    monkeypatch.setattr(decide_module, "_fence_due", lambda config, is_master: config.peer_timeout)
    result = Simulation(s, 0, scenario_config(s)).run()
    assert [v.host for v in result.violations if v.invariant == "I7"] == ["xs2"], \
        result.violations


def test_a_daemon_exception_is_reported_not_swallowed(monkeypatch):
    def broken(*args):
        raise RuntimeError("decision bug")

    monkeypatch.setattr("halizard.loop.decide", broken)
    s = scenario("H01-slave-crash.toml")
    result = Simulation(s, 0, scenario_config(s)).run()
    assert "BUG" in invariants(result)


def test_fences_are_classified():
    s = scenario("N02-master-nic-down.toml")
    result = Simulation(s, 0, scenario_config(s)).run()
    assert [(f.host, f.kind, f.verdict) for f in result.fences] == [("xs1", "self-fence", "justified")]
    assert result.margin is not None and result.margin > 0


@pytest.mark.parametrize("offset", range(0, 60, 4))
def test_crashing_the_survivor_between_any_two_effects_is_safe(offset):
    """systemd restarts a crashed daemon; wherever in the takeover it dies (between any two of
    its effects), no invariant breaks and the pool is restored within the bound."""
    s = scenario("H02-master-crash.toml")
    sim = Simulation(s, 1, scenario_config(s))
    survivor = sim.daemons["xs2"]

    def arm() -> None:
        survivor.crash_after = survivor.effects + offset

    sim.world.scheduler.at(67 * 1_000_000_000, arm)  # just before its promotion is due
    result = sim.run()
    assert not result.violations and not result.unmet, (result.violations, result.unmet)
    assert survivor.crash_after is None, "the crash point was never reached"


def test_runs_report_the_daemon_mode_transitions_they_exercised():
    """Coverage counters (issue 6): every transition a run makes is one of the table's, and a
    master crash exercises the survivor's path to takeover."""
    from halizard.core.state import TRANSITIONS
    from simulations.matrix import BUILTIN_DIR
    from simulations.runner import run_scenario
    from simulations.scenario import load_scenario

    table = {"%s -> %s" % (a.value, b.value) for a, bs in TRANSITIONS.items() for b in bs}
    result = run_scenario(load_scenario(os.path.join(BUILTIN_DIR, "H02-master-crash.toml")), 0)
    assert {"starting -> normal", "normal -> survivor", "survivor -> takeover"} <= result.transitions
    assert result.transitions <= table
    # and the other counters: the fault on the master, the paths the slave's takeover took
    assert {"fault host.crash on the master", "mode takeover", "path promotion",
            "path takeover", "path restart"} <= result.coverage
    assert result.transitions <= result.coverage
    assert not {"fault host.crash on the slave", "path self-fence", "path fence agent",
                "path watchdog reset"} & result.coverage
