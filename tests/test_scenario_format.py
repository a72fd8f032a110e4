"""The scenario format is a public interface: the example of SCENARIO-FORMAT.md must load as
written, mistakes must be errors naming the file and key, and dumping must round-trip."""
import os

import pytest

from halizard.toml import loads
from simulations.scenario import (
    KINDS,
    ScenarioError,
    dump_scenario,
    find_scenarios,
    load_scenario,
    parse_scenario,
)

pytestmark = pytest.mark.runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_FORMAT = os.path.join(ROOT, "..", "shared", "SCENARIO-FORMAT.md")

PINNED_EXAMPLE = '''
id = "N02"
title = "Master management NIC down"
tags = ["network", "isolation"]

[cluster]
hosts = ["xs1", "xs2"]
master = "xs1"
vms = [
  { name = "vm-a", host = "xs1", restart = "restart" },
  { name = "vm-b", host = "xs2", restart = "best-effort" },
  { name = "vm-c", host = "xs2", restart = "never" },
]

[config]

[sweep]
seeds = 20
duration = "10m"

[[fault]]
at = "60s"
kind = "nic.down"
target = "xs1"
duration = "permanent"

[expect]
liveness_bound = "60s"
master_at_end = "xs2"
fenced = ["xs1"]
unjustified_fences = 0
vm_final = { vm-a = "xs2", vm-b = "xs2", vm-c = "halted" }
'''


def test_the_pinned_example_loads_as_written():
    s = parse_scenario(loads(PINNED_EXAMPLE), "example.toml")
    assert s.id == "N02" and s.hosts == ("xs1", "xs2") and s.master == "xs1"
    assert [v.restart for v in s.vms] == ["restart", "best-effort", "never"]
    assert s.seeds == 20 and s.duration == 600.0
    assert s.faults[0].kind == "nic.down" and s.faults[0].duration is None
    assert s.expect.liveness_bound == 60.0 and s.expect.fenced == ("xs1",)
    assert dict(s.expect.vm_final) == {"vm-a": "xs2", "vm-b": "xs2", "vm-c": "halted"}


def test_the_shared_document_example_still_parses():
    """The example block in ../shared/SCENARIO-FORMAT.md itself, comments and all."""
    text = open(SHARED_FORMAT).read()
    block = text.split("```toml", 1)[1].split("```", 1)[0]
    s = parse_scenario(loads(block), SHARED_FORMAT)
    assert s.id == "N02"


def test_relative_times_and_fault_parameters():
    data = loads(PINNED_EXAMPLE)
    data["fault"] = [
        {"at": "60s", "kind": "link.loss", "target": "xs1-xs2", "loss": 0.3, "duration": "5m"},
        {"at": "+30s", "kind": "link.latency", "target": "xs1-gw", "latency": "300ms",
         "jitter": "200ms"},
        {"at": "+10s", "kind": "clock.jump", "target": "xs2", "by": "-120s"},
        {"at": "+0s", "kind": "vm.start_fail", "target": "vm-a", "times": 2},
        {"at": "+1s", "kind": "link.oneway", "target": "xs1>xs2", "path": 1},
    ]
    s = parse_scenario(data, "x.toml")
    assert [f.at for f in s.faults] == [60.0, 90.0, 100.0, 100.0, 101.0]
    assert s.faults[0].param("loss") == 0.3 and s.faults[0].heals_at == 360.0
    assert s.faults[1].param("latency") == 0.3 and s.faults[1].param("jitter") == 0.2
    assert s.faults[2].param("by") == -120.0
    assert s.faults[3].param("times") == 2


def test_an_unknown_fault_kind_is_an_error_that_names_it():
    data = loads(PINNED_EXAMPLE)
    data["fault"] = [{"at": "60s", "kind": "nic.flap", "target": "xs1"}]
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(data, "plan.toml")
    assert "plan.toml: fault[0].kind: unknown fault kind 'nic.flap'" in str(exc.value)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["expect"].update(fencd=["xs1"]), "expect.fencd: unknown key (did you mean 'fenced'?)"),
    (lambda d: d["cluster"].update(hosts=["xs1"]), "cluster.hosts: exactly two distinct host names"),
    (lambda d: d["fault"][0].update(target="xs3"), "fault[0].target: 'xs3' is not a valid target"),
    (lambda d: d["fault"][0].update(at="60"), "fault[0].at: expected a duration with a unit"),
    (lambda d: d["expect"].update(vm_final={"vm-z": "xs1"}), "expect.vm_final.vm-z: no such VM"),
    (lambda d: d["cluster"]["vms"][0].update(restart="always"), "cluster.vms[0].restart: must be one of"),
    (lambda d: d["fault"].append({"at": "1s", "kind": "host.freeze", "target": "xs1"}),
     "fault[1].duration: host.freeze needs a duration"),
    (lambda d: d["fault"].append({"at": "1s", "kind": "link.loss", "target": "xs1-xs2"}),
     "fault[1].loss: required"),
])
def test_mistakes_are_errors_naming_file_and_key(mutate, message):
    data = loads(PINNED_EXAMPLE)
    mutate(data)
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(data, "plan.toml")
    assert "plan.toml: " + message in str(exc.value)


def test_every_fault_kind_has_a_valid_target_form():
    targets = {"host": "xs1", "link.down": "xs1-xs2", "link.oneway": "xs1>xs2",
               "link.loss": "xs1-gw", "link.latency": "xs2-xs1", "gw.down": "gw",
               "vm.start_fail": "vm-a", "op.ha_disable": "pool"}
    for kind in KINDS:
        data = loads(PINNED_EXAMPLE)
        fault = {"at": "10s", "kind": kind, "target": targets.get(kind, "xs1")}
        if kind in ("host.freeze", "daemon.stall"):
            fault["duration"] = "5s"
        if kind == "link.loss":
            fault["loss"] = 0.1
        if kind == "link.latency":
            fault["latency"] = "10ms"
        if kind == "clock.jump":
            fault["by"] = "+1s"
        data["fault"] = [fault]
        parse_scenario(data, "k.toml")


def test_dump_round_trips():
    data = loads(PINNED_EXAMPLE)
    data["fault"].append({"at": "+5s", "kind": "clock.jump", "target": "xs2", "by": "-2m"})
    s = parse_scenario(data, "x.toml")
    again = parse_scenario(loads(dump_scenario(s)), "x.toml")
    assert again.faults == s.faults and again.expect == s.expect and again.vms == s.vms


def test_builtin_matrix_loads_and_covers_the_vocabulary():
    paths = find_scenarios([os.path.join(ROOT, "simulations", "scenarios")])
    scenarios = [load_scenario(p) for p in paths]
    assert len(scenarios) >= 40
    ids = [s.id for s in scenarios]
    assert len(set(ids)) == len(ids)
    used = {f.kind for s in scenarios for f in s.faults}
    missing = set(KINDS) - used
    assert not missing, "fault kinds no built-in scenario uses: %s" % sorted(missing)
