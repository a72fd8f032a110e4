"""Benchmarks behind BENCHMARKS.md: measured, never asserted in timed tests.

    python -m simulations.bench speed                 simulator speed (one core) and matrix wall
    python -m simulations.bench failover [--seeds N]  master and slave crash failover times
    python -m simulations.bench loss [--host-days D]  fences under 30% loss, 500 ms jitter
    python -m simulations.bench idle                  XenAPI calls per minute in a quiet pool
    python -m simulations.bench alerts                what alerts cost a decision, how many come

Each prints a human line per figure and a final JSON object (for the record in BENCHMARKS.md).
"""
import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

from halizard.toml import loads
from simulations.matrix import BUILTIN_DIR, BUILTIN_MATRIX, percentile, run_matrix
from simulations.runner import RunResult, Simulation, run_scenario
from simulations.scenario import find_scenarios, load_scenario, parse_scenario
from simulations.world.scheduler import NS

POOL = """
[cluster]
hosts = ["xs1", "xs2"]
master = "xs1"
vms = [ { name = "vm-a", host = "xs1", restart = "restart" },
        { name = "vm-b", host = "xs2", restart = "restart" } ]
"""

QUIET = """
id = "bench-quiet"
title = "Two hosts, two VMs, nothing happens for ten minutes"
""" + POOL + """
[sweep]
duration = "10m"
[expect]
liveness_bound = "none"
fenced = []
"""

LOSSY = """
id = "bench-loss"
title = "30% loss and 500 ms jitter on the heartbeat path, all day"
""" + POOL + """
[sweep]
duration = "1d"
[[fault]]
at = "0s"
kind = "link.loss"
target = "xs1-xs2"
loss = 0.3
[[fault]]
at = "0s"
kind = "link.latency"
target = "xs1-xs2"
latency = "1ms"
jitter = "500ms"
[expect]
liveness_bound = "none"
master_at_end = "xs1"
fenced = []
unjustified_fences = 0
vm_final = { vm-a = "xs1", vm-b = "xs2" }
"""


def _environment() -> Dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def speed(runs: int) -> Dict[str, Any]:
    quiet = parse_scenario(loads(QUIET), "bench-quiet")
    walls = []
    for seed in range(runs):
        started = time.perf_counter()  # the whole run: building the world, running, judging
        run_scenario(quiet, seed)
        walls.append(time.perf_counter() - started)
    median = statistics.median(walls) * 1000.0
    print("quiet 10 min, one core: median %.1f ms, min %.1f ms over %d runs (%.0fx real time)"
          % (median, min(walls) * 1000.0, runs, 600.0 / statistics.median(walls)))
    scenarios = [load_scenario(p) for p in find_scenarios(list(BUILTIN_MATRIX))]
    summaries, wall = run_matrix(scenarios, seeds=20)
    total = sum(len(s.runs) for s in summaries)
    failed = sum(1 for s in summaries if not s.passed)
    print("built-in matrix, 20 seeds, %d workers: %d runs in %.1f s, %d failed"
          % (os.cpu_count() or 1, total, wall, failed))
    return {"quiet_10min_ms_median": round(median, 1), "quiet_10min_ms_min": round(min(walls) * 1000, 1),
            "matrix_runs": total, "matrix_wall_s": round(wall, 1), "matrix_failed": failed}


def _failover_of(path: str, seeds: int) -> Tuple[List[float], List[float], int]:
    scenario = load_scenario(path)
    summaries, _ = run_matrix([scenario], seeds=seeds)
    runs = summaries[0].runs
    failovers = sorted(r.failover for r in runs if r.failover is not None)
    margins = [r.margin for r in runs if r.margin is not None]
    failed = sum(1 for r in runs if not r.passed)
    return failovers, margins, failed


def failover(seeds: int) -> Dict[str, Any]:
    out = {}  # type: Dict[str, Any]
    for name, file, target in (("master_crash", "H02-master-crash.toml", 30.0),
                               ("slave_crash", "H01-slave-crash.toml", 20.0),
                               ("master_isolated", "N02-master-nic-down.toml", 30.0)):
        failovers, margins, failed = _failover_of(os.path.join(BUILTIN_DIR, file), seeds)
        p50, p99 = percentile(failovers, 50), percentile(failovers, 99)
        print("%s (%s), %d seeds: failover p50 %.1f s, p99 %.1f s, max %.1f s (target p99 <= %g s); "
              "min margin %.1f s; %d failed" % (name, file, seeds, p50 or 0, p99 or 0,
                                               failovers[-1] if failovers else 0, target,
                                               min(margins) if margins else float("nan"), failed))
        out[name] = {"seeds": seeds, "p50_s": p50, "p99_s": p99,
                     "max_s": failovers[-1] if failovers else None,
                     "min_margin_s": min(margins) if margins else None, "failed": failed}
    return out


def _loss_run(seed: int) -> RunResult:
    return run_scenario(parse_scenario(loads(LOSSY), "bench-loss"), seed)


def loss(host_days: float, workers: int) -> Dict[str, Any]:
    runs = int(-(-host_days // 2))  # two hosts per simulated day
    started = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        results = pool.map(_loss_run, range(runs), chunksize=1)
    wall = time.perf_counter() - started
    fences = [f for r in results for f in r.fences]
    unjustified = [f for f in fences if f.verdict != "justified"]
    violations = [v for r in results for v in r.violations]
    failed = [r.seed for r in results if not r.passed]
    print("30%% loss + 500 ms jitter on the heartbeat path: %d host-days, %d fences (%d "
          "unjustified), %d safety violations, %d runs failed, %.0f s wall"
          % (runs * 2, len(fences), len(unjustified), len(violations), len(failed), wall))
    return {"host_days": runs * 2, "fences": len(fences), "unjustified_fences": len(unjustified),
            "violations": len(violations), "failed_seeds": failed[:20], "wall_s": round(wall)}


IDLE = """
id = "bench-idle"
title = "Two hosts, twenty VMs, nothing happens for ten minutes"
[cluster]
hosts = ["xs1", "xs2"]
master = "xs1"
vms = [ %s ]
[sweep]
duration = "10m"
[expect]
liveness_bound = "none"
fenced = []
""" % ", ".join('{ name = "vm-%02d", host = "%s", restart = "restart" }'
                % (i, "xs1" if i % 2 else "xs2") for i in range(20))


def idle_calls() -> Dict[str, Any]:
    """XenAPI calls per minute that the two daemons make while nothing happens, counted where
    they arrive (each host's xapi) after the first minute (start-up). The simulated executor
    makes the calls the real one makes: the loop and the decisions are the same."""
    from halizard.core.config import load_config
    from simulations.runner import BUILTIN_CONFIG

    sim = Simulation(parse_scenario(loads(IDLE), "bench-idle"), 0,
                     load_config(BUILTIN_CONFIG).config)
    counts: Dict[str, int] = {}
    xapi = sim.world.xapi
    call = xapi.call

    def counting(host: str, method: str, params: Any, reply: Any, transport: str = "tcp") -> None:
        if sim.world.now >= 60 * NS:
            key = "%s %s" % (host, method)
            counts[key] = counts.get(key, 0) + 1
        call(host, method, params, reply, transport)

    xapi.call = counting  # count, then pass on
    sim.run()
    minutes = 9.0
    total = sum(counts.values()) / minutes
    print("idle, 2 hosts and 20 VMs: %.1f XenAPI calls per minute (target <= 12)" % total)
    for key in sorted(counts):
        print("  %-40s %.1f/min" % (key, counts[key] / minutes))
    return {"calls_per_minute": round(total, 1),
            "by_method": {k: round(v / minutes, 1) for k, v in sorted(counts.items())}}


def _decisions(scenario: Any, seed: int) -> List[Tuple[str, Any, Any, Tuple[Any, ...]]]:
    """Every (host, config, decision, outcomes) of one run, as the daemons made them."""
    from halizard.core.config import load_config
    from simulations.runner import BUILTIN_CONFIG

    sim = Simulation(scenario, seed, load_config(BUILTIN_CONFIG).config)
    seen: List[Tuple[str, Any, Any, Tuple[Any, ...]]] = []
    for name, daemon in sim.daemons.items():
        daemon.on_enacted = (lambda host: lambda d, o: seen.append(
            (host, sim.configs[host], d, o)))(name)
    sim.run()
    return seen


def alerts_bench(seeds: int) -> Dict[str, Any]:
    """What the alerts cost each decision (halizard.core.alerts.observe, as the executor calls
    it), and how many the administrator receives: per scenario of the matrix, and over days of
    30% heartbeat loss."""
    from halizard.core.alerts import AlertBook, AlertPolicy, observe

    out: Dict[str, Any] = {}
    policy = AlertPolicy()
    for name, scenario in (("quiet", parse_scenario(loads(QUIET), "bench-quiet")),
                           ("master_crash", load_scenario(os.path.join(
                               BUILTIN_DIR, "H02-master-crash.toml")))):
        decisions = _decisions(scenario, 0)
        best = float("inf")
        for _ in range(5):
            books = {h: AlertBook(h) for h, _, _, _ in decisions}
            started = time.perf_counter()
            for host, config, decision, outcomes in decisions:
                books[host], _ = observe(books[host], policy, config, decision, outcomes)
            best = min(best, time.perf_counter() - started)
        micro = best / len(decisions) * 1e6
        print("alerts, %s: %.1f us per decision (%d decisions, best of 5)"
              % (name, micro, len(decisions)))
        out["us_per_decision_" + name] = round(micro, 1)
    scenarios = [load_scenario(p) for p in find_scenarios(list(BUILTIN_MATRIX))]
    counts = []
    for scenario in scenarios:
        result = run_scenario(scenario, 0, alerts=True)
        per_host: Dict[str, int] = {}
        for _, host, _ in result.alerts:
            per_host[host] = per_host.get(host, 0) + 1
        counts.append((max(per_host.values()) if per_host else 0, len(result.alerts),
                       scenario.id))
    counts.sort(reverse=True)
    total = sum(c[1] for c in counts)
    print("alerts over the matrix (seed 0): %d in %d scenarios, %d with none; most to one host: %s"
          % (total, len(counts), sum(1 for c in counts if not c[1]),
             ", ".join("%s %d" % (sid, most) for most, _, sid in counts[:5])))
    out["matrix_alerts"] = total
    out["matrix_most_to_one_host"] = {sid: most for most, _, sid in counts[:5]}
    lossy = parse_scenario(loads(LOSSY), "bench-loss")
    alerts = sum(len(run_scenario(lossy, seed, alerts=True).alerts) for seed in range(seeds))
    print("alerts under 30%% loss + 500 ms jitter: %d in %d host-days" % (alerts, seeds * 2))
    out["loss_alerts"] = alerts
    out["loss_host_days"] = seeds * 2
    return out


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.bench")
    sub = parser.add_subparsers(dest="what")
    s = sub.add_parser("speed")
    s.add_argument("--runs", type=int, default=21)
    f = sub.add_parser("failover")
    f.add_argument("--seeds", type=int, default=200)
    lo = sub.add_parser("loss")
    lo.add_argument("--host-days", type=float, default=1000.0)
    lo.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    sub.add_parser("idle")
    al = sub.add_parser("alerts")
    al.add_argument("--loss-days", type=int, default=5, help="runs of a day of 30%% loss")
    args = parser.parse_args(argv)
    record = {"environment": _environment()}  # type: Dict[str, Any]
    if args.what in (None, "speed"):
        record["speed"] = speed(getattr(args, "runs", 21))
    if args.what in (None, "failover"):
        record["failover"] = failover(getattr(args, "seeds", 200))
    if args.what == "idle":
        record["idle"] = idle_calls()
    if args.what == "alerts":
        record["alerts"] = alerts_bench(args.loss_days)
    if args.what == "loss":
        record["loss"] = loss(args.host_days, args.jobs)
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


