"""Hypothesis explores fault schedules the named matrix did not think of.

Schedules are written in the public scenario format (so a failure is a scenario file), drawn
from a swarm-selected subset of the vocabulary, with onsets and durations placed just below and
just above every timing threshold. Safety must hold for every schedule; liveness is the named
matrix's job. The configuration has a fence agent: without one (or a second heartbeat path),
partitioning the two hosts is a documented unsafe topology (N01), not a bug to find.
"""
import os

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from simulations.runner import Simulation
from simulations.scenario import dump_scenario, parse_scenario
from simulations.schedules import (
    FENCE_AGENT,
    FENCE_AGENT_TABLE,
    GATEWAY_ONLY,
    GATEWAY_ONLY_KINDS,
    INSTANT,
    KINDS,
    LOSSES,
    NEEDS_DURATION,
    durations,
    fault,
    scenario,
    targets,
)

# `make test` replays the same examples every time (derandomized); `make explore` draws fresh
# ones (HALIZARD_EXPLORE=1) and as many as HALIZARD_PROPERTY_EXAMPLES says.
EXAMPLES = int(os.environ.get("HALIZARD_PROPERTY_EXAMPLES", "60"))
EXPLORE = os.environ.get("HALIZARD_EXPLORE") == "1"
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

CONFIG = FENCE_AGENT
DURATIONS = durations(CONFIG)


@st.composite
def schedules(draw):
    enabled = draw(st.sets(st.sampled_from(KINDS), min_size=1, max_size=4))  # swarm
    faults = []
    at = 30.0
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(enabled)))
        at += draw(st.integers(0, 40)) * 0.5
        target = draw(st.sampled_from(targets(kind)))
        loss = draw(st.sampled_from(LOSSES)) if kind == "link.loss" else None
        duration = None
        if kind not in INSTANT:
            permanent = kind not in NEEDS_DURATION and draw(st.booleans())
            if not permanent:
                duration = draw(st.sampled_from(DURATIONS))
        faults.append(fault(kind, target, at, duration, loss))
    master = draw(st.sampled_from(["xs1", "xs2"]))
    return scenario(faults, master, {"fence_agent": FENCE_AGENT_TABLE["fence_agent"]}), \
        draw(st.integers(0, 2 ** 16))


@PROPERTY
@given(schedules())
def test_safety_holds_for_any_schedule(case):
    _assert_safe(case, CONFIG)


def _assert_safe(case, config):
    """Run one generated schedule; a failure shows the schedule as a scenario file and the seed."""
    data, seed = case
    scenario = parse_scenario(data, "generated.toml")
    note(dump_scenario(scenario))
    note("seed %d" % seed)
    result = Simulation(scenario, seed, config).run()
    assert not result.violations, result.violations


@st.composite
def gateway_only_schedules(draw):
    """The default configuration (no fence agent, one heartbeat path) with the faults its
    topology assumption allows: anything but a partition that leaves both hosts seeing the
    gateway (link.down / link.oneway), which validation warns about."""
    data, seed = draw(schedules())
    kinds = draw(st.sets(st.sampled_from(GATEWAY_ONLY_KINDS), min_size=1, max_size=3))
    for f in data["fault"]:
        if f["kind"] not in GATEWAY_ONLY_KINDS:
            f["kind"] = draw(st.sampled_from(sorted(kinds)))
            f["target"] = draw(st.sampled_from(targets(f["kind"])))
            f.pop("loss", None)
            if f["kind"] in INSTANT:
                f.pop("duration", None)
            elif f["kind"] in NEEDS_DURATION and "duration" not in f:
                f["duration"] = "5s"
    data["config"] = {}
    return data, seed


@PROPERTY
@given(gateway_only_schedules())
def test_safety_holds_without_a_fence_agent(case):
    _assert_safe(case, GATEWAY_ONLY)
