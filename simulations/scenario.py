"""Scenario files: the pinned format of ../shared/SCENARIO-FORMAT.md, read and written.

The format is a public interface: files the project has never seen must run. Everything written
there is accepted as written. Extensions (all optional, none changes the meaning of a pinned
file) are documented in docs/SCENARIOS.md: `path` on link faults, `carrier` on nic.down,
individual gateways `gw1`, `gw2`..., a duration on host.crash / host.shutdown (power back on
after it), and `liveness_bound = "none"` for scenarios whose correct outcome is to stand down.

A mistake in a scenario is an error naming the file and the key: a typo in an expectation would
otherwise silently check nothing.
"""
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from halizard.core.pool import POLICIES
from halizard.core.units import UnitError, format_duration, parse_duration, parse_size
from halizard.toml import TomlError, dumps, loads

HOST_KINDS = ("host.crash", "host.power_on", "host.reboot", "host.freeze", "host.shutdown",
              "nic.down", "gw.block", "xapi.hang", "xapi.restart", "daemon.crash",
              "daemon.stall", "clock.jump", "fence.unreachable", "op.maintenance")
KINDS = HOST_KINDS + ("link.down", "link.oneway", "link.loss", "link.latency", "gw.down",
                      "vm.start_fail", "op.ha_disable")
NEEDS_DURATION = ("host.freeze", "daemon.stall")
INSTANT = ("host.power_on", "host.reboot", "daemon.crash", "clock.jump", "vm.start_fail")
FAULT_KEYS = {
    "link.down": ("path",),
    "link.oneway": ("path",),
    "link.loss": ("loss", "path"),
    "link.latency": ("latency", "jitter", "path"),
    "nic.down": ("carrier",),
    "clock.jump": ("by",),
    "vm.start_fail": ("times",),
}
DEFAULT_MEMORY = 1 << 30
DEFAULT_HOST_MEMORY = 64 << 30


class ScenarioError(ValueError):
    def __init__(self, source: str, problems: List[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join("%s: %s" % (source, p) for p in problems))


@dataclass(frozen=True)
class VmDef:
    name: str
    host: str
    restart: str
    order: int = 0
    start_delay: float = 0.0
    memory: int = DEFAULT_MEMORY


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the start of the run
    kind: str
    target: str
    duration: Optional[float]  # None: permanent (or an instant fault)
    params: Tuple[Tuple[str, Any], ...] = ()

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    @property
    def heals_at(self) -> Optional[float]:
        return None if self.duration is None else self.at + self.duration

    def label(self) -> str:
        extra = "".join(" %s=%s" % (k, v) for k, v in self.params)
        span = "" if self.duration is None else " for %s" % format_duration(self.duration)
        return "%s %s%s%s" % (self.kind, self.target, extra, span)


ANY = "any"


@dataclass(frozen=True)
class Expect:
    liveness_bound: Union[float, str, None] = None  # None: derived from the configuration
    master_at_end: str = ANY
    fenced: Union[Tuple[str, ...], str] = ANY
    unjustified_fences: int = 0
    vm_final: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    hosts: Tuple[str, str]
    master: str
    vms: Tuple[VmDef, ...]
    faults: Tuple[Fault, ...]
    expect: Expect
    tags: Tuple[str, ...] = ()
    host_memory: Tuple[Tuple[str, int], ...] = ()
    config: Tuple[Tuple[str, Any], ...] = ()
    seeds: Optional[int] = None
    duration: Optional[float] = None
    source: str = "<scenario>"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def memory_of(self, host: str) -> int:
        return dict(self.host_memory).get(host, DEFAULT_HOST_MEMORY)

    def last_event(self) -> float:
        times = [0.0]
        for f in self.faults:
            times.append(f.at)
            if f.heals_at is not None:
                times.append(f.heals_at)
        return max(times)


def _unknown(problems: List[str], where: str, table: Mapping[str, Any], known: Tuple[str, ...]
             ) -> None:
    for key in sorted(table):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            problems.append("%s%s: unknown key%s" % (where, key, hint))


def _time(problems: List[str], where: str, value: Any) -> Optional[float]:
    try:
        return parse_duration(value)
    except UnitError as exc:
        problems.append("%s: %s" % (where, exc))
        return None


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    problems: List[str] = []
    _unknown(problems, "", data, ("id", "title", "tags", "cluster", "config", "sweep", "fault",
                                  "expect"))
    sid = data.get("id")
    if not isinstance(sid, str) or not sid:
        problems.append("id: required, a short string")
        sid = "?"
    title = data.get("title", "")
    if not isinstance(title, str):
        problems.append("title: must be a string")
        title = ""
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append("tags: must be a list of strings")
        tags = []

    cluster = data.get("cluster")
    hosts: Tuple[str, str] = ("xs1", "xs2")
    master = "xs1"
    vms: List[VmDef] = []
    host_memory: Dict[str, int] = {}
    if not isinstance(cluster, dict):
        problems.append("cluster: required table")
    else:
        _unknown(problems, "cluster.", cluster, ("hosts", "master", "vms", "host_memory"))
        raw_hosts = cluster.get("hosts")
        if (not isinstance(raw_hosts, list) or len(raw_hosts) != 2
                or not all(isinstance(h, str) and h for h in raw_hosts) or raw_hosts[0] == raw_hosts[1]):
            problems.append("cluster.hosts: exactly two distinct host names")
        else:
            hosts = (raw_hosts[0], raw_hosts[1])
        master = cluster.get("master", "")
        if master not in hosts:
            problems.append("cluster.master: must be one of %s, got %r" % (", ".join(hosts), master))
            master = hosts[0]
        raw_vms = cluster.get("vms", [])
        if not isinstance(raw_vms, list):
            problems.append("cluster.vms: must be a list of tables")
            raw_vms = []
        names = set()
        for i, vm in enumerate(raw_vms):
            where = "cluster.vms[%d]" % i
            if not isinstance(vm, dict):
                problems.append("%s: must be a table" % where)
                continue
            _unknown(problems, where + ".", vm, ("name", "host", "restart", "order", "start_delay",
                                                  "memory"))
            name = vm.get("name")
            if not isinstance(name, str) or not name:
                problems.append("%s.name: required" % where)
                continue
            if name in names:
                problems.append("%s.name: %r appears twice" % (where, name))
            names.add(name)
            host = vm.get("host")
            if host not in hosts:
                problems.append("%s.host: must be one of %s, got %r" % (where, ", ".join(hosts), host))
                host = hosts[0]
            restart = vm.get("restart", "restart")
            if restart not in POLICIES:
                problems.append("%s.restart: must be one of %s, got %r"
                                % (where, ", ".join(POLICIES), restart))
                restart = "never"
            order = vm.get("order", 0)
            if isinstance(order, bool) or not isinstance(order, int) or order < 0:
                problems.append("%s.order: must be a whole number >= 0" % where)
                order = 0
            delay = 0.0
            if "start_delay" in vm:
                delay = _time(problems, where + ".start_delay", vm["start_delay"]) or 0.0
            memory = DEFAULT_MEMORY
            if "memory" in vm:
                try:
                    memory = parse_size(vm["memory"])
                except UnitError as exc:
                    problems.append("%s.memory: %s" % (where, exc))
            vms.append(VmDef(name, host, restart, order, delay, memory))
        raw_mem = cluster.get("host_memory", {})
        if not isinstance(raw_mem, dict):
            problems.append("cluster.host_memory: must be a table of host = \"64GiB\"")
            raw_mem = {}
        for host, size in sorted(raw_mem.items()):
            if host not in hosts:
                problems.append("cluster.host_memory.%s: not one of the hosts" % host)
                continue
            try:
                host_memory[host] = parse_size(size)
            except UnitError as exc:
                problems.append("cluster.host_memory.%s: %s" % (host, exc))

    config = data.get("config", {})
    if not isinstance(config, dict):
        problems.append("config: must be a table")
        config = {}

    seeds = None
    duration = None
    sweep = data.get("sweep", {})
    if not isinstance(sweep, dict):
        problems.append("sweep: must be a table")
        sweep = {}
    _unknown(problems, "sweep.", sweep, ("seeds", "duration"))
    if "seeds" in sweep:
        if isinstance(sweep["seeds"], bool) or not isinstance(sweep["seeds"], int) or sweep["seeds"] < 1:
            problems.append("sweep.seeds: must be a whole number >= 1")
        else:
            seeds = sweep["seeds"]
    if "duration" in sweep:
        duration = _time(problems, "sweep.duration", sweep["duration"])

    vm_names = tuple(v.name for v in vms)
    faults = _parse_faults(problems, data.get("fault", []), hosts, vm_names)
    expect = _parse_expect(problems, data.get("expect", {}), hosts, vm_names)

    if problems:
        raise ScenarioError(source, problems)
    return Scenario(
        id=sid, title=title, hosts=hosts, master=master, vms=tuple(vms), faults=tuple(faults),
        expect=expect, tags=tuple(tags), host_memory=tuple(sorted(host_memory.items())),
        config=tuple(sorted(config.items())), seeds=seeds, duration=duration, source=source,
        raw=dict(data),
    )


def _target_ok(kind: str, target: Any, hosts: Tuple[str, str], vm_names: Tuple[str, ...]) -> bool:
    if not isinstance(target, str):
        return False
    if kind in HOST_KINDS:
        return target in hosts
    if kind in ("link.down", "link.loss", "link.latency"):
        parts = target.split("-")
        if len(parts) != 2:
            return False
        a, b = parts
        return (a in hosts and (b in hosts and b != a or _is_gateway(b)))
    if kind == "link.oneway":
        parts = target.split(">")
        return len(parts) == 2 and parts[0] in hosts and parts[1] in hosts and parts[0] != parts[1]
    if kind == "gw.down":
        return _is_gateway(target)
    if kind == "vm.start_fail":
        return target in vm_names
    if kind == "op.ha_disable":
        return target == "pool"
    return False


def _is_gateway(name: str) -> bool:
    return name == "gw" or (name.startswith("gw") and name[2:].isdigit() and int(name[2:]) >= 1)


def _parse_faults(problems: List[str], raw: Any, hosts: Tuple[str, str],
                  vm_names: Tuple[str, ...]) -> List[Fault]:
    if not isinstance(raw, list):
        problems.append("fault: must be an array of tables ([[fault]])")
        return []
    faults: List[Fault] = []
    previous = 0.0
    for i, f in enumerate(raw):
        where = "fault[%d]" % i
        if not isinstance(f, dict):
            problems.append("%s: must be a table" % where)
            continue
        kind = f.get("kind")
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            problems.append("%s.kind: unknown fault kind %r%s" % (where, kind, hint))
            continue
        extra = FAULT_KEYS.get(kind, ())
        _unknown(problems, where + ".", f, ("at", "kind", "target", "duration") + extra)
        at_raw = f.get("at")
        if not isinstance(at_raw, str):
            problems.append("%s.at: required, a time such as \"60s\" or \"+30s\"" % where)
            continue
        relative = at_raw.strip().startswith("+")
        at = _time(problems, where + ".at", at_raw.strip().lstrip("+"))
        if at is None:
            continue
        if relative:
            at += previous
        previous = at
        target = f.get("target")
        if not _target_ok(kind, target, hosts, vm_names):
            problems.append("%s.target: %r is not a valid target for %s" % (where, target, kind))
            continue
        duration: Optional[float] = None
        raw_duration = f.get("duration", "permanent")
        if raw_duration != "permanent":
            duration = _time(problems, where + ".duration", raw_duration)
            if kind in INSTANT and duration is not None:
                problems.append("%s.duration: %s is instantaneous" % (where, kind))
        if kind in NEEDS_DURATION and duration is None:
            problems.append("%s.duration: %s needs a duration" % (where, kind))
        if kind == "xapi.restart" and duration is None:
            duration = 30.0
        params: List[Tuple[str, Any]] = []
        if "path" in f:
            if isinstance(f["path"], bool) or not isinstance(f["path"], int) or f["path"] < 1:
                problems.append("%s.path: a heartbeat path number, 1 or more" % where)
            elif "gw" in str(target):
                problems.append("%s.path: only host-to-host links have paths" % where)
            else:
                params.append(("path", f["path"]))
        if kind == "link.loss":
            loss = f.get("loss")
            if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss <= 1:
                problems.append("%s.loss: required, a fraction from 0 to 1" % where)
            else:
                params.append(("loss", float(loss)))
        if kind == "link.latency":
            if "latency" not in f:
                problems.append("%s.latency: required, e.g. \"300ms\"" % where)
            else:
                value = _time(problems, where + ".latency", f["latency"])
                if value is not None:
                    params.append(("latency", value))
            if "jitter" in f:
                value = _time(problems, where + ".jitter", f["jitter"])
                if value is not None:
                    params.append(("jitter", value))
        if kind == "nic.down" and "carrier" in f:
            if f["carrier"] not in ("lost", "kept"):
                problems.append("%s.carrier: \"lost\" or \"kept\"" % where)
            else:
                params.append(("carrier", f["carrier"]))
        if kind == "clock.jump":
            by = f.get("by")
            if not isinstance(by, str):
                problems.append("%s.by: required, e.g. \"+300s\" or \"-120s\"" % where)
            else:
                sign = -1.0 if by.strip().startswith("-") else 1.0
                value = _time(problems, where + ".by", by.strip().lstrip("+-"))
                if value is not None:
                    params.append(("by", sign * value))
        if kind == "vm.start_fail":
            times = f.get("times", 1)
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                problems.append("%s.times: a whole number >= 1" % where)
            else:
                params.append(("times", times))
        faults.append(Fault(at, kind, str(target), duration, tuple(params)))
    return faults


def _parse_expect(problems: List[str], raw: Any, hosts: Tuple[str, str],
                  vm_names: Tuple[str, ...]) -> Expect:
    if not isinstance(raw, dict):
        problems.append("expect: must be a table")
        return Expect()
    _unknown(problems, "expect.", raw, ("liveness_bound", "master_at_end", "fenced",
                                        "unjustified_fences", "vm_final"))
    bound: Union[float, str, None] = None
    if "liveness_bound" in raw:
        if raw["liveness_bound"] == "none":
            bound = "none"
        else:
            bound = _time(problems, "expect.liveness_bound", raw["liveness_bound"])
    master = raw.get("master_at_end", ANY)
    if master != ANY and master not in hosts:
        problems.append("expect.master_at_end: a host name or \"any\", got %r" % (master,))
    fenced: Any = raw.get("fenced", ANY)
    if fenced != ANY:
        if not isinstance(fenced, list) or not all(h in hosts for h in fenced):
            problems.append("expect.fenced: a list of host names, [] or \"any\"")
            fenced = ANY
        else:
            fenced = tuple(sorted(fenced))
    unjustified = raw.get("unjustified_fences", 0)
    if isinstance(unjustified, bool) or not isinstance(unjustified, int) or unjustified < 0:
        problems.append("expect.unjustified_fences: a whole number >= 0")
        unjustified = 0
    vm_final = raw.get("vm_final", {})
    if not isinstance(vm_final, dict):
        problems.append("expect.vm_final: a table of vm = host | \"halted\" | \"any\"")
        vm_final = {}
    for vm, where in sorted(vm_final.items()):
        if vm not in vm_names:
            problems.append("expect.vm_final.%s: no such VM in cluster.vms" % vm)
        if where not in hosts and where not in ("halted", ANY):
            problems.append("expect.vm_final.%s: a host name, \"halted\" or \"any\", got %r"
                            % (vm, where))
    return Expect(bound, master, fenced, unjustified, tuple(sorted(vm_final.items())))


def load_scenario(path: str) -> Scenario:
    try:
        with open(path, "rb") as handle:
            data = loads(handle.read().decode("utf-8"))
    except TomlError as exc:
        raise ScenarioError(path, ["not valid TOML: %s" % exc]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, ["cannot read: %s" % exc]) from None
    return parse_scenario(data, source=path)


def find_scenarios(paths: List[str]) -> List[str]:
    """Every .toml file named, or found (sorted) in a named directory."""
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, _dirs, names in sorted(os.walk(path)):
                files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(".toml"))
        else:
            files.append(path)
    return files


def dump_scenario(scenario: Scenario) -> str:
    """The scenario as TOML in the pinned format (used for regression files)."""
    out: Dict[str, Any] = {"id": scenario.id, "title": scenario.title}
    if scenario.tags:
        out["tags"] = list(scenario.tags)
    cluster: Dict[str, Any] = {"hosts": list(scenario.hosts), "master": scenario.master, "vms": []}
    for vm in scenario.vms:
        entry: Dict[str, Any] = {"name": vm.name, "host": vm.host, "restart": vm.restart}
        if vm.order:
            entry["order"] = vm.order
        if vm.start_delay:
            entry["start_delay"] = format_duration(vm.start_delay)
        if vm.memory != DEFAULT_MEMORY:
            entry["memory"] = "%dMiB" % (vm.memory >> 20)
        cluster["vms"].append(entry)
    if scenario.host_memory:
        cluster["host_memory"] = {h: "%dMiB" % (m >> 20) for h, m in scenario.host_memory}
    out["cluster"] = cluster
    if scenario.config:
        out["config"] = dict(scenario.config)
    sweep: Dict[str, Any] = {}
    if scenario.seeds is not None:
        sweep["seeds"] = scenario.seeds
    if scenario.duration is not None:
        sweep["duration"] = format_duration(scenario.duration)
    if sweep:
        out["sweep"] = sweep
    faults = []
    for f in scenario.faults:
        entry = {"at": format_duration(f.at), "kind": f.kind, "target": f.target}
        if f.duration is not None:
            entry["duration"] = format_duration(f.duration)
        for key, value in f.params:
            if key in ("latency", "jitter"):
                entry[key] = format_duration(value)
            elif key == "by":
                entry[key] = ("+" if value >= 0 else "-") + format_duration(abs(value))
            else:
                entry[key] = value
        faults.append(entry)
    out["fault"] = faults
    e = scenario.expect
    expect: Dict[str, Any] = {"master_at_end": e.master_at_end, "unjustified_fences": e.unjustified_fences}
    if e.liveness_bound is not None:
        expect["liveness_bound"] = (e.liveness_bound if isinstance(e.liveness_bound, str)
                                    else format_duration(e.liveness_bound))
    expect["fenced"] = e.fenced if isinstance(e.fenced, str) else list(e.fenced)
    if e.vm_final:
        expect["vm_final"] = dict(e.vm_final)
    out["expect"] = expect
    return dumps(out, arrays_of_tables=("fault",))
