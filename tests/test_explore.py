"""Exploration: the one schedule generator and its three choosers, the explorer (shrinking,
regression files, `halizard simulate --explore`)."""
import itertools
import os
import re
import subprocess
import sys

import pytest

from halizard.toml import dumps
from simulations.explore import (
    SHRINK_BUDGET,
    Plan,
    next_regression_id,
    problems,
    regressions_dir,
    run_plan,
    run_schedules,
    shrink,
)
from simulations.matrix import REGRESSIONS_DIR
from simulations.mutants import apply, by_name
from simulations.runner import Simulation, run_duration, run_scenario
from simulations.scenario import load_scenario, parse_scenario
from simulations.schedules import (
    FENCE_AGENT_VARIANT,
    FIRST_ONSET,
    GATEWAY_ONLY_VARIANT,
    INSTANT,
    KINDS,
    NEEDS_DURATION,
    HypothesisChooser,
    Schedule,
    Space,
    Spec,
    edges,
    every_schedule,
    fault_spec,
    hypothesis_schedules,
    random_schedules,
    random_space,
    scenario,
    single_fault_space,
    targets,
    two_fault_space,
)

pytest.importorskip("hypothesis")  # not on the dom0 interpreter (Python 3.6)
from hypothesis import HealthCheck, Phase, event, find, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- the generator ------------------------------------------------------------------------------


def _atoms(space):
    """How many ways one fault can be written in ``space`` (kind, target, value, duration)."""
    count = 0
    for kind in space.kinds:
        spans = 1 if kind in INSTANT else len(space.durations) + (kind not in NEEDS_DURATION)
        values = {"link.loss": len(space.losses), "clock.jump": len(space.jumps)}.get(kind, 1)
        count += len(targets(kind)) * values * spans
    return count


def test_exhaustive_enumeration_writes_every_schedule_of_the_grid_once():
    for variant in (FENCE_AGENT_VARIANT, GATEWAY_ONLY_VARIANT):
        for space in (single_fault_space(variant), two_fault_space(variant)):
            schedules = list(every_schedule(space))
            atoms = _atoms(space)
            expected = len(space.onsets) * atoms ** space.counts[0] * len(space.gaps) ** (
                space.counts[0] - 1)
            assert len(schedules) == expected
            assert len(set(schedules)) == expected
    assert sum(1 for _ in every_schedule(two_fault_space(FENCE_AGENT_VARIANT))) == 28125
    assert sum(1 for _ in every_schedule(two_fault_space(GATEWAY_ONLY_VARIANT))) == 13005


def test_exhaustive_walk_covers_a_dependent_choice_tree():
    tiny = Space(GATEWAY_ONLY_VARIANT, GATEWAY_ONLY_VARIANT.kinds, (1, 2), (30.0,), (0.5, 1.0),
                 (3.0,), (0.3,), swarm=0, masters=("xs1", "xs2"), seeds=2)
    schedules = list(every_schedule(tiny))
    atoms = _atoms(tiny)
    assert len(schedules) == (atoms + atoms * atoms * 2) * 2 * 2
    assert len(set(schedules)) == len(schedules)


def test_single_faults_straddle_every_edge_at_two_phases():
    schedules = list(every_schedule(single_fault_space(FENCE_AGENT_VARIANT)))
    assert len(schedules) == 1000
    faults = [s.faults[0] for s in schedules]
    assert {f.kind for f in faults} == set(KINDS)
    assert {f.at for f in faults} == {FIRST_ONSET, FIRST_ONSET + 0.5}
    lengths = {f.duration for f in faults}
    for edge in edges(FENCE_AGENT_VARIANT.config):
        assert any(d is not None and edge - 0.15 < d < edge for d in lengths), edge
        assert any(d is not None and edge < d < edge + 0.15 for d in lengths), edge
    assert None in lengths  # for good


def test_random_schedules_use_the_whole_vocabulary_a_few_kinds_at_a_time():
    space = random_space(FENCE_AGENT_VARIANT)
    schedules = list(random_schedules(space, seed=1, count=600))
    assert schedules == list(random_schedules(space, seed=1, count=600))  # seeded
    assert schedules != list(random_schedules(space, seed=2, count=600))
    faults = [f for s in schedules for f in s.faults]
    assert {f.kind for f in faults} == set(KINDS)
    assert {len(s.faults) for s in schedules} == {1, 2, 3}
    assert {s.master for s in schedules} == {"xs1", "xs2"}
    # swarm: repeating a kind (flapping, repeated crashes) is common: about 280 of 600 here,
    # where choosing each fault's kind from all fifteen gives about 50
    assert sum(1 for s in schedules if len({f.kind for f in s.faults}) < len(s.faults)) > 150
    lengths = {f.duration for f in faults}
    for edge in edges(FENCE_AGENT_VARIANT.config):
        assert any(d is not None and edge - 0.15 < d < edge for d in lengths), edge
        assert any(d is not None and edge < d < edge + 0.15 for d in lengths), edge
    gaps = {round(b.at - a.at, 1) for s in schedules for a, b in zip(s.faults, s.faults[1:])}
    assert {3.9, 4.1, 11.9, 12.1} <= gaps  # onsets just before and after an edge, too


def test_without_a_fence_agent_no_partition_that_leaves_both_hosts_the_gateway():
    for space in (random_space(GATEWAY_ONLY_VARIANT), two_fault_space(GATEWAY_ONLY_VARIANT)):
        kinds = {f.kind for s in itertools.islice(random_schedules(space, 3, 400), 400)
                 for f in s.faults}
        assert not kinds & {"link.down", "link.oneway", "link.loss", "fence.unreachable"}
        assert "gw.down" in kinds
        assert all(s.config == () for s in random_schedules(space, 3, 20))
    assert all(dict(s.config) == {"fence_agent": "fence_ipmilan"}
               for s in random_schedules(random_space(FENCE_AGENT_VARIANT), 3, 20))


def test_hypothesis_shrinks_through_the_generator():
    """Hypothesis as the chooser: the smallest schedule that ends with a freeze after another
    fault has one kind enabled (the swarm shrinks too), two faults at the earliest onset, on
    the first target, the shortest duration, the first master and seed 0."""
    space = random_space(FENCE_AGENT_VARIANT)
    smallest = find(hypothesis_schedules(space),
                    lambda s: len(s.faults) > 1 and s.faults[-1].kind == "host.freeze",
                    settings=settings(database=None, derandomize=True, max_examples=2000))
    assert [(f.kind, f.target) for f in smallest.faults] == [("host.freeze", "xs1")] * 2
    assert smallest.faults[0].at == FIRST_ONSET and smallest.faults[1].at == FIRST_ONSET
    assert smallest.faults[1].duration == space.durations[0]
    assert smallest.seed == 0 and smallest.master == "xs1"


# --- the explorer: shrinking, regression files, the command ------------------------------------


def test_shrinking_keeps_only_what_the_failure_needs():
    """Greedy shrinking against a known rule (a crash of at least 5 s breaks it): one fault, the
    shortest duration that still breaks, the earliest onset, a seed the matrix replays."""
    space = random_space(FENCE_AGENT_VARIANT)
    big = Schedule((Spec("nic.down", "xs2", 31.0, 30.0), Spec("host.crash", "xs1", 45.5),
                    Spec("gw.down", "gw", 60.0, 3.1)), "xs2", 4242, FENCE_AGENT_VARIANT.table)
    calls = []

    def fails(s):
        calls.append(s)
        return any(f.kind == "host.crash" and (f.duration is None or f.duration >= 5.0)
                   for f in s.faults)

    small = shrink(big, fails, space)
    assert small == Schedule((Spec("host.crash", "xs1", FIRST_ONSET, 5.1),), "xs2", 0,
                             FENCE_AGENT_VARIANT.table)
    assert len(calls) < SHRINK_BUDGET
    assert shrink(big, lambda s: True, space, budget=3) != big  # the budget bounds the runs


def test_shrinking_moves_the_whole_schedule_earlier_keeping_its_gaps():
    space = random_space(GATEWAY_ONLY_VARIANT)
    pair = Schedule((Spec("host.crash", "xs1", 41.0, 30.0), Spec("nic.down", "xs2", 48.6, 3.1)),
                    "xs1", 3, ())

    def fails(s):  # breaks only with both faults, 7.6 s apart, the second at least 3 s long
        return len(s.faults) == 2 and round(s.faults[1].at - s.faults[0].at, 1) == 7.6 \
            and (s.faults[1].duration or 99) >= 3.0

    small = shrink(pair, fails, space)
    assert [(f.at, f.duration) for f in small.faults] == [(FIRST_ONSET, 0.5), (37.6, 3.1)]


def test_a_run_that_raises_is_a_problem_not_a_hung_pool():
    bad = Schedule((Spec("link.oneway", "xs1", 30.0, 1.0),), "xs1", 0, ())  # not a link
    good = Schedule((Spec("nic.down", "xs1", 30.0, 1.0),), "xs1", 0, ())
    outcomes = list(run_schedules([bad, good], workers=2))
    assert [o.problems[0].rule if o.problems else None for o in outcomes] == ["error", None]


def test_regression_ids_continue_the_highest_number(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "R003-x.toml").write_text("")
    (second / "R017-y.toml").write_text("")
    (second / "README.md").write_text("")
    assert next_regression_id([str(first)]) == "R004"
    assert next_regression_id([str(first), str(second)]) == "R018"
    assert next_regression_id([str(tmp_path / "none")]) == "R001"


def test_failures_are_saved_outside_the_repository_unless_exploring(monkeypatch):
    monkeypatch.delenv("HALIZARD_REGRESSIONS", raising=False)
    monkeypatch.delenv("HALIZARD_EXPLORE", raising=False)
    assert not regressions_dir().startswith(ROOT)
    monkeypatch.setenv("HALIZARD_EXPLORE", "1")
    assert regressions_dir() == REGRESSIONS_DIR
    assert regressions_dir("/elsewhere") == "/elsewhere"


def test_a_failure_is_shrunk_printed_saved_and_replays(tmp_path):
    """Under a mutant that takes over before the peer's self-fence deadline, the explorer finds
    a violation, shrinks it, prints the scenario file, its seed and the replay command, and
    saves it as the next Rnnn file; the file replays the violation under the mutant only."""
    lines = []
    plan = Plan("random", "gateway-only", None, 40, 0, 1, str(tmp_path))
    undo = apply(by_name("takeover-before-self-fence"))
    try:
        result = run_plan(plan, lines.append)
        saved = sorted(tmp_path.iterdir())
        assert result.failed and result.finding is not None and len(saved) == 1
        replayed = run_scenario(load_scenario(str(saved[0])), result.finding.minimal.seed)
        assert result.finding.problem in problems(replayed)
    finally:
        undo()
    text = "\n".join(lines)
    seed = result.finding.minimal.seed
    assert re.match(r"R\d{3}-i\d-", saved[0].name)
    assert "40 schedules in" in text and "schedules/s" in text
    assert "violations: %d" % result.failed in text
    assert saved[0].read_text().rstrip() in text
    assert "\nseed %d\n" % seed in text
    assert "replay: python -m halizard simulate %s --seed %d" % (saved[0], seed) in text
    assert len(result.finding.minimal.faults) <= len(result.finding.found.faults)
    assert run_scenario(load_scenario(str(saved[0])), seed).passed


def halizard(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "halizard"] + list(args), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def test_the_explore_command_reports_its_rate_and_violations():
    out = halizard("simulate", "--explore", "random", "--count", "24", "--jobs", "2",
                   "--config-variant", "gateway-only", "--seed", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"24 schedules in [\d.]+s, [\d.]+ schedules/s \(2 workers\)", out.stdout)
    assert "violations: 0" in out.stdout


def test_the_explore_command_refuses_what_it_cannot_do():
    out = halizard("simulate", "--explore", "exhaustive", "--faults", "3")
    assert out.returncode == 2 and "one or two faults" in out.stderr
    out = halizard("simulate", "--explore", "random", "--json")
    assert out.returncode == 2 and "--json cannot be used" in out.stderr


# --- faults injected at a daemon's moment ---------------------------------------------------------

HOSTS = ("xs1", "xs2")
# The moments worth a fault: a survivor that starts waiting or takes over, an isolated host that
# starts its self-fence, a self-fenced host that rejoins, a host that starts shutting down.
MOMENTS = ("survivor", "takeover", "isolated", "self-fenced", "rejoining", "normal")
WAIT = 60.0  # the longest a rule waits for its moment (simulated seconds)
SETTLE = 150.0  # after the last rule: time for the pool to settle, safety still checked


def _quiet(variant, master):
    """A pool with no scheduled faults: the rules inject them."""
    return parse_scenario(Schedule((), master, 0, variant.table).scenario("STEP"), "stepwise")


def _as_fault(spec):
    return parse_scenario(scenario([spec.table()]), "injected").faults[0]


def _entered(sim, hosts, modes):
    """A condition that holds once one of ``hosts`` has changed into one of ``modes``; the
    list ``entered`` says which mode it was."""
    seen = {host: sim.mode(host) for host in hosts}

    def condition():
        before = dict(seen)
        seen.update((host, sim.mode(host)) for host in hosts)
        condition.entered = [seen[h] for h in hosts if seen[h] in modes and before[h] != seen[h]]
        return bool(condition.entered)

    return condition


def test_stepwise_run_is_the_same_run():
    """Advancing in steps and finishing gives exactly the run that run() gives."""
    data = Schedule((Spec("host.crash", "xs1", 30.0),), "xs1", 7, ()).scenario("H")
    whole = Simulation(parse_scenario(data, "h"), 7, GATEWAY_ONLY_VARIANT.config).run()
    sim = Simulation(parse_scenario(data, "h"), 7, GATEWAY_ONLY_VARIANT.config)
    sim.advance(31.0)
    while sim.step() and sim.now < 40.0:
        pass
    end = run_duration(sim.scenario, sim.config)
    sim.advance(end)
    stepped = sim.finish(end)
    assert (stepped.trace_hash, stepped.events) == (whole.trace_hash, whole.events)


def test_a_fault_lands_at_the_moment_a_survivor_takes_over():
    """The master crashes; the moment xs2 enters takeover, its own NIC goes down. The onset is
    that moment (a microsecond later), and the run is still safe: xs2 stops acting as soon as
    its lease runs out, and nobody is left to run the VMs."""
    sim = Simulation(_quiet(GATEWAY_ONLY_VARIANT, "xs1"), 3, GATEWAY_ONLY_VARIANT.config)
    sim.advance(FIRST_ONSET)
    sim.inject(_as_fault(Spec("host.crash", "xs1", sim.now)))
    assert sim.advance_until(_entered(sim, ["xs2"], ["takeover"]), WAIT)
    moment = sim.now
    assert 10.0 < moment - FIRST_ONSET < 14.0  # takeover_delay after the last contact
    sim.inject(_as_fault(Spec("nic.down", "xs2", moment + 1e-6)))
    assert sim.advance_until(_entered(sim, ["xs2"], ["isolated"]), WAIT)
    sim.advance(sim.now + SETTLE)
    result = sim.finish(sim.now)
    assert not result.violations
    assert "takeover -> isolated" in result.transitions or "survivor -> isolated" in \
        result.transitions


class FaultsAtMoments(RuleBasedStateMachine):
    """Steps a simulated pool forward and injects faults when a chosen daemon enters a chosen
    mode (the moment a survivor takes over, the moment an isolated host starts its
    self-fence...), or after a chosen wait. The invariants (I1-I6) are checked after every
    event; the machine asserts none broke after every step and after a last settling stretch.
    A failure notes the injected faults as a scenario file (onsets to the microsecond, just
    after the moment's events) and the seed: `halizard simulate FILE --seed S` replays it."""

    @initialize(variant=st.sampled_from([FENCE_AGENT_VARIANT, GATEWAY_ONLY_VARIANT]),
                master=st.sampled_from(HOSTS), seed=st.integers(0, 2 ** 16), data=st.data())
    def start(self, variant, master, seed, data):
        """A pool that settles, then a first fault: the daemons' moments follow from it."""
        self.variant, self.seed, self.master = variant, seed, master
        self.space = random_space(variant)
        self.sim = Simulation(_quiet(variant, master), seed, variant.config)
        self.injected = []
        self.sim.advance(FIRST_ONSET)
        self._inject(data.draw(_faults(self.space)))

    def _inject(self, draw_fault):
        spec = draw_fault._replace(at=round(self.sim.now + 1e-6, 6))
        self.injected.append(spec)
        self.sim.inject(_as_fault(spec))

    @rule(data=st.data())
    def inject_now(self, data):
        self._inject(data.draw(_faults(self.space)))

    @rule(mode=st.sampled_from(MOMENTS), data=st.data())
    def inject_when_a_daemon_enters(self, mode, data):
        """Wait (at most a minute) for a daemon to enter ``mode``; a fault at that instant."""
        self._at_moment([mode], data)

    @rule(data=st.data())
    def inject_at_the_next_moment(self, data):
        """Wait for the next daemon to enter any of the moments; a fault at that instant."""
        self._at_moment(MOMENTS, data)

    def _at_moment(self, modes, data):
        entered = _entered(self.sim, HOSTS, modes)
        if self.sim.advance_until(entered, WAIT):
            event("a fault as a daemon entered " + entered.entered[0])
            self._inject(data.draw(_faults(self.space)))

    @rule(seconds=st.sampled_from((0.5, 2.9, 4.1, 7.6, 12.1, 30.0)))
    def wait(self, seconds):
        self.sim.advance(self.sim.now + seconds)

    @invariant()
    def safe(self):
        if getattr(self, "sim", None) is not None:
            self._assert_safe()

    def teardown(self):
        if getattr(self, "sim", None) is not None:
            self.sim.advance(self.sim.now + SETTLE)
            self._assert_safe()

    def _assert_safe(self):
        violations = self.sim.checker.violations
        if violations:
            schedule = Schedule(tuple(self.injected), self.master, self.seed, self.variant.table)
            note(dumps(schedule.scenario("STEP"), arrays_of_tables=("fault",)))
            note("seed %d" % self.seed)
        assert not violations, violations


def _faults(space):
    return st.composite(lambda draw: fault_spec(HypothesisChooser(draw), space, space.kinds,
                                                FIRST_ONSET))()


FaultsAtMoments.TestCase.settings = settings(
    max_examples=int(os.environ.get("HALIZARD_STATEFUL_EXAMPLES", "200")),
    stateful_step_count=8, deadline=None, database=None,
    derandomize=os.environ.get("HALIZARD_EXPLORE") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_faults_at_moments = FaultsAtMoments.TestCase


@pytest.mark.parametrize("mutant", ["takeover-before-self-fence", "feed-without-lease"])
def test_the_machine_catches_a_broken_core(mutant):
    """Under a mutant the machine fails, and the faults it injected are noted as a scenario
    file with the seed (shrinking left out, for time)."""
    # feed-without-lease needs 60 to 100 examples here; the budget leaves room for a
    # different (still derandomized) sequence elsewhere: CI once missed it at 100.
    quick = settings(FaultsAtMoments.TestCase.settings, max_examples=400, derandomize=True,
                     phases=[Phase.generate])
    undo = apply(by_name(mutant))
    try:
        with pytest.raises(AssertionError) as failure:
            run_state_machine_as_test(FaultsAtMoments, settings=quick)
    finally:
        undo()
    printed = "\n".join(getattr(failure.value, "__notes__", []))
    assert "[[fault]]" in printed and re.search(r"\nseed \d+", printed)
