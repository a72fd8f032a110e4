"""The same scenario and seed give the same trace hash, across runs and PYTHONHASHSEEDs."""
import os
import subprocess
import sys

import pytest

from simulations.runner import run_scenario
from simulations.scenario import load_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ["H02-master-crash.toml", "N09-heartbeat-loss.toml", "N10-partition-heals-mid-failover.toml"]

pytestmark = pytest.mark.runtime


def trace_hash(name, seed):
    return run_scenario(load_scenario(os.path.join(ROOT, "simulations", "scenarios", name)), seed).trace_hash


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_trace(name):
    assert trace_hash(name, 3) == trace_hash(name, 3)


def test_different_seeds_differ():
    assert trace_hash("N09-heartbeat-loss.toml", 1) != trace_hash("N09-heartbeat-loss.toml", 2)


def test_trace_does_not_depend_on_pythonhashseed():
    code = ("import sys; sys.path.insert(0, %r); from tests.test_determinism import trace_hash; "
            "print(','.join(trace_hash(n, 5) for n in %r))" % (ROOT, SCENARIOS))
    hashes = set()
    for seed in ("0", "1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        hashes.add(out.strip())
    assert len(hashes) == 1, hashes
