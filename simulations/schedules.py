"""Fault schedules for exploration: the vocabulary, the threshold-adjacent durations, and the
scenario a schedule becomes. Hypothesis (tests/test_properties.py) draws from these; the
exhaustive enumeration below walks them on a coarse grid.

A schedule is written in the public scenario format, so any failure is a scenario file. Safety
must hold for every schedule (liveness is the named matrix's job): the expectations are only
that no invariant breaks.
"""
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set

from halizard.core.config import Config, load_config
from halizard.core.timing import bounds
from simulations.runner import BUILTIN_CONFIG

FENCE_AGENT_TABLE: Dict[str, Any] = dict(BUILTIN_CONFIG, fence_agent="fence_ipmilan")
FENCE_AGENT = load_config(FENCE_AGENT_TABLE).config
GATEWAY_ONLY = load_config(BUILTIN_CONFIG).config

HOST_FAULTS = ("host.crash", "host.reboot", "host.freeze", "host.shutdown", "nic.down",
               "gw.block", "xapi.hang", "xapi.restart", "daemon.crash", "daemon.stall",
               "fence.unreachable")
OTHER_FAULTS = ("link.down", "link.oneway", "gw.down", "link.loss")
KINDS = HOST_FAULTS + OTHER_FAULTS
INSTANT = ("host.reboot", "daemon.crash")
NEEDS_DURATION = ("host.freeze", "daemon.stall")
# Without a fence agent or a second heartbeat path, a partition that leaves both hosts seeing
# the gateway is the documented unsafe topology (N01), not a bug to find.
GATEWAY_ONLY_KINDS = tuple(k for k in HOST_FAULTS if k != "fence.unreachable") + ("gw.down",)
LOSSES = (0.3, 0.7, 1.0)
FIRST_ONSET = 30.0
VMS = [{"name": "vm-a", "host": "xs1", "restart": "restart"},
       {"name": "vm-b", "host": "xs2", "restart": "restart"},
       {"name": "vm-c", "host": "xs2", "restart": "best-effort"}]


def edges(config: Config) -> List[float]:
    """Every tolerance and delay of ``config``: where a fault's length changes the outcome."""
    b = bounds(config)
    return sorted({b.isolation_tolerance, b.freeze_tolerance, config.lease_timeout,
                   config.watchdog_timeout, config.peer_timeout, config.promote_delay,
                   config.takeover_delay, config.peer_timeout + config.fence_delay})


def _around_edges(config: Config) -> Set[float]:
    """Just below and just above every edge (0.1 s either side)."""
    return {round(d + e, 1) for d in edges(config) for e in (-0.1, 0.1)}


def durations(config: Config) -> List[float]:
    """Durations just below and just above every edge, plus a short and two long ones."""
    return sorted(_around_edges(config) | {0.5, 30.0, 90.0})


def targets(kind: str) -> List[str]:
    if kind in HOST_FAULTS:
        return ["xs1", "xs2"]
    if kind == "link.oneway":
        return ["xs1>xs2", "xs2>xs1"]
    if kind == "gw.down":
        return ["gw"]
    if kind == "link.loss":
        return ["xs1-xs2", "xs1-gw", "xs2-gw"]
    return ["xs1-xs2"]


def fault(kind: str, target: str, at: float, duration: Optional[float],
          loss: Optional[float] = None) -> Dict[str, Any]:
    """One [[fault]] table. ``duration`` None: permanent (or instant, for instant kinds)."""
    table: Dict[str, Any] = {"at": "%gs" % at, "kind": kind, "target": target}
    if loss is not None:
        table["loss"] = loss
    if duration is not None and kind not in INSTANT:
        table["duration"] = "%gs" % duration
    return table


def scenario(faults: Sequence[Mapping[str, Any]], master: str = "xs1",
             config: Optional[Mapping[str, Any]] = None, name: str = "PROP") -> Dict[str, Any]:
    """The scenario (as a TOML table) for a schedule: three VMs, safety expectations only."""
    last = max([_seconds(f["at"]) + _seconds(f.get("duration", "0s")) for f in faults]
               or [FIRST_ONSET])
    return {
        "id": name,
        "title": "generated schedule",
        "cluster": {"hosts": ["xs1", "xs2"], "master": master, "vms": [dict(v) for v in VMS]},
        "config": dict(config or {}),
        "sweep": {"duration": "%gs" % (last + 150.0)},
        "fault": [dict(f) for f in faults],
        "expect": {"liveness_bound": "none", "unjustified_fences": 99},
    }


def _seconds(text: str) -> float:
    return float(text[:-1])


def single_faults(kinds: Sequence[str], config: Config, onsets: Sequence[float] = (30.0, 30.5)
                  ) -> Iterator[List[Dict[str, Any]]]:
    """Every one-fault schedule on a coarse grid: each kind on each target, at each onset (two
    phases of the probe cycle), lasting just below and just above each edge of ``config`` and
    for good (where a kind can last)."""
    lengths: List[Optional[float]] = list(sorted(_around_edges(config) | {30.0}))
    for kind in kinds:
        spans: List[Optional[float]]
        if kind in INSTANT:
            spans = [None]
        elif kind in NEEDS_DURATION:
            spans = list(lengths)
        else:
            spans = lengths + [None]
        for target in targets(kind):
            for loss in (LOSSES if kind == "link.loss" else (None,)):
                for at in onsets:
                    for span in spans:
                        yield [fault(kind, target, at, span, loss)]
