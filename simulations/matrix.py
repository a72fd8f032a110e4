"""Run scenarios over many seeds (in parallel across cores) and summarise them.

The summary's JSON shape is pinned by ../shared/SCENARIO-FORMAT.md.
"""
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from simulations.runner import RunResult, run_scenario
from simulations.scenario import Scenario

DEFAULT_SEEDS = 20
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")
REGRESSIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")
# What `halizard simulate` runs with no files: the named scenarios and every saved regression.
BUILTIN_MATRIX = (BUILTIN_DIR, REGRESSIONS_DIR)


@dataclass
class ScenarioSummary:
    scenario: Scenario
    runs: List[RunResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.runs)

    @property
    def failovers(self) -> List[float]:
        return sorted(r.failover for r in self.runs if r.failover is not None)

    @property
    def min_margin(self) -> Optional[float]:
        margins = [r.margin for r in self.runs if r.margin is not None]
        return min(margins) if margins else None

    @property
    def unjustified(self) -> int:
        return sum(r.unjustified for r in self.runs)


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    rank = max(1, int(-(-q * len(values) // 100)))  # ceil(q/100 * n)
    return values[min(rank, len(values)) - 1]


def seeds_for(scenario: Scenario, seeds: Optional[int], seed: Optional[int]) -> List[int]:
    if seed is not None:
        return [seed]
    count = seeds if seeds is not None else (scenario.seeds or DEFAULT_SEEDS)
    return list(range(count))


_BASE: Optional[Tuple[Optional[Mapping[str, Any]], str]] = None


def _init(base: Optional[Mapping[str, Any]], base_source: str) -> None:
    global _BASE
    _BASE = (base, base_source)


def _run(job: Tuple[Scenario, int]) -> RunResult:
    scenario, seed = job
    assert _BASE is not None
    base, source = _BASE
    return run_scenario(scenario, seed, base, source)


def run_matrix(scenarios: Sequence[Scenario], seeds: Optional[int] = None, seed: Optional[int] = None,
               base: Optional[Mapping[str, Any]] = None, base_source: str = "built-in configuration",
               workers: Optional[int] = None) -> Tuple[List[ScenarioSummary], float]:
    jobs = [(s, k) for s in scenarios for k in seeds_for(s, seeds, seed)]
    started = time.perf_counter()
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.Pool(workers, initializer=_init, initargs=(base, base_source)) as pool:
            results = pool.map(_run, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    else:
        _init(base, base_source)
        results = [_run(job) for job in jobs]
    wall = time.perf_counter() - started
    by_id: Dict[int, List[RunResult]] = {}
    for (s, _), r in zip(jobs, results):
        by_id.setdefault(id(s), []).append(r)
    return [ScenarioSummary(s, by_id.get(id(s), [])) for s in scenarios], wall


def reached(summaries: Sequence[ScenarioSummary]) -> FrozenSet[str]:
    """Every coverage counter (simulations.coverage) some run reached."""
    return frozenset().union(*[r.coverage for s in summaries for r in s.runs])


def replay_command(scenario: Scenario, seed: int, config_path: Optional[str]) -> str:
    extra = " --config %s" % config_path if config_path else ""
    return "halizard simulate %s --seed %d%s" % (scenario.source, seed, extra)


def to_json(summaries: Sequence[ScenarioSummary], wall: float, config_path: Optional[str]) -> Dict[str, Any]:
    out = []
    for s in summaries:
        violations = []
        for r in s.runs:
            for v in r.violations:
                violations.append({
                    "invariant": v.invariant, "seed": r.seed, "t": "%.1fs" % v.t,
                    "host": v.host, "detail": v.detail,
                    "replay": replay_command(s.scenario, r.seed, config_path),
                })
            for u in r.unmet:
                violations.append({
                    "invariant": "expectation", "seed": r.seed, "t": None, "detail": u,
                    "replay": replay_command(s.scenario, r.seed, config_path),
                })
        failovers = s.failovers
        out.append({
            "id": s.scenario.id,
            "title": s.scenario.title,
            "runs": len(s.runs),
            "passed": s.passed,
            "violations": violations,
            "failover_s": None if not failovers else {
                "p50": round(percentile(failovers, 50) or 0.0, 2),
                "p99": round(percentile(failovers, 99) or 0.0, 2),
                "max": round(failovers[-1], 2),
            },
            "unjustified_fences": s.unjustified,
            "min_margin_s": None if s.min_margin is None else round(s.min_margin, 2),
        })
    return {
        "scenarios": out,
        "summary": {
            "scenarios": len(summaries),
            "runs": sum(len(s.runs) for s in summaries),
            "violations": sum(len(r.violations) for s in summaries for r in s.runs),
            "failed": sum(1 for s in summaries if not s.passed),
            "wall_s": round(wall, 2),
        },
    }


def expectation_text(scenario: Scenario) -> str:
    e = scenario.expect
    parts = []
    if e.master_at_end != "any":
        parts.append("master %s" % e.master_at_end)
    if e.fenced != "any":
        parts.append("fenced [%s]" % ",".join(e.fenced))
    if e.liveness_bound == "none":
        parts.append("stand down")
    moved = [vm for vm, host in e.vm_final if host not in ("any",)]
    if moved:
        parts.append("%d VMs pinned" % len(moved))
    return ", ".join(parts) or "safety only"


def table(summaries: Sequence[ScenarioSummary], wall: float) -> str:
    rows = [("scenario", "expectation", "runs", "result", "failover p50/p99", "min margin")]
    for s in summaries:
        f = s.failovers
        failover = "-" if not f else "%.1fs / %.1fs" % (percentile(f, 50) or 0.0,
                                                         percentile(f, 99) or 0.0)
        margin = "-" if s.min_margin is None else "%.1fs" % s.min_margin
        failed = sum(1 for r in s.runs if not r.passed)
        result = "pass" if s.passed else "FAIL (%d)" % failed
        rows.append((s.scenario.id, expectation_text(s.scenario), str(len(s.runs)), result,
                     failover, margin))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    runs = sum(len(s.runs) for s in summaries)
    failed = sum(1 for s in summaries if not s.passed)
    lines.append("")
    lines.append("%d scenarios, %d runs, %d failed, %.1fs wall" % (len(summaries), runs, failed, wall))
    return "\n".join(lines)
