"""The built-in matrix and every saved regression, many seeds: the simulator's main job."""
import os

import pytest

from simulations.matrix import BUILTIN_DIR, REGRESSIONS_DIR, run_matrix
from simulations.scenario import find_scenarios, load_scenario

SEEDS = int(os.environ.get("HALIZARD_MATRIX_SEEDS", "20"))


def _describe(summaries):
    lines = []
    for s in summaries:
        for r in s.runs:
            if not r.passed:
                lines.append("%s seed %d: %s" % (s.scenario.id, r.seed, "; ".join(
                    ["%s %s" % (v.invariant, v.detail) for v in r.violations] + r.unmet)))
    return "\n".join(lines)


def test_builtin_matrix_passes_every_seed():
    scenarios = [load_scenario(p) for p in find_scenarios([BUILTIN_DIR])]
    summaries, _ = run_matrix(scenarios, seeds=SEEDS)
    assert all(s.passed for s in summaries), _describe(summaries)
    assert sum(len(s.runs) for s in summaries) >= 40 * min(SEEDS, 4)


def test_regressions_pass():
    paths = find_scenarios([REGRESSIONS_DIR])
    if not paths:
        pytest.skip("no regression files saved yet")
    summaries, _ = run_matrix([load_scenario(p) for p in paths])
    assert all(s.passed for s in summaries), _describe(summaries)
