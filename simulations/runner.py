"""Build a simulated pool from a scenario and a seed, run it, and judge it.

A run is a pure function of (code, scenario, configuration, seed): the same inputs give the same
trace hash on any machine and under any PYTHONHASHSEED.
"""
import hashlib
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Set, Tuple

from halizard.core.alerts import Alert, AlertBook, AlertPolicy, observe
from halizard.core.config import Config, ConfigError, load_config
from halizard.core.pool import KEY_ENABLED, KEY_VM_RESTART, RESTART
from halizard.core.timing import bounds
from simulations import coverage
from simulations.executor import PASSWORD, START_AFTER_BOOT, USERNAME, SimDaemon
from simulations.faults import FaultInjector, Operator
from simulations.invariants import Checker, FenceRecord, Violation
from simulations.scenario import ANY, Fault, Scenario, ScenarioError
from simulations.world.clock import HostClock
from simulations.world.rng import Streams
from simulations.world.scheduler import ns, seconds
from simulations.world.world import Host, World
from simulations.xapi.model import HostSpec, VmSpec, XapiPool

# The built-in simulated pool's configuration: halizard's defaults, with addresses from the
# benchmarking range 198.18.0.0/15 (the simulator assigns each host its own lab addresses).
BUILTIN_CONFIG: Dict[str, Any] = {
    "peer_addresses": ["198.18.0.12"],
    "gateway_addresses": ["198.18.0.1"],
}

DOM0_MEMORY = 4 << 30
SETTLE = 60.0  # seconds of quiet after the liveness deadline before the run ends


def lab_address(path: int, host_index: int) -> str:
    return "198.18.%d.%d" % (path, 11 + host_index)


def gateway_address(index: int) -> str:
    return "198.18.0.%d" % (1 + index)


def scenario_config(scenario: Scenario, base: Optional[Mapping[str, Any]] = None,
                    base_source: str = "built-in configuration") -> Config:
    table = dict(BUILTIN_CONFIG if base is None else base)
    table.update(dict(scenario.config))
    source = scenario.source + " [config]" if scenario.config else base_source
    try:
        return load_config(table, source=source).config
    except ConfigError as exc:
        raise ScenarioError(scenario.source, ["configuration: " + p.render(exc.source)
                                              for p in exc.problems]) from None


def default_liveness_bound(config: Config) -> float:
    """When a scenario gives none: the slowest takeover path plus a minute of slack."""
    fence_path = 0.0
    if config.fence_agent is not None:
        fence_path = config.peer_timeout + config.fence_delay + config.fence_timeout
    return max(config.takeover_delay, fence_path) + 60.0


def liveness_bound(scenario: Scenario, config: Config) -> Optional[float]:
    bound = scenario.expect.liveness_bound
    if bound == "none":
        return None
    if bound is None:
        return default_liveness_bound(config)
    assert isinstance(bound, float)
    return bound


def run_duration(scenario: Scenario, config: Config) -> float:
    if scenario.duration is not None:
        return scenario.duration
    bound = liveness_bound(scenario, config) or default_liveness_bound(config)
    return max(scenario.last_event() + bound + SETTLE, 300.0)


@dataclass
class RunResult:
    scenario: str
    seed: int
    violations: List[Violation]
    unmet: List[str]
    failover: Optional[float]
    margin: Optional[float]
    fences: List[FenceRecord]
    trace_hash: str
    events: int
    wall: float
    sim_seconds: float
    timeline: Optional[Dict[str, Any]] = None
    alerts: Tuple[Tuple[float, str, Alert], ...] = ()  # (t, host, alert), when recorded
    transitions: FrozenSet[str] = frozenset()  # "old -> new" daemon modes seen (coverage)
    coverage: FrozenSet[str] = frozenset()  # every coverage counter reached (simulations.coverage)

    @property
    def unjustified(self) -> int:
        return sum(1 for f in self.fences if f.verdict != "justified")

    @property
    def passed(self) -> bool:
        return not self.violations and not self.unmet


class Tracer:
    """Hashes the run's observable history, and (optionally) keeps a timeline for the report."""

    def __init__(self, world: World, keep_timeline: bool) -> None:
        self.world = world
        self.hash = hashlib.sha256()
        self.keep = keep_timeline
        self.modes: List[Tuple[float, str, str, str]] = []
        self.roles: List[Tuple[float, str, str]] = []
        self.vms: List[Tuple[float, str, str, str]] = []
        self.faults: List[Tuple[float, str, str, int]] = []
        self.fences: List[Tuple[float, str, str]] = []
        self.marks: List[Tuple[float, str, str]] = []
        self.power: List[Tuple[float, str, str]] = []
        self.log: List[Tuple[float, str, str]] = []
        self._last_mode: Dict[str, str] = {}
        self._mode: Dict[str, str] = {}
        self.transitions: Set[str] = set()
        self.reached: Set[str] = set()  # coverage counters besides the transitions
        self._last_decision: Dict[str, Tuple[Any, str]] = {}
        self._last_role: Dict[str, str] = {}

    def _feed(self, *parts: Any) -> None:
        self.hash.update(("|".join(str(p) for p in parts) + "\n").encode("utf-8"))

    def decision(self, t: int, host: str, decision: Any) -> None:
        # Hash each change of decision (a repeated steady-state line adds nothing: any
        # divergence shows in the changes, the actions and the world's events).
        key = (decision.mode, decision.reason)
        if self._last_decision.get(host) != key:
            self._last_decision[host] = key
            self._feed(t, host, decision.mode.value, decision.reason)
            before = self._mode.get(host)
            mode = decision.mode.value
            if before != mode:
                self._mode[host] = mode
                self.reached.add(coverage.mode(mode))
                if before is not None:
                    self.transitions.add(coverage.transition(before, mode))
        if self.keep:
            mode = decision.mode.value
            if self._last_mode.get(host) != mode:
                self._last_mode[host] = mode
                self.modes.append((seconds(t), host, mode, decision.reason))
                self.log.append((seconds(t), host, decision.line()))

    def domain_started(self, t: int, host: str, vm: str, others: List[str],
                       migrated: bool) -> None:
        self._feed(t, "start", host, vm)
        if self.keep:
            self.vms.append((seconds(t), self.world.vm_names.get(vm, vm), host, "start"))

    def domain_stopped(self, t: int, host: str, vm: str, cause: str) -> None:
        self._feed(t, "stop", host, vm, cause)
        if self.keep:
            self.vms.append((seconds(t), self.world.vm_names.get(vm, vm), host, cause))

    def host_power(self, t: int, host: str, state: str, cause: str) -> None:
        self._feed(t, "power", host, state, cause)
        if self.keep:
            self.power.append((seconds(t), host, state))

    def host_frozen(self, t: int, host: str, frozen: bool) -> None:
        self._feed(t, "frozen", host, frozen)

    def fence(self, t: int, host: str, kind: str, by: str) -> None:
        self._feed(t, "fence", host, kind, by)
        if kind == "watchdog":
            self.reached.add(coverage.WATCHDOG_RESET)
        if self.keep:
            self.fences.append((seconds(t), host, kind))

    def fence_answer(self, t: int, host: str, action: str, result: str) -> None:
        pass  # the fence itself is traced; what the device answered shows in the decisions

    def fault(self, t: int, index: int, fault: Any, phase: str) -> None:
        self._feed(t, "fault", index, phase)
        if phase == "onset":
            role = ""
            if coverage.by_role(fault.kind):
                host = fault.target.split(">")[0]
                role = "master" if self.world.xapi.pool_conf(host)[0] else "slave"
            self.reached.add(coverage.fault(fault.kind, role))
        if self.keep:
            self.faults.append((seconds(t), phase, fault.label(), index))

    def action(self, t: int, host: str, effect: Any, stale: bool, monotonic: float) -> None:
        op = getattr(effect, "op", "")
        if op == "feed":
            return
        method = getattr(effect, "method", type(effect).__name__)
        self._feed(t, "action", host, method, op, stale)
        if not stale and method in coverage.PATHS:
            self.reached.add(coverage.path(coverage.PATHS[method]))
        if self.keep and method in ("pool.emergency_transition_to_master",
                                    "Async.host.declare_dead", "pool.designate_new_master",
                                    "pool.emergency_reset_master", "StartFence", "DestroyGuests"):
            self.marks.append((seconds(t), host, method.split(".")[-1]))

    def daemon(self, t: int, host: str, what: str) -> None:
        self._feed(t, "daemon", host, what)
        if what == "started":  # a new process: its state starts in `starting`
            self._mode[host] = "starting"
            self._last_decision.pop(host, None)  # its first decision is a change, whatever it is
            self.reached.add(coverage.mode("starting"))
        else:
            self._mode.pop(host, None)
        if self.keep:
            self.log.append((seconds(t), host, "daemon %s" % what))

    def daemon_error(self, t: int, host: str, error: str) -> None:
        self._feed(t, "error", host, error)

    def after_event(self) -> None:
        if not self.keep:
            return
        xapi = self.world.xapi
        for host in self.world.host_names:
            state = xapi.xapi_state(host)
            role = xapi.role(host) if state in ("up", "emergency", "hung") else state
            if self._last_role.get(host) != role:
                self._last_role[host] = role
                self.roles.append((seconds(self.world.now), host, role))

    def timeline(self, end: float) -> Dict[str, Any]:
        return {
            "end": end,
            "modes": self.modes,
            "roles": self.roles,
            "vms": self.vms,
            "faults": self.faults,
            "fences": self.fences,
            "marks": self.marks,
            "power": self.power,
            "log": self.log,
        }


class AlertRecorder:
    """The alerts each host's daemon would send (halizard.core.alerts, as the real executor
    derives them), with when. A book per daemon process, as on a host: a restarted daemon
    (its decisions carry a new start time) begins a new one."""

    def __init__(self, world: World, configs: Mapping[str, Config],
                 policy: Optional[AlertPolicy] = None) -> None:
        self.world = world
        self.configs = configs
        self.policy = policy or AlertPolicy()
        self.books = {host: AlertBook(host) for host in configs}
        self.started: Dict[str, float] = {}
        self.sent: List[Tuple[float, str, Alert]] = []

    def enacted(self, host: str, decision: Any, outcomes: Tuple[Any, ...]) -> None:
        if self.started.get(host) != decision.state.started_at:
            self.started[host] = decision.state.started_at
            self.books[host] = AlertBook(host)
        book, alerts = observe(self.books[host], self.policy, self.configs[host], decision,
                               outcomes)
        self.books[host] = book
        t = seconds(self.world.now)
        self.sent.extend((t, host, alert) for alert in alerts)


class Simulation:
    """One scenario, one seed, one configuration: the world, the daemons and the checkers."""

    def __init__(self, scenario: Scenario, seed: int, config: Config,
                 keep_timeline: bool = False, alerts: Optional[bool] = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.config = config
        self.bounds = bounds(config)
        streams = Streams(seed)
        setup = streams("setup")
        paths = len(config.peer_addresses)
        gateways = len(config.gateway_addresses)
        rho = config.max_drift_ppm
        hosts = []
        for i, name in enumerate(scenario.hosts):
            clock = HostClock(
                drift_ppm=setup.uniform(-rho, rho),
                mono_base=setup.uniform(1000.0, 100000.0),
                wall_offset=1.7e9 + setup.uniform(-5.0, 5.0),
            )
            uuid = _uuid(seed, "host", name)
            hosts.append(Host(name, uuid, lab_address(0, i), scenario.memory_of(name), clock))
        self.world = world = World(seed, hosts, paths, gateways)
        world.vm_names = {_uuid(seed, "vm", vm.name): vm.name for vm in scenario.vms}

        self.configs: Dict[str, Config] = {}
        for i, name in enumerate(scenario.hosts):
            peer = 1 - i
            self.configs[name] = replace(
                config,
                peer_addresses=tuple(lab_address(p, peer) for p in range(paths)),
                gateway_addresses=tuple(gateway_address(g) for g in range(gateways)),
            )
        world.xapi = XapiPool(
            world.scheduler,
            world,
            hosts=[HostSpec(h.name, h.uuid, h.address, h.memory, DOM0_MEMORY) for h in hosts],
            master=scenario.master,
            vms=[
                VmSpec(vm.name, _uuid(seed, "vm", vm.name), vm.host, vm.memory, vm.order,
                       ns(vm.start_delay), {KEY_VM_RESTART: vm.restart})
                for vm in scenario.vms
            ],
            pool_other_config={KEY_ENABLED: "true"},
            username=USERNAME,
            password=PASSWORD,
        )
        for vm in scenario.vms:
            world.create_domain(vm.host, _uuid(seed, "vm", vm.name))

        self.daemons = {name: SimDaemon(world, name, self.configs[name]) for name in scenario.hosts}
        world.daemons = self.daemons
        # The alerts cost a little every decision: recorded for the report (a timeline) and
        # when asked, not in the matrix's and the explorer's thousands of runs.
        self.alerts: Optional[AlertRecorder] = None
        if alerts or (alerts is None and keep_timeline):
            recorder = self.alerts = AlertRecorder(world, self.configs)
            for name, daemon in self.daemons.items():
                daemon.on_enacted = partial(recorder.enacted, name)
        protected = {_uuid(seed, "vm", v.name) for v in scenario.vms if v.restart != "never"}
        restart_vms = {_uuid(seed, "vm", v.name) for v in scenario.vms if v.restart == RESTART}
        self.checker = Checker(world, config, self.bounds, self.daemons, protected, restart_vms)
        self.tracer = Tracer(world, keep_timeline)
        world.observe(self.checker, self.tracer)
        world.on_power_off.append(lambda host, cause: self.daemons[host].kill(restart=False))
        world.on_booted.append(self._booted)
        self.operator = Operator(world, lambda msg: self.tracer.log.append(
            (seconds(world.now), "operator", msg)))
        self.injector = FaultInjector(world, self.daemons, self.operator)
        self.injector.schedule(scenario.faults)
        phase = streams("phase")
        for name in scenario.hosts:
            world.scheduler.at(phase.uniform_ns(0, ns(config.probe_interval)),
                               self.daemons[name].start)
        self.unmet: List[str] = []
        self._injected = 0
        self.bound = liveness_bound(scenario, config)
        if self.bound is not None:
            deadline = scenario.last_event() + self.bound
            world.scheduler.at(ns(deadline), self._liveness_deadline, deadline)

    def _booted(self, host: str) -> None:
        self.world.scheduler.after(START_AFTER_BOOT, self.daemons[host].start)

    def _liveness_deadline(self, deadline: float) -> None:
        problem = self.checker.liveness("not restored %s after the last fault"
                                        % _secs(self.bound or 0.0))
        if problem:
            self.unmet.append("liveness: " + problem)

    def run(self) -> RunResult:
        duration = run_duration(self.scenario, self.config)
        started = time.perf_counter()
        self.advance(duration)
        return self.finish(duration, time.perf_counter() - started)

    # --- stepwise: for explorers that choose faults as the run goes ------------------------------

    @property
    def now(self) -> float:
        return seconds(self.world.now)

    def mode(self, host: str) -> Optional[str]:
        """The mode of ``host``'s latest decision; None before its daemon's first."""
        mode = self.checker.modes.get(host)
        return None if mode is None else mode.value

    def advance(self, until: float) -> None:
        """Run every event up to ``until`` (seconds from the start), checking the invariants after
        each."""
        self.world.scheduler.run_until(ns(until), self._after_event())

    def step(self) -> bool:
        """Run the events of the next instant; False when nothing is left to happen."""
        t = self.world.scheduler.next_time()
        if t is None:
            return False
        self.world.scheduler.run_until(t, self._after_event())
        return True

    def advance_until(self, condition: Callable[[], bool], limit: float) -> bool:
        """Run instant by instant until ``condition()`` holds (True) or ``limit`` seconds have
        passed (False)."""
        scheduler = self.world.scheduler
        end = ns(self.now + limit)
        while True:
            t = scheduler.next_time()
            if t is None or t > end:
                scheduler.run_until(end, self._after_event())
                return False
            scheduler.run_until(t, self._after_event())
            if condition():
                return True

    def inject(self, fault: Fault) -> None:
        """One more fault, beyond the scenario's: its onset at ``fault.at`` (now, if that has
        passed), its heal ``fault.duration`` later."""
        index = len(self.scenario.faults) + self._injected
        self._injected += 1
        self.world.scheduler.at(ns(fault.at), self.injector.onset, index, fault)
        if fault.heals_at is not None:
            self.world.scheduler.at(ns(fault.heals_at), self.injector.heal, index, fault)

    def _after_event(self) -> Callable[[], None]:
        checker = self.checker
        tracer = self.tracer
        if not tracer.keep:
            return checker.after_event

        def after_event() -> None:
            checker.after_event()
            tracer.after_event()

        return after_event

    def finish(self, duration: float, wall: float = 0.0) -> RunResult:
        """Judge the run as it stands after ``duration`` simulated seconds."""
        world = self.world
        checker = self.checker
        tracer = self.tracer
        self._judge_end()
        margin = min(checker.margins) if checker.margins else None
        return RunResult(
            scenario=self.scenario.id,
            seed=self.seed,
            violations=list(checker.violations),
            unmet=self.unmet,
            failover=checker.failover,
            margin=margin,
            fences=list(checker.fences),
            trace_hash=tracer.hash.hexdigest(),
            events=world.scheduler.events,
            wall=wall,
            sim_seconds=duration,
            timeline=self._timeline(duration) if tracer.keep else None,
            alerts=tuple(self.alerts.sent) if self.alerts is not None else (),
            transitions=frozenset(tracer.transitions),
            coverage=frozenset(tracer.transitions | tracer.reached),
        )

    def _timeline(self, duration: float) -> Dict[str, Any]:
        timeline = self.tracer.timeline(duration)
        timeline["alerts"] = [(t, host, alert.state, alert.subject)
                              for t, host, alert in (self.alerts.sent if self.alerts else ())]
        return timeline

    def _judge_end(self) -> None:
        world = self.world
        expect = self.scenario.expect
        if self.bound is not None:
            problem = self.checker.liveness("at the end of the run")
            if problem:
                self.unmet.append("liveness: " + problem)
        if expect.master_at_end != ANY:
            masters = self.checker.acting_masters()
            if masters != [expect.master_at_end]:
                self.unmet.append("master_at_end: expected %s, got %s"
                                  % (expect.master_at_end, ", ".join(masters) or "none"))
        fenced = sorted({f.host for f in self.checker.fences})
        if expect.fenced != ANY and tuple(fenced) != tuple(expect.fenced):
            self.unmet.append("fenced: expected [%s], got [%s]"
                              % (", ".join(expect.fenced), ", ".join(fenced)))
        unjustified = sum(1 for f in self.checker.fences if f.verdict != "justified")
        if unjustified > expect.unjustified_fences:
            details = "; ".join("%s %s at %.1fs (%s)" % (f.kind, f.host, f.t, f.verdict)
                                for f in self.checker.fences if f.verdict != "justified")
            self.unmet.append("unjustified_fences: expected at most %d, got %d: %s"
                              % (expect.unjustified_fences, unjustified, details))
        for vm, where in expect.vm_final:
            uuid = _uuid(self.seed, "vm", vm)
            running = sorted(h for h in world.vm_hosts.get(uuid, ()) if world.hosts[h].power == "on")
            if where == ANY:
                continue
            actual = running[0] if len(running) == 1 else ("halted" if not running
                                                           else "+".join(running))
            if actual != where:
                self.unmet.append("vm_final: %s expected %s, got %s" % (vm, where, actual))


def _uuid(seed: int, kind: str, name: str) -> str:
    """Deterministic UUIDs per run (names are what scenarios use; UUIDs are what xapi uses)."""
    h = hashlib.sha256(("%s:%s" % (kind, name)).encode("utf-8")).hexdigest()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:32])


def _secs(value: float) -> str:
    return "%gs" % value


def run_scenario(scenario: Scenario, seed: int, base: Optional[Mapping[str, Any]] = None,
                 base_source: str = "built-in configuration",
                 keep_timeline: bool = False, alerts: Optional[bool] = None) -> RunResult:
    config = scenario_config(scenario, base, base_source)
    return Simulation(scenario, seed, config, keep_timeline, alerts).run()
