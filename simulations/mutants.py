"""The mutation catalog: deliberately broken variants of the decision core (and one of the world),
each one of the bugs an HA daemon for two hosts can have (research/simulation.md section 7). The
simulator's checker must catch every one: a mutant that passes the matrix is a hole in the
checker or in the matrix.

    python -m simulations.mutants [NAME ...] [--seeds N]
    python -m simulations.mutants --explore [NAME ...] [--count N] [--explore-seed S] [--save DIR]
                                  [--no-corpus]

runs the built-in matrix against each mutant and reports, for each, the first scenario and seed
that caught it and how (the invariant, or the unmet expectation). With --explore it runs the
explorer instead (simulations/explore.py: random schedules, with a fence agent and without in
turn, up to --count of each) and reports, for each mutant, how many schedules it took and the
minimal schedule that caught it, written to DIR (a temporary directory by default) with the
command that replays it. The explorer judges what holds for every schedule: safety, including
the silence rules in true time (I7), decisions on fresh reads (I5) and the fence devices'
truth (I8); liveness once every fault has healed; no unjustified fence after transients below
their tolerance. A mutant no random schedule caught is then tried on the explorer's corpus (the
saved regressions, judged by those same rules), unless --no-corpus: the report says so.

A mutant is a textual change of one module's source, executed in place of the module for the
duration of the run (and inherited by the worker processes); the original is restored afterwards.
"""
import argparse
import importlib
import inspect
import itertools
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from simulations.explore import explore, found, problems, scenario_text, write_text
from simulations.matrix import BUILTIN_MATRIX, DEFAULT_SEEDS, REGRESSIONS_DIR, run_matrix
from simulations.runner import run_scenario, scenario_config
from simulations.scenario import find_scenarios, load_scenario, parse_scenario
from simulations.schedules import VARIANTS, Spec, expectations, random_schedules, random_space


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what the mutant gets wrong, in the operator's words
    module: str
    old: str  # exactly one occurrence in the module's source
    new: str


CATALOG: Tuple[Mutant, ...] = (
    Mutant("fence-unconfirmed", "restarts VMs once the fence agent has been started, without "
           "its confirmation that the peer is off",
           "halizard.core.decide",
           "            if s.fence_confirmed_at is not None:\n                s = evolve(s, peer_dead",
           "            if s.fence_action is not None:\n                s = evolve(s, peer_dead"),
    Mutant("fence-failure-is-success", "takes a failed fence for a successful one (HA-Lizard's "
           "FENCE_HA_ONFAIL=1)",
           "halizard.core.decide",
           '            changes["fence_failures"] = s.fence_failures + 1',
           '            changes["fence_failures"] = s.fence_failures + 1\n'
           '            changes["fence_confirmed_at"] = obs.now'),
    Mutant("never-self-fence", "an isolated host keeps its guests (ignores losing both the "
           "peer and the gateway)",
           "halizard.core.decide",
           "    if ha_on and f.isolated and s.mode not in (Mode.SELF_FENCED, Mode.DISABLED):",
           "    if False and f.isolated and s.mode not in (Mode.SELF_FENCED, Mode.DISABLED):"),
    Mutant("wall-clock", "measures silence on the wall clock instead of the monotonic one",
           "simulations.executor",
           "        return fx.Now(clock.monotonic(t), clock.wall(t),",
           "        return fx.Now(clock.wall(t), clock.wall(t),"),
    Mutant("takeover-before-self-fence", "takes over once the peer's lease has run out, before "
           "its self-fence deadline and watchdog (the timing inequality inverted)",
           "halizard.core.decide",
           "        elif silence >= config.takeover_delay:",
           "        elif silence >= config.lease_timeout:"),
    Mutant("promote-too-early", "a slave promotes itself while the master may still be acting",
           "halizard.core.decide",
           "    return silence >= config.promote_delay",
           "    return silence >= config.peer_timeout"),
    Mutant("silence-across-deafness", "counts the peer's silence through its own loss of "
           "contact or a stall (the miss counter is not reset on recovery)",
           "halizard.core.decide",
           "    if not f.lease_held or s.lease_lapsed or lease_gap(config, state, s) \\",
           "    if not f.lease_held \\"),
    Mutant("old-master-keeps-role", "a returning old master is never demoted: both masters "
           "keep the role",
           "halizard.core.decide",
           "    return not (mine < theirs or (mine == theirs and (s.local_uuid or \"\") > peer.uuid))",
           "    return True"),
    Mutant("stale-records-during-declaration", "trusts VM records that a declaration under way "
           "is about to reset (a stale power state)",
           "halizard.core.decide",
           '    if any(t.kind == "declare_dead" for t in s.tasks):',
           "    if False:"),
    Mutant("act-after-stall", "acts on observations made before a stall without reading them "
           "again",
           "halizard.loop",
           "        if now.monotonic - begin.monotonic <= templates.read_budget:",
           "        if True:"),
    Mutant("symmetric-tie-break", "both hosts fence each other at the same moment when they "
           "lose each other but both see the gateway (N01)",
           "halizard.core.decide",
           "    return config.peer_timeout + (0.0 if is_master else config.fence_delay)",
           "    return config.peer_timeout"),
    Mutant("feed-without-lease", "keeps feeding the watchdog after its lease is lost, so an "
           "isolated host that hangs is never reset",
           "halizard.core.decide",
           "    if not f.lease_held or f.lease_expires is None:\n        return (), ()\n"
           "    if s.watchdog_armed:\n"
           '        return (WatchdogControl("feed", timeout, f.lease_expires),), FEED',
           "    if f.lease_expires is None:\n        return (), ()\n"
           "    if s.watchdog_armed:\n"
           '        return (WatchdogControl("feed", timeout, f.now + config.probe_interval),), FEED'),
    Mutant("lying-fence-device", "the fence device says off and leaves the host running (a "
           "world mutant: the checker must not trust the fence agent either)",
           "simulations.world.world",
           '                    self.power_off(target, "fenced")',
           "                    pass"),
)


def by_name(name: str) -> Mutant:
    for mutant in CATALOG:
        if mutant.name == name:
            return mutant
    raise KeyError("no mutant %r (known: %s)" % (name, ", ".join(m.name for m in CATALOG)))


def apply(mutant: Mutant) -> Callable[[], None]:
    """Execute the mutated source in place of the module; returns the undo. Names other loaded
    halizard and simulations modules imported from it are rebound too."""
    module = importlib.import_module(mutant.module)
    source = inspect.getsource(module)
    if source.count(mutant.old) != 1:
        raise ValueError("mutant %s: %r occurs %d times in %s, not once"
                         % (mutant.name, mutant.old, source.count(mutant.old), mutant.module))
    code = compile(source.replace(mutant.old, mutant.new), module.__file__ or mutant.module,
                   "exec")
    saved = dict(module.__dict__)
    exec(code, module.__dict__)  # noqa: S102 - the point of a mutant
    rebound: List[Tuple[Any, str, Any]] = []
    for other in list(sys.modules.values()):
        name = getattr(other, "__name__", "") or ""
        if other is module or not name.startswith(("halizard", "simulations")):
            continue
        for attr, value in list(vars(other).items()):
            replacement = module.__dict__.get(attr)
            if saved.get(attr) is value and replacement is not None and replacement is not value:
                rebound.append((other, attr, value))
                setattr(other, attr, replacement)

    def undo() -> None:
        module.__dict__.clear()
        module.__dict__.update(saved)
        for other, attr, value in rebound:
            setattr(other, attr, value)

    return undo


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    caught: bool
    scenario: Optional[str] = None
    seed: Optional[int] = None
    how: str = ""
    replay: str = ""
    schedules: int = 0  # --explore: how many schedules ran before one caught it
    minimal: str = ""  # --explore: the faults of the minimal schedule that caught it


def hunt(mutant: Mutant, scenarios: Sequence[Any], seeds: int,
         workers: Optional[int] = None) -> Verdict:
    """Run the scenarios under the mutant; the first failing run (in matrix order) catches it."""
    return _first_failure(mutant, scenarios, seeds=seeds, workers=workers)


def _first_failure(mutant: Mutant, scenarios: Sequence[Any], **matrix: Any) -> Verdict:
    undo = apply(mutant)
    try:
        summaries, _ = run_matrix(scenarios, **matrix)
    finally:
        undo()
    for summary in summaries:
        for run in summary.runs:
            if not run.passed:
                how = "; ".join(["%s %s" % (v.invariant, v.detail) for v in run.violations[:1]]
                                + run.unmet[:1])
                return Verdict(mutant, True, summary.scenario.id, run.seed, how,
                               "python -m simulations.mutants %s --replay %s --seed %d"
                               % (mutant.name, summary.scenario.source, run.seed))
    return Verdict(mutant, False)


def explore_hunt(mutant: Mutant, count: int, seed: int, save: str,
                 workers: Optional[int] = None, use_corpus: bool = True) -> Verdict:
    """Random schedules under the mutant, with a fence agent and without in turn, until one
    breaks a rule; that one is shrunk and written to ``save``. If none does, the explorer's
    corpus (`corpus`) under the mutant, as a last resort."""
    spaces = [random_space(VARIANTS[name]) for name in ("fence-agent", "gateway-only")]
    schedules = itertools.chain.from_iterable(
        zip(*[random_schedules(space, seed, count) for space in spaces]))
    undo = apply(mutant)
    try:
        result = explore(schedules, spaces, workers or os.cpu_count() or 1, stop_at_first=True)
        if result.finding is None:
            if not use_corpus:
                return Verdict(mutant, False, schedules=result.runs)
            return _corpus_verdict(mutant, result.runs)
    finally:
        undo()
    return _explore_verdict(mutant, result.finding, result.runs, save, seed, count)


def corpus(directory: str = REGRESSIONS_DIR) -> List[Any]:
    """The explorer's corpus: the schedules it once found breaking a rule (the saved
    regressions), each judged by the explorer's own rules (safety; liveness once every fault
    has healed; no unjustified fence after transients below their tolerance) instead of its
    named expectations. Like Hypothesis's database of failing examples, it is replayed to find
    again what random schedules reach only rarely."""
    out = []
    for path in find_scenarios([directory]):
        scenario = load_scenario(path)
        specs = tuple(Spec(f.kind, f.target, f.at, f.duration, f.param("loss"), f.param("by"))
                      for f in scenario.faults)
        expect = expectations(specs, scenario_config(scenario))
        bound = expect["liveness_bound"]
        after = 150.0 if bound == "none" else max(150.0, float(bound[:-1]) + 10.0)
        data = dict(scenario.raw, expect=expect,
                    sweep={"duration": "%gs" % (scenario.last_event() + after)})
        out.append(parse_scenario(data, path))
    return out


def _corpus_verdict(mutant: Mutant, ran: int) -> Verdict:
    """The first run of the corpus, in file and seed order, that breaks a rule (the mutant is
    applied by the caller); the scenario is already minimal."""
    for scenario in corpus():
        for seed in range(DEFAULT_SEEDS):
            ran += 1
            found = problems(run_scenario(scenario, seed))
            if found:
                return Verdict(mutant, True, scenario.source, seed, found[0].describe(),
                               "python -m simulations.mutants %s --replay %s --seed %d"
                               % (mutant.name, scenario.source, seed), ran,
                               "random schedules missed it; the corpus: %s" % scenario.id)
    return Verdict(mutant, False, schedules=ran)


def _explore_verdict(mutant: Mutant, finding: Any, ran: int, save: str, seed: int,
                     count: int) -> Verdict:
    schedule, v = finding.minimal, finding.problem
    os.makedirs(save, exist_ok=True)
    path = os.path.join(save, "%s.toml" % mutant.name)
    replay = "python -m simulations.mutants %s --replay %s --seed %d" % (mutant.name, path,
                                                                          schedule.seed)
    header = found("`python -m simulations.mutants --explore %s --count %d --explore-seed %d` (schedule "
                   "%d)" % (mutant.name, count, seed, finding.index), v) + ["Replay: " + replay]
    write_text(path, scenario_text(schedule, v, "M-" + mutant.name, path, ("mutant",), header))
    faults = ", then ".join(f.label() for f in schedule.faults)
    return Verdict(mutant, True, path, schedule.seed, v.describe(), replay,
                   ran, "%s (master %s)" % (faults, schedule.master))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.mutants")
    parser.add_argument("names", nargs="*", help="mutants to run (default: the whole catalog)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--replay", help="run only this scenario file")
    parser.add_argument("--seed", type=int, help="with --replay: only this seed")
    parser.add_argument("--list", action="store_true", help="list the catalog and stop")
    parser.add_argument("--explore", action="store_true", help="hunt with the explorer's random "
                        "schedules instead of the matrix")
    parser.add_argument("--count", type=int, default=300, help="with --explore: schedules per "
                        "configuration (default 300)")
    parser.add_argument("--explore-seed", type=int, default=0, help="with --explore: the "
                        "exploration's seed")
    parser.add_argument("--save", default=os.path.join(tempfile.gettempdir(), "halizard-mutants"),
                        help="with --explore: where the minimal schedules are written")
    parser.add_argument("--no-corpus", action="store_true", help="with --explore: random "
                        "schedules only, not the saved regressions after them")
    parser.add_argument("--jobs", type=int, help="worker processes (default: CPUs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for m in CATALOG:
            print("%-34s %s" % (m.name, m.bug))
        return 0
    try:
        mutants = [by_name(n) for n in args.names] if args.names else list(CATALOG)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    paths = [args.replay] if args.replay else find_scenarios(list(BUILTIN_MATRIX))
    scenarios = [load_scenario(p) for p in paths]
    caught = 0
    for mutant in mutants:
        if args.explore:
            verdict = explore_hunt(mutant, args.count, args.explore_seed, args.save, args.jobs,
                                   not args.no_corpus)
        elif args.replay and args.seed is not None:
            verdict = hunt_one(mutant, scenarios[0], args.seed)
        else:
            verdict = hunt(mutant, scenarios, args.seeds, args.jobs)
        caught += verdict.caught
        if args.explore:
            print(_explore_line(verdict))
        elif verdict.caught:
            print("caught  %-34s by %s seed %s: %s" % (mutant.name, verdict.scenario,
                                                      verdict.seed, verdict.how))
        else:
            print("MISSED  %-34s %s" % (mutant.name, mutant.bug))
        sys.stdout.flush()
    print("mutation score: %d of %d caught" % (caught, len(mutants)))
    return 0 if caught == len(mutants) else 1


def _explore_line(verdict: Verdict) -> str:
    name = verdict.mutant.name
    if not verdict.caught:
        return "MISSED  %-34s in %d schedules: %s" % (name, verdict.schedules, verdict.mutant.bug)
    return ("caught  %-34s after %d schedules by %s\n        minimal: %s, seed %d\n"
            "        replay: %s" % (name, verdict.schedules, verdict.how, verdict.minimal,
                                    verdict.seed or 0, verdict.replay))


def hunt_one(mutant: Mutant, scenario: Any, seed: int) -> Verdict:
    return _first_failure(mutant, [scenario], seed=seed, workers=1)


if __name__ == "__main__":
    sys.exit(main())
