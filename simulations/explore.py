"""Exploration: run many generated fault schedules, shrink a failure, keep it as a regression.

    halizard simulate --explore random|exhaustive [--faults N] [--count N] [--seed S]
                      [--config-variant fence-agent|gateway-only] [--jobs J]
                      [--save-regressions [DIR]]

Random mode runs ``--count`` schedules of the seeded random chooser (schedule i of seed S is
always the same); exhaustive mode runs every schedule of the coarse grid for one or two faults.
Each run is judged on safety (invariants I1-I8 and daemon errors) and on what the schedule's
expectations ask (simulations.schedules.expectations: liveness once every fault has healed, no
unjustified fence after transients below their tolerance). The first failure is shrunk
greedily, one change at a time, while the same rule still breaks: a seed the matrix replays
(0-19), a fault dropped, a duration shortened, an onset moved earlier. It is printed as a
scenario file with its seed and replay command, and written as the next free Rnnn file: to
simulations/regressions/ (run forever by the matrix) with --save-regressions, otherwise to a
temporary directory. It also says which coverage counters (simulations.coverage: modes,
transitions, its fault kinds on the master and on a slave, the paths) no schedule reached.
"""
import datetime
import multiprocessing
import os
import re
import tempfile
import textwrap
import time
from dataclasses import dataclass
from typing import Callable, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from simulations import coverage
from simulations.matrix import DEFAULT_SEEDS, REGRESSIONS_DIR
from simulations.runner import RunResult, run_scenario
from simulations.scenario import dump_scenario, parse_scenario
from simulations.schedules import (
    FIRST_ONSET,
    INSTANT,
    STEP,
    VARIANTS,
    Schedule,
    Space,
    every_schedule,
    grid_space,
    random_schedules,
    random_space,
)

SHRINK_BUDGET = 300  # runs; a shrink is greedy, most take a few dozen
CHUNK = 8  # schedules per message to a worker: small, so a stop after a failure is quick


class Problem(NamedTuple):
    """What broke: an invariant (I1-I8, BUG) at a moment on a host, or an expectation
    (liveness, unjustified_fences)."""
    rule: str
    detail: str
    t: Optional[float] = None
    host: str = ""

    def describe(self) -> str:
        where = "" if self.t is None else " at %.1fs on %s" % (self.t, self.host)
        return "%s%s: %s" % (self.rule, where, self.detail)


def problems(result: RunResult) -> Tuple[Problem, ...]:
    unmet = [u.split(": ", 1) for u in result.unmet]
    return tuple([Problem(v.invariant, v.detail, v.t, v.host) for v in result.violations]
                 + [Problem(rule, detail) for rule, detail in unmet])


class Outcome(NamedTuple):
    """What a worker sends back for one schedule (the ``number``-th, from 0)."""
    number: int
    schedule: Schedule
    problems: Tuple[Problem, ...]
    coverage: FrozenSet[str]  # the counters the run reached (simulations.coverage)


@dataclass(frozen=True)
class Finding:
    """A failing schedule, as found and as shrunk, with what broke."""
    index: int
    found: Schedule
    minimal: Schedule
    problem: Problem
    shrink_runs: int


@dataclass(frozen=True)
class Exploration:
    runs: int
    failed: int
    wall: float
    workers: int
    coverage: FrozenSet[str]
    finding: Optional[Finding]

    @property
    def rate(self) -> float:
        return self.runs / self.wall if self.wall > 0 else 0.0


def judge(schedule: Schedule) -> RunResult:
    """One run, exactly as `halizard simulate FILE --seed S` replays it."""
    return run_scenario(parse_scenario(schedule.scenario(), "explore.toml"), schedule.seed)


def _outcome(job: Tuple[int, Schedule]) -> Outcome:
    index, schedule = job
    try:
        result = judge(schedule)
    except Exception as exc:  # reported as a problem: an exception a worker cannot send back hangs the pool
        return Outcome(index, schedule, (Problem("error", repr(exc)),), frozenset())
    return Outcome(index, schedule, problems(result), result.coverage)


def run_schedules(schedules: Iterable[Schedule], workers: int) -> Iterator[Outcome]:
    """Each schedule's outcome, in order. Worker processes fork from this one, so a mutant
    applied here runs in them too; leaving the loop early stops them."""
    jobs = enumerate(schedules)
    if workers <= 1:
        for job in jobs:
            yield _outcome(job)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(_outcome, jobs, chunksize=CHUNK)


def explore(schedules: Iterable[Schedule], spaces: Sequence[Space], workers: int,
            stop_at_first: bool = False) -> Exploration:
    """Run ``schedules``; shrink the first failure within the space of its configuration."""
    started = time.perf_counter()
    runs = failed = 0
    reached: FrozenSet[str] = frozenset()
    first: Optional[Outcome] = None
    for outcome in run_schedules(schedules, workers):
        runs += 1
        reached |= outcome.coverage
        if outcome.problems:
            failed += 1
            first = first or outcome
            if stop_at_first:
                break
    wall = time.perf_counter() - started
    finding = None
    if first is not None:
        space = next(s for s in spaces if s.variant.table == first.schedule.config)
        finding = shrink_finding(first.number, first.schedule, first.problems[0], space)
    return Exploration(runs, failed, wall, workers, reached, finding)


def broken(schedule: Schedule, rule: str) -> Optional[Problem]:
    return next((p for p in _outcome((0, schedule)).problems if p.rule == rule), None)


def shrink_finding(index: int, schedule: Schedule, problem: Problem, space: Space) -> Finding:
    runs: List[int] = []

    def fails(candidate: Schedule) -> bool:
        runs.append(1)
        return broken(candidate, problem.rule) is not None

    minimal = shrink(schedule, fails, space)
    return Finding(index, schedule, minimal, broken(minimal, problem.rule) or problem, len(runs))


def shrink(schedule: Schedule, fails: Callable[[Schedule], bool], space: Space,
           budget: int = SHRINK_BUDGET) -> Schedule:
    """Greedy: take the first smaller schedule that still fails, and start again from it,
    until none does (or the budget of runs is spent)."""
    spent = 0
    improved = True
    while improved and spent < budget:
        improved = False
        for candidate in smaller(schedule, space):
            spent += 1
            if fails(candidate):
                schedule, improved = candidate, True
                break
            if spent >= budget:
                break
    return schedule


def smaller(schedule: Schedule, space: Space) -> Iterator[Schedule]:
    """Every one-step simplification, the biggest first: a seed the matrix replays (0-19), one
    fault fewer, the whole schedule earlier (gaps kept: they are usually what matters), one
    fault shorter, one fault earlier."""
    faults = schedule.faults
    if schedule.seed >= DEFAULT_SEEDS:
        for seed in range(DEFAULT_SEEDS):
            yield schedule._replace(seed=seed)
    if len(faults) > 1:
        for i in range(len(faults)):
            yield schedule._replace(faults=faults[:i] + faults[i + 1:])
    shift = min(f.at for f in faults) - FIRST_ONSET
    if shift > 0:
        yield schedule._replace(faults=tuple(f._replace(at=round(f.at - shift, 6))
                                             for f in faults))
    for i, f in enumerate(faults):
        if f.kind not in INSTANT:
            for d in space.durations:
                if f.duration is None or d < f.duration:
                    yield schedule._replace(faults=faults[:i] + (f._replace(duration=d),)
                                            + faults[i + 1:])
    for i, f in enumerate(faults):
        for at in _earlier(f.at, [g.at for g in faults[:i]]):
            yield schedule._replace(faults=faults[:i] + (f._replace(at=at),) + faults[i + 1:])


def _earlier(at: float, before: Sequence[float]) -> List[float]:
    """Earlier onsets worth a run: the first onset, the previous fault's, halfway there, one
    step earlier."""
    floor = max([FIRST_ONSET] + [b for b in before if b <= at])
    halfway = floor + round((at - floor) / 2 / STEP) * STEP
    return sorted({round(x, 6) for x in (FIRST_ONSET, floor, halfway, at - STEP)
                   if FIRST_ONSET <= x < at})


# --- reporting and regression files -------------------------------------------------------------


def regressions_dir(explicit: Optional[str] = None) -> str:
    """Where a failure's scenario file goes: ``explicit``; else $HALIZARD_REGRESSIONS; else
    simulations/regressions/ under HALIZARD_EXPLORE=1 (`make explore`); else a temporary
    directory, so that `make test` never writes into the repository."""
    if explicit:
        return explicit
    if os.environ.get("HALIZARD_REGRESSIONS"):
        return os.environ["HALIZARD_REGRESSIONS"]
    if os.environ.get("HALIZARD_EXPLORE") == "1":
        return REGRESSIONS_DIR
    return os.path.join(tempfile.gettempdir(), "halizard-regressions")


def next_regression_id(directories: Sequence[str]) -> str:
    """The next free Rnnn across ``directories`` (a file found elsewhere keeps its number
    when it is moved into simulations/regressions/)."""
    numbers = [0]
    for directory in directories:
        if os.path.isdir(directory):
            numbers += [int(m.group(1)) for m in
                        (re.match(r"R(\d+)-", name) for name in os.listdir(directory)) if m]
    return "R%03d" % (max(numbers) + 1)


def slug(schedule: Schedule, problem: Problem) -> str:
    kinds = "-then-".join(f.kind.replace(".", "-") for f in schedule.faults)
    return "%s-%s" % (problem.rule.lower().replace("_", "-"), kinds)


def replay_command(path: str, seed: int) -> str:
    return "python -m halizard simulate %s --seed %d" % (_short(path), seed)


def _short(path: str) -> str:
    """A path below the working directory (the repository) is written relative to it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def variant_of(schedule: Schedule) -> str:
    return next((v.name for v in VARIANTS.values() if v.table == schedule.config), "custom")


def scenario_text(schedule: Schedule, problem: Problem, sid: str, path: str,
                  tags: Sequence[str], header: Sequence[str]) -> str:
    """The schedule as a scenario file in the pinned format, titled by what broke, with
    ``header`` as comment lines after the tags."""
    data = schedule.scenario(sid)
    data["title"] = "%s after %s" % (problem.rule, ", then ".join(
        "%s %s" % (f.kind, f.target) for f in schedule.faults))
    data["tags"] = list(tags) + [variant_of(schedule)]
    text = dump_scenario(parse_scenario(data, path))
    head, rest = text.split("\n[cluster]", 1)
    return "%s\n%s\n\n[cluster]%s" % (head, "\n".join("# " + line for line in header), rest)


def found(found_by: str, problem: Problem) -> List[str]:
    """Comment lines: when and how a failure was found, and what broke."""
    return textwrap.wrap("Found %s by %s. %s." % (datetime.date.today().isoformat(), found_by,
                                                  problem.describe()), 96)


def save_regression(schedule: Schedule, problem: Problem, directory: str,
                    found_by: str) -> str:
    """Write the schedule as the next free Rnnn scenario file in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    rid = next_regression_id([directory, REGRESSIONS_DIR])
    path = os.path.join(directory, "%s-%s.toml" % (rid, slug(schedule, problem)))
    header = found(found_by, problem) + [
        "Replay: %s" % replay_command(path, schedule.seed),
        "Saved by the explorer: once fixed, say here what was wrong and what changed."]
    write_text(path, scenario_text(schedule, problem, rid, path, ("regression", "explore"),
                                   header))
    return path


def write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def failure_text(path: str, schedule: Schedule) -> str:
    """What a failure prints: the scenario file, the seed and the replay command."""
    with open(path, encoding="utf-8") as handle:
        toml = handle.read()
    return "%s\nseed %d\nreplay: %s\nsaved: %s" % (toml.rstrip(), schedule.seed,
                                                   replay_command(path, schedule.seed), path)


def keep_failure(schedule: Schedule, problem: Problem, found_by: str,
                 directory: Optional[str] = None) -> str:
    """Save a failing schedule (``directory``, or `regressions_dir()`'s choice) and return what
    to print: the scenario file, its seed, the replay command."""
    path = save_regression(schedule, problem, regressions_dir(directory), found_by)
    return failure_text(path, schedule)


# --- the command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What `halizard simulate --explore` was asked to do."""
    mode: str  # "random" | "exhaustive"
    variant: str
    faults: Optional[int]
    count: int
    seed: int
    workers: int
    save_to: Optional[str]

    def space(self) -> Space:
        variant = VARIANTS[self.variant]
        if self.mode == "exhaustive":
            return grid_space(variant, self.faults or 1)
        return random_space(variant, self.faults or 3)

    def schedules(self) -> Iterable[Schedule]:
        if self.mode == "exhaustive":
            return every_schedule(self.space())
        return random_schedules(self.space(), self.seed, self.count)

    def describe(self) -> str:
        if self.mode == "exhaustive":
            return "exhaustive, %d fault(s), %s" % (self.faults or 1, self.variant)
        return "random, up to %d faults, %s, seed %d" % (self.faults or 3, self.variant, self.seed)

    def command(self) -> str:
        """The command that runs this exploration again."""
        count = " --count %d --seed %d" % (self.count, self.seed) if self.mode == "random" else ""
        return "halizard simulate --explore %s --faults %d%s --config-variant %s" % (
            self.mode, self.faults or (1 if self.mode == "exhaustive" else 3), count, self.variant)


def run_plan(plan: Plan, out: Callable[[str], None]) -> Exploration:
    result = explore(plan.schedules(), [plan.space()], plan.workers)
    out("explore %s: %d schedules in %.1fs, %.1f schedules/s (%d workers)"
        % (plan.describe(), result.runs, result.wall, result.rate, result.workers))
    out("violations: %d" % result.failed)
    space = plan.space()
    out(coverage.describe(result.coverage, space.kinds, space.variant.config.fence_agent is not None))
    finding = result.finding
    if finding is not None:
        v = finding.problem
        out("the first, schedule %d, shrunk from %d faults to %d in %d runs: %s"
            % (finding.index, len(finding.found.faults), len(finding.minimal.faults),
               finding.shrink_runs, v.describe()))
        out(keep_failure(finding.minimal, v, "`%s` (schedule %d, shrunk from %d faults to %d)"
                         % (plan.command(), finding.index, len(finding.found.faults),
                            len(finding.minimal.faults)), plan.save_to))
    return result
