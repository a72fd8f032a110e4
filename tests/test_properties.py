"""Hypothesis explores fault schedules the named matrix did not think of.

The schedules come from the one generator (simulations.schedules.generate) with Hypothesis as
its chooser, so a failure shrinks choice by choice: swarm-selected fault kinds, onsets and
durations just below and just above every timing threshold. Safety must hold for every schedule;
liveness is the named matrix's job. Two configurations: with a fence agent every fault kind is
fair game; without one (the default, one heartbeat path) a partition that leaves both hosts
seeing the gateway is the documented unsafe topology (N01), not a bug to find.
"""
import os

from hypothesis import HealthCheck, given, note, settings

from simulations.runner import run_scenario
from simulations.scenario import dump_scenario, parse_scenario
from simulations.schedules import (
    FENCE_AGENT_VARIANT,
    GATEWAY_ONLY_VARIANT,
    hypothesis_schedules,
    random_space,
)

# `make test` replays the same examples every time (derandomized); `make explore` draws fresh
# ones (HALIZARD_EXPLORE=1) and as many as HALIZARD_PROPERTY_EXAMPLES says.
EXAMPLES = int(os.environ.get("HALIZARD_PROPERTY_EXAMPLES", "60"))
EXPLORE = os.environ.get("HALIZARD_EXPLORE") == "1"
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(hypothesis_schedules(random_space(FENCE_AGENT_VARIANT)))
def test_safety_holds_for_any_schedule(schedule):
    _assert_safe(schedule)


@PROPERTY
@given(hypothesis_schedules(random_space(GATEWAY_ONLY_VARIANT)))
def test_safety_holds_without_a_fence_agent(schedule):
    _assert_safe(schedule)


def _assert_safe(schedule):
    """Run one generated schedule; a failure shows the schedule as a scenario file and the seed."""
    scenario = parse_scenario(schedule.scenario(), "generated.toml")
    note(dump_scenario(scenario))
    note("seed %d" % schedule.seed)
    result = run_scenario(scenario, schedule.seed)
    assert not result.violations, result.violations
