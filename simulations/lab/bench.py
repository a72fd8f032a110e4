"""Failover times in the lab, for BENCHMARKS.md: `python -m simulations.lab bench`.

Each run is a fresh lab: both daemons `normal`, then one fault, then the time from the fault to
the moment every protected VM runs again (the last start in the domain log, all_back_at), with
the safety invariant checked on the same log. Each scenario's median over ``--runs`` runs is
reported for the lab's short timings and for halizard's defaults.
"""
import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from simulations.lab.api import Lab, LabTimeout
from simulations.lab.domainlog import all_back_at, overlaps

STEADY = 60.0  # s for a fresh lab's daemons to reach `normal`


class Scenario(NamedTuple):
    name: str
    fault: str
    target: str
    survivor: str
    title: str


SCENARIOS = {s.name: s for s in (
    Scenario("master-crash", "crash", "xs1", "xs2", "master crash to protected VMs running"),
    Scenario("master-nic-down", "port-down", "xs1", "xs2",
             "master NIC down to protected VMs running"),
    Scenario("slave-crash", "crash", "xs2", "xs1", "slave crash to protected VMs running"),
)}


def measure(scenario: Scenario, timings: str, base: Optional[str] = None,
            vms: int = 4) -> float:
    """One run: seconds from the fault until every protected VM runs again."""
    directory = tempfile.mkdtemp(prefix="hzbench-", dir=base)
    lab = Lab(directory, timings=timings, vms=vms)
    try:
        lab.up()
        lab.wait_until(lab.steady, STEADY, "both daemons normal")
        at = lab.fault(scenario.fault, scenario.target)

        def back(status: Dict[str, Any]) -> bool:
            return lab.protected_running(status) and sorted(
                status["hosts"][scenario.survivor]["domains"]) == sorted(status["protected"])

        lab.wait_until(back, lab.liveness_bound, "protected VMs running on %s"
                       % scenario.survivor)
        log = lab.domain_log()
        found = overlaps(log)
        if found:
            raise AssertionError("safety: %s" % "; ".join(str(o) for o in found))
        when = all_back_at(log, lab.status()["protected"], at)
        assert when is not None
        return when - at
    finally:
        lab.down()
        shutil.rmtree(directory, ignore_errors=True)


def run(names: List[str], timings: List[str], runs: int, base: Optional[str],
        out: Callable[[str], None] = print) -> Dict[str, Any]:
    results: Dict[str, Any] = {"runs": runs, "python": sys.version.split()[0], "scenarios": {}}
    for timing in timings:
        for name in names:
            scenario = SCENARIOS[name]
            samples: List[float] = []
            failures: List[str] = []
            for i in range(runs):
                began = time.monotonic()
                try:
                    samples.append(measure(scenario, timing, base))
                    out("%-16s %-8s run %d: %.1f s (wall %.0f s)" % (
                        name, timing, i + 1, samples[-1], time.monotonic() - began))
                except (LabTimeout, AssertionError) as exc:
                    failures.append(str(exc).splitlines()[0])
                    out("%-16s %-8s run %d: FAILED %s" % (name, timing, i + 1, failures[-1]))
            results["scenarios"]["%s/%s" % (name, timing)] = {
                "title": scenario.title, "timings": timing, "samples": [round(s, 2) for s in samples],
                "median": round(statistics.median(samples), 2) if samples else None,
                "min": round(min(samples), 2) if samples else None,
                "max": round(max(samples), 2) if samples else None,
                "failures": failures}
    return results


def table(results: Dict[str, Any]) -> str:
    lines = ["%-44s %-8s %6s %6s %6s %s" % ("scenario", "timings", "median", "min", "max", "runs"),
             "-" * 80]
    for row in results["scenarios"].values():
        lines.append("%-44s %-8s %6s %6s %6s %d%s" % (
            row["title"], row["timings"],
            *("%.1fs" % row[k] if row[k] is not None else "-" for k in ("median", "min", "max")),
            len(row["samples"]), "" if not row["failures"] else " (%d failed)"
            % len(row["failures"])))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    timings = args.timings.split(",")
    if unknown or any(t not in ("short", "default") for t in timings):
        print("scenarios: %s; timings: short, default" % ", ".join(SCENARIOS), file=sys.stderr)
        return 2
    results = run(names, timings, args.runs, args.dir, lambda line: print(line, flush=True))
    print(table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    failed = any(row["failures"] for row in results["scenarios"].values())
    return 1 if failed else 0
