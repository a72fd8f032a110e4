"""Fault schedules for exploration: one generator, three choosers.

`generate(chooser, space)` writes one schedule from the fault vocabulary of the scenario format:
a swarm-selected subset of the fault kinds, onsets and durations just below and just above every
timing edge of the configuration. It asks a *chooser* for every decision, so the same generator
serves three explorers:

* `RandomChooser`: seeded random (`halizard simulate --explore random`, `make explore`);
* `HypothesisChooser`: Hypothesis draws each choice, so a failure shrinks choice by choice
  (tests/test_properties.py, tests/test_explore.py);
* `every_schedule`: a depth-first walk that replays choice prefixes and so enumerates every
  schedule a `Space` allows (the exhaustive single faults of `make test`, `--explore exhaustive`).

A schedule is written in the public scenario format, so any failure is a scenario file. Safety
must hold for every schedule; `expectations` adds what must hold for this schedule in particular
(liveness once every fault has healed, no unjustified fence after short transients). Who is
fenced, how fast and which master remains are the named matrix's job.
"""
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from typing_extensions import Protocol

from halizard.core.config import Config, load_config
from halizard.core.timing import bounds
from simulations.executor import START_AFTER_BOOT
from simulations.runner import BUILTIN_CONFIG, default_liveness_bound
from simulations.world.scheduler import seconds
from simulations.world.world import BOOT_TIME

FENCE_AGENT_TABLE: Dict[str, Any] = dict(BUILTIN_CONFIG, fence_agent="fence_ipmilan")
FENCE_AGENT = load_config(FENCE_AGENT_TABLE).config
GATEWAY_ONLY = load_config(BUILTIN_CONFIG).config

HOST_FAULTS = ("host.crash", "host.reboot", "host.freeze", "host.shutdown", "nic.down",
               "gw.block", "xapi.hang", "xapi.restart", "daemon.crash", "daemon.stall",
               "fence.unreachable", "clock.jump")
OTHER_FAULTS = ("link.down", "link.oneway", "gw.down", "link.loss")
KINDS = HOST_FAULTS + OTHER_FAULTS
INSTANT = ("host.reboot", "daemon.crash", "clock.jump")
NEEDS_DURATION = ("host.freeze", "daemon.stall")
# Without a fence agent or a second heartbeat path, a partition that leaves both hosts seeing
# the gateway is the documented unsafe topology (N01), not a bug to find.
GATEWAY_ONLY_KINDS = tuple(k for k in HOST_FAULTS if k != "fence.unreachable") + ("gw.down",)
# Transients: faults a host rides out without a fence when they are short (`held_tolerance`):
# the network faults and the pauses.
TRANSIENTS = ("nic.down", "gw.block", "link.down", "link.oneway", "gw.down", "link.loss",
              "xapi.hang", "xapi.restart", "host.freeze", "daemon.stall")
HARMLESS = ("daemon.crash", "clock.jump", "fence.unreachable")
PAUSES = ("host.freeze", "daemon.stall")  # long enough, the watchdog resets the host
RESETS = ("host.crash", "host.reboot")  # the host boots again (a minute)
# A shutdown's heal powers the host on only if it is off by then: a clean shutdown may take
# longer than the fault lasts, and the host then stays off.
NEVER_HEAL = ("host.shutdown",)
LOSSES = (0.3, 0.7, 1.0)
JUMPS = (-300.0, 300.0)  # wall-clock steps: no decision may depend on them
FIRST_ONSET = 30.0
STEP = 0.5  # the onset grid: half a probe interval, so onsets fall at both phases of a cycle
MAX_SEED = 2 ** 16
VMS = [{"name": "vm-a", "host": "xs1", "restart": "restart"},
       {"name": "vm-b", "host": "xs2", "restart": "restart"},
       {"name": "vm-c", "host": "xs2", "restart": "best-effort"}]


def edges(config: Config) -> List[float]:
    """Every tolerance and delay of ``config``: where a fault's length changes the outcome."""
    b = bounds(config)
    tolerances = {b.isolation_tolerance, b.freeze_tolerance}
    if config.fence_agent is not None:
        tolerances.add(b.fence_tolerance)
    return sorted(tolerances | {config.lease_timeout, config.watchdog_timeout,
                                config.peer_timeout, config.promote_delay, config.takeover_delay,
                                config.peer_timeout + config.fence_delay})


def around_edges(config: Config) -> List[float]:
    """Just below and just above every edge (0.1 s either side)."""
    return sorted({round(d + e, 1) for d in edges(config) for e in (-0.1, 0.1)})


def durations(config: Config) -> List[float]:
    """Durations just below and just above every edge, just below each tolerance a transient
    is held to (`held_tolerance`), plus a short and two long ones."""
    held = {round(held_tolerance(kind, config) - 0.1, 1) for kind in TRANSIENTS}
    return sorted(set(around_edges(config)) | held | {0.5, 30.0, 90.0})


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
          loss: Optional[float] = None, by: Optional[float] = None) -> Dict[str, Any]:
    """One [[fault]] table. ``duration`` None: permanent (or instant, for instant kinds)."""
    table: Dict[str, Any] = {"at": _time(at), "kind": kind, "target": target}
    if loss is not None:
        table["loss"] = loss
    if by is not None:
        table["by"] = "%+gs" % by
    if duration is not None and kind not in INSTANT:
        table["duration"] = _time(duration)
    return table


def _time(value: float) -> str:
    """Seconds as a scenario time, to the microsecond (a fault injected at a daemon's moment
    keeps its exact onset)."""
    return ("%.6f" % value).rstrip("0").rstrip(".") + "s"


def scenario(faults: Sequence[Mapping[str, Any]], master: str = "xs1",
             config: Optional[Mapping[str, Any]] = None, name: str = "PROP",
             expect: Optional[Mapping[str, Any]] = None, after: float = 150.0) -> Dict[str, Any]:
    """The scenario (as a TOML table) for a schedule: three VMs, a run ``after`` seconds longer
    than the last onset or heal; by default safety expectations only."""
    last = max([_seconds(f["at"]) + _seconds(f.get("duration", "0s")) for f in faults]
               or [FIRST_ONSET])
    return {
        "id": name,
        "title": "generated schedule",
        "cluster": {"hosts": ["xs1", "xs2"], "master": master, "vms": [dict(v) for v in VMS]},
        "config": dict(config or {}),
        "sweep": {"duration": _time(last + after)},
        "fault": [dict(f) for f in faults],
        "expect": dict(expect or SAFETY_ONLY),
    }


SAFETY_ONLY = {"liveness_bound": "none", "unjustified_fences": 99}


def held_tolerance(kind: str, config: Config) -> float:
    """How short a transient of ``kind`` must be for a generated schedule to expect no fence
    from it: the tolerances of halizard.core.timing (docs/ARCHITECTURE.md section 6). A pause
    (a freeze or a daemon stall) is held to the freeze tolerance, the watchdog's; every other
    transient to the isolation tolerance, the lease's. With a fence agent, whatever silences a
    host towards its peer (not a daemon stall: its kernel still answers) is also held to the
    fence tolerance: the master fences a peer silent for peer_timeout (finding 2 of the
    explorer, BENCHMARKS.md)."""
    b = bounds(config)
    tolerance = b.freeze_tolerance if kind in PAUSES else b.isolation_tolerance
    if config.fence_agent is not None and kind != "daemon.stall":
        tolerance = min(tolerance, b.fence_tolerance)
    return tolerance


def expectations(faults: Sequence["Spec"], config: Config) -> Dict[str, Any]:
    """What a schedule must achieve beyond safety.

    Liveness once every fault has healed: the pool is restored within the default bound, plus
    a reboot if a host may have been reset (a crash, a reboot, a long pause).

    No unjustified fence when every fault is a transient shorter than its `held_tolerance` (or
    harmless), each starting at least a watchdog timeout after the previous one healed:
    transients that follow each other closely add up, and the fence oracle sees only the
    latest stall's onset."""
    expect: Dict[str, Any] = {"unjustified_fences": 99}
    if all(f.kind in INSTANT or f.duration is not None and f.kind not in NEVER_HEAL
           for f in faults):
        reset = any(f.kind in RESETS or f.kind in PAUSES
                    and (f.duration or 0.0) >= held_tolerance(f.kind, config) for f in faults)
        expect["liveness_bound"] = "%gs" % (default_liveness_bound(config) + (seconds(
            BOOT_TIME[1] + START_AFTER_BOOT) if reset else 0.0))
    else:
        expect["liveness_bound"] = "none"
    ends = [f.at + (f.duration or 0.0) for f in faults]
    if all(f.kind in HARMLESS or f.kind in TRANSIENTS and f.duration is not None
           and f.duration < held_tolerance(f.kind, config) for f in faults) \
            and all(f.at >= max(ends[:i]) + config.watchdog_timeout
                    for i, f in enumerate(faults) if i):
        expect["unjustified_fences"] = 0
    return expect


def _seconds(text: str) -> float:
    return float(text[:-1])


# --- what a schedule is -------------------------------------------------------------------------


class Spec(NamedTuple):
    """One fault of a schedule. ``duration`` None: permanent (or instant, for instant kinds)."""
    kind: str
    target: str
    at: float
    duration: Optional[float] = None
    loss: Optional[float] = None
    by: Optional[float] = None  # a clock jump's step

    def table(self) -> Dict[str, Any]:
        return fault(self.kind, self.target, self.at, self.duration, self.loss, self.by)

    def label(self) -> str:
        loss = "" if self.loss is None else " loss=%g" % self.loss
        loss += "" if self.by is None else " by=%+gs" % self.by
        span = "" if self.duration is None or self.kind in INSTANT else " for %gs" % self.duration
        return "%s %s%s at %gs%s" % (self.kind, self.target, loss, self.at, span)


class Schedule(NamedTuple):
    """Faults, the master at the start, the run's seed and the configuration ([config] table):
    everything a run needs, in a form small enough to send to a worker process."""
    faults: Tuple[Spec, ...]
    master: str
    seed: int
    config: Tuple[Tuple[str, Any], ...] = ()

    def scenario(self, name: str = "PROP") -> Dict[str, Any]:
        expect = expectations(self.faults, _config(self.config))
        bound = expect["liveness_bound"]
        after = 150.0 if bound == "none" else max(150.0, _seconds(bound) + 10.0)
        return scenario([f.table() for f in self.faults], self.master, dict(self.config), name,
                        expect, after)


def _config(table: Tuple[Tuple[str, Any], ...]) -> Config:
    for variant in (FENCE_AGENT_VARIANT, GATEWAY_ONLY_VARIANT):
        if variant.table == table:
            return variant.config
    return load_config(dict(BUILTIN_CONFIG, **dict(table))).config


@dataclass(frozen=True)
class Variant:
    """A configuration to explore and the fault kinds its safety argument covers."""
    name: str
    config: Config
    table: Tuple[Tuple[str, Any], ...]  # the scenario's [config]: differences from the default
    kinds: Tuple[str, ...]


FENCE_AGENT_VARIANT = Variant("fence-agent", FENCE_AGENT,
                              (("fence_agent", FENCE_AGENT_TABLE["fence_agent"]),), KINDS)
GATEWAY_ONLY_VARIANT = Variant("gateway-only", GATEWAY_ONLY, (), GATEWAY_ONLY_KINDS)
VARIANTS = {v.name: v for v in (FENCE_AGENT_VARIANT, GATEWAY_ONLY_VARIANT)}


@dataclass(frozen=True)
class Space:
    """What the generator may choose from."""
    variant: Variant
    kinds: Tuple[str, ...]
    counts: Tuple[int, ...]  # how many faults
    onsets: Tuple[float, ...]  # of the first fault
    gaps: Tuple[float, ...]  # from one fault's onset to the next one's
    durations: Tuple[float, ...]
    losses: Tuple[float, ...]
    swarm: int  # enable at most this many kinds per schedule (swarm testing); 0: all
    masters: Tuple[str, ...] = ("xs1",)
    seeds: int = 1  # the run's seed is drawn from 0 .. seeds - 1
    jumps: Tuple[float, ...] = JUMPS


def random_space(variant: Variant, faults: int = 3) -> Space:
    """For random and Hypothesis exploration: up to ``faults`` faults of at most four kinds,
    onsets on the half-second grid or just off an edge, any master, any seed."""
    half_steps = [k * STEP for k in range(41)]
    return Space(variant, variant.kinds, tuple(range(1, faults + 1)),
                 tuple(FIRST_ONSET + g for g in half_steps),
                 tuple(sorted(set(half_steps) | set(around_edges(variant.config)))),
                 tuple(durations(variant.config)), LOSSES, swarm=4, masters=("xs1", "xs2"),
                 seeds=MAX_SEED)


def single_fault_space(variant: Variant) -> Space:
    """Every fault kind on every target, at two phases of the probe cycle, lasting just below and
    just above each edge and for good (where a kind can last)."""
    return Space(variant, variant.kinds, (1,), (FIRST_ONSET, FIRST_ONSET + STEP), (),
                 tuple(sorted(set(around_edges(variant.config)) | {30.0})), LOSSES, swarm=0)


def two_fault_space(variant: Variant) -> Space:
    """Every ordered pair of faults on a coarse grid: the second starts 0.5 s after the first,
    or just after the lease, the promotion, the takeover or the agent's fence would have
    happened; each lasts just under the isolation tolerance, just over the takeover delay, or
    for good; link loss only at 70%; no clock jumps (they move only the wall clock: the single
    faults and the random schedules have them). 28,125 schedules with a fence agent, 13,005
    without."""
    config = variant.config
    b = bounds(config)
    after = (config.lease_timeout, config.promote_delay, config.takeover_delay,
             config.peer_timeout + config.fence_delay)
    kinds = tuple(k for k in variant.kinds if k != "clock.jump")
    return Space(variant, kinds, (2,), (FIRST_ONSET,), (STEP,) + tuple(round(e + 0.1, 1) for e in after),
                 (round(b.isolation_tolerance - 0.1, 1), round(config.takeover_delay + 0.1, 1)),
                 (0.7,), swarm=0)


def grid_space(variant: Variant, faults: int) -> Space:
    """The exhaustive grid for schedules of ``faults`` faults (one or two)."""
    if faults == 1:
        return single_fault_space(variant)
    if faults == 2:
        return two_fault_space(variant)
    raise ValueError("exhaustive exploration covers one or two faults, not %d" % faults)


# --- the generator and its choosers --------------------------------------------------------------


class Chooser(Protocol):
    def choose(self, options: Sequence[Any]) -> Any: ...

    def integer(self, lo: int, hi: int) -> int: ...

    def boolean(self) -> bool: ...


def generate(chooser: Chooser, space: Space) -> Schedule:
    """One schedule; every decision is the chooser's."""
    kinds = _enabled(chooser, space)
    count = chooser.choose(space.counts)
    at = chooser.choose(space.onsets)
    faults = []
    for i in range(count):
        if i:
            at = round(at + chooser.choose(space.gaps), 1)
        faults.append(fault_spec(chooser, space, kinds, at))
    master = chooser.choose(space.masters)
    seed = chooser.integer(0, space.seeds - 1)
    return Schedule(tuple(faults), master, seed, space.variant.table)


def _enabled(chooser: Chooser, space: Space) -> List[str]:
    """Swarm testing: each schedule draws from a few kinds, so combinations of the same kind
    (flapping, repeated crashes) are common instead of vanishingly rare."""
    kinds = list(space.kinds)
    if not space.swarm:
        return kinds
    left = list(kinds)
    enabled = []
    for _ in range(chooser.integer(1, min(space.swarm, len(kinds)))):
        enabled.append(chooser.choose(left))
        left.remove(enabled[-1])
    return [k for k in kinds if k in enabled]


def fault_spec(chooser: Chooser, space: Space, kinds: Sequence[str], at: float) -> Spec:
    """One fault: its kind among ``kinds``, a target, a value, a duration."""
    kind = chooser.choose(kinds)
    target = chooser.choose(targets(kind))
    loss = chooser.choose(space.losses) if kind == "link.loss" else None
    by = chooser.choose(space.jumps) if kind == "clock.jump" else None
    duration = None
    if kind not in INSTANT:
        permanent = kind not in NEEDS_DURATION and chooser.boolean()
        if not permanent:
            duration = chooser.choose(space.durations)
    return Spec(kind, target, at, duration, loss, by)


class RandomChooser:
    """Seeded random choices: schedule ``index`` of exploration ``seed`` is always the same."""

    def __init__(self, seed: int, index: int = 0) -> None:
        self._random = random.Random("%d:%d" % (seed, index))

    def choose(self, options: Sequence[Any]) -> Any:
        return options[self._random.randrange(len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return self._random.randint(lo, hi)

    def boolean(self) -> bool:
        return self._random.random() < 0.5


def random_schedules(space: Space, seed: int, count: int) -> Iterator[Schedule]:
    for index in range(count):
        yield generate(RandomChooser(seed, index), space)


class HypothesisChooser:
    """Each choice is a Hypothesis draw, so Hypothesis shrinks a failing schedule choice by
    choice (towards fewer kinds, fewer faults, the first option of each list)."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies  # only the property tests need Hypothesis

        self._draw = draw
        self._st = strategies

    def choose(self, options: Sequence[Any]) -> Any:
        return self._draw(self._st.sampled_from(options))

    def integer(self, lo: int, hi: int) -> int:
        return int(self._draw(self._st.integers(lo, hi)))

    def boolean(self) -> bool:
        return bool(self._draw(self._st.booleans()))


def hypothesis_schedules(space: Space) -> Any:
    """The Hypothesis strategy of the schedules in ``space``."""
    from hypothesis import strategies

    return strategies.composite(lambda draw: generate(HypothesisChooser(draw), space))()


class ReplayChooser:
    """Follows a prefix of option indices, then takes the first option of every choice; records
    what it took and how many options each choice had."""

    def __init__(self, prefix: Sequence[int]) -> None:
        self.prefix = prefix
        self.taken: List[int] = []
        self.counts: List[int] = []

    def choose(self, options: Sequence[Any]) -> Any:
        depth = len(self.taken)
        index = self.prefix[depth] if depth < len(self.prefix) else 0
        self.taken.append(index)
        self.counts.append(len(options))
        return options[index]

    def integer(self, lo: int, hi: int) -> int:
        return int(self.choose(range(lo, hi + 1)))

    def boolean(self) -> bool:
        return bool(self.choose((False, True)))


def next_prefix(taken: Sequence[int], counts: Sequence[int]) -> Optional[List[int]]:
    """The prefix of the next schedule in depth-first order: the deepest choice that has an
    option left takes it; everything after it starts again from the first option."""
    for depth in reversed(range(len(taken))):
        if taken[depth] + 1 < counts[depth]:
            return list(taken[:depth]) + [taken[depth] + 1]
    return None


def every_schedule(space: Space) -> Iterator[Schedule]:
    """Every schedule the generator can write in ``space``, each once."""
    prefix: Optional[List[int]] = []
    while prefix is not None:
        chooser = ReplayChooser(prefix)
        yield generate(chooser, space)
        prefix = next_prefix(chooser.taken, chooser.counts)
