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

from halizard.core.config import load_config
from halizard.core.timing import bounds
from simulations.runner import BUILTIN_CONFIG, Simulation
from simulations.scenario import dump_scenario, parse_scenario

# `make test` replays the same examples every time (derandomized); `make explore` draws fresh
# ones (HALIZARD_EXPLORE=1) and as many as HALIZARD_PROPERTY_EXAMPLES says.
EXAMPLES = int(os.environ.get("HALIZARD_PROPERTY_EXAMPLES", "60"))
EXPLORE = os.environ.get("HALIZARD_EXPLORE") == "1"
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

CONFIG_TABLE = dict(BUILTIN_CONFIG, fence_agent="fence_ipmilan")
CONFIG = load_config(CONFIG_TABLE).config
B = bounds(CONFIG)

# Threshold-adjacent durations (seconds): every tolerance and delay, 0.1 s either side.
_EDGES = sorted({B.isolation_tolerance, B.freeze_tolerance, CONFIG.lease_timeout,
                 CONFIG.watchdog_timeout, CONFIG.peer_timeout, CONFIG.promote_delay,
                 CONFIG.takeover_delay, CONFIG.peer_timeout + CONFIG.fence_delay})
DURATIONS = sorted({round(d + e, 1) for d in _EDGES for e in (-0.1, 0.1)} | {0.5, 30.0, 90.0})

HOST_FAULTS = ("host.crash", "host.reboot", "host.freeze", "host.shutdown", "nic.down",
               "gw.block", "xapi.hang", "xapi.restart", "daemon.crash", "daemon.stall",
               "fence.unreachable")
OTHER_FAULTS = ("link.down", "link.oneway", "gw.down", "link.loss")
KINDS = HOST_FAULTS + OTHER_FAULTS
INSTANT = ("host.reboot", "daemon.crash")
NEEDS = ("host.freeze", "daemon.stall")


@st.composite
def schedules(draw):
    enabled = draw(st.sets(st.sampled_from(KINDS), min_size=1, max_size=4))  # swarm
    faults = []
    at = 30.0
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(enabled)))
        at += draw(st.integers(0, 40)) * 0.5
        fault = {"at": "%gs" % at, "kind": kind}
        if kind in HOST_FAULTS:
            fault["target"] = draw(st.sampled_from(["xs1", "xs2"]))
        elif kind == "link.oneway":
            fault["target"] = draw(st.sampled_from(["xs1>xs2", "xs2>xs1"]))
        elif kind == "gw.down":
            fault["target"] = "gw"
        else:
            fault["target"] = draw(st.sampled_from(["xs1-xs2", "xs1-gw", "xs2-gw"])) \
                if kind == "link.loss" else "xs1-xs2"
        if kind == "link.loss":
            fault["loss"] = draw(st.sampled_from([0.3, 0.7, 1.0]))
        if kind not in INSTANT:
            permanent = kind not in NEEDS and draw(st.booleans())
            if not permanent:
                fault["duration"] = "%gs" % draw(st.sampled_from(DURATIONS))
        faults.append(fault)
    return {
        "id": "PROP",
        "title": "generated schedule",
        "cluster": {
            "hosts": ["xs1", "xs2"],
            "master": draw(st.sampled_from(["xs1", "xs2"])),
            "vms": [{"name": "vm-a", "host": "xs1", "restart": "restart"},
                    {"name": "vm-b", "host": "xs2", "restart": "restart"},
                    {"name": "vm-c", "host": "xs2", "restart": "best-effort"}],
        },
        "config": {"fence_agent": "fence_ipmilan"},
        "sweep": {"duration": "%gs" % (at + 150.0)},
        "fault": faults,
        "expect": {"liveness_bound": "none", "unjustified_fences": 99},
    }, draw(st.integers(0, 2 ** 16))


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


GATEWAY_ONLY_KINDS = tuple(k for k in HOST_FAULTS if k != "fence.unreachable") + ("gw.down",)


@st.composite
def gateway_only_schedules(draw):
    """The default configuration (no fence agent, one heartbeat path) with the faults its
    topology assumption allows: anything but a partition that leaves both hosts seeing the
    gateway (link.down / link.oneway), which validation warns about."""
    data, seed = draw(schedules())
    kinds = draw(st.sets(st.sampled_from(GATEWAY_ONLY_KINDS), min_size=1, max_size=3))
    for fault in data["fault"]:
        if fault["kind"] not in GATEWAY_ONLY_KINDS:
            fault["kind"] = draw(st.sampled_from(sorted(kinds)))
            fault["target"] = "gw" if fault["kind"] == "gw.down" else draw(
                st.sampled_from(["xs1", "xs2"]))
            fault.pop("loss", None)
            if fault["kind"] in INSTANT:
                fault.pop("duration", None)
            elif fault["kind"] in NEEDS and "duration" not in fault:
                fault["duration"] = "5s"
    data["config"] = {}
    return data, seed


DEFAULT = load_config(BUILTIN_CONFIG).config


@PROPERTY
@given(gateway_only_schedules())
def test_safety_holds_without_a_fence_agent(case):
    _assert_safe(case, DEFAULT)
