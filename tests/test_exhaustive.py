"""Every single-fault schedule on a coarse grid, written by the one schedule generator walking
every choice (simulations.schedules.every_schedule over single_fault_space): each fault kind on
each target, at two phases of the probe cycle, lasting just below and just above every timing
edge and for good; clock jumps either way. Safety must hold in all of them, with a fence agent
and without, and what each schedule's expectations ask (simulations.schedules.expectations):
liveness once the fault has healed, no unjustified fence after a transient below the tolerance
of its kind."""
from simulations.explore import problems
from simulations.matrix import run_matrix
from simulations.scenario import dump_scenario, parse_scenario
from simulations.schedules import (
    FENCE_AGENT_VARIANT,
    GATEWAY_ONLY_VARIANT,
    every_schedule,
    single_fault_space,
)


def _run_all(variant):
    scenarios = [parse_scenario(s.scenario("S%04d" % i), "single")
                 for i, s in enumerate(every_schedule(single_fault_space(variant)))]
    summaries, _ = run_matrix(scenarios, seed=0)
    failures = ["%s\n%s" % ("; ".join(p.describe() for p in problems(run)),
                            dump_scenario(s.scenario))
                for s in summaries for run in s.runs if not run.passed]
    return len(scenarios), failures


def test_every_single_fault_is_safe_with_a_fence_agent():
    count, failures = _run_all(FENCE_AGENT_VARIANT)
    assert count == 1000
    assert not failures, "%d of %d unsafe; the first:\n%s" % (len(failures), count, failures[0])


def test_every_single_fault_is_safe_without_one():
    count, failures = _run_all(GATEWAY_ONLY_VARIANT)
    assert count == 552
    assert not failures, "%d of %d unsafe; the first:\n%s" % (len(failures), count, failures[0])
