"""Every single-fault schedule on a coarse grid (simulations.schedules.single_faults): each fault
kind on each target, at two phases of the probe cycle, lasting just below and just above every
timing edge and for good. Safety must hold in all of them, with a fence agent and without."""
from simulations.matrix import run_matrix
from simulations.scenario import dump_scenario, parse_scenario
from simulations.schedules import (
    FENCE_AGENT,
    FENCE_AGENT_TABLE,
    GATEWAY_ONLY,
    GATEWAY_ONLY_KINDS,
    KINDS,
    scenario,
    single_faults,
)


def _run_all(kinds, config, config_table):
    scenarios = [parse_scenario(scenario(faults, "xs1", config_table, "S%04d" % i), "single")
                 for i, faults in enumerate(single_faults(kinds, config))]
    summaries, _ = run_matrix(scenarios, seed=0)
    failures = ["%s\n%s" % ("; ".join("%s %s" % (v.invariant, v.detail) for v in run.violations),
                            dump_scenario(s.scenario))
                for s in summaries for run in s.runs if run.violations]
    return len(scenarios), failures


def test_every_single_fault_is_safe_with_a_fence_agent():
    count, failures = _run_all(KINDS, FENCE_AGENT,
                               {"fence_agent": FENCE_AGENT_TABLE["fence_agent"]})
    assert count > 800
    assert not failures, "%d of %d unsafe; the first:\n%s" % (len(failures), count, failures[0])


def test_every_single_fault_is_safe_without_one():
    count, failures = _run_all(GATEWAY_ONLY_KINDS, GATEWAY_ONLY, {})
    assert count > 400
    assert not failures, "%d of %d unsafe; the first:\n%s" % (len(failures), count, failures[0])
