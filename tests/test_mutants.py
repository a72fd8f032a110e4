"""The mutation catalog: every deliberately broken variant of the core is caught by the scenario
that caught it when the catalog was written (python -m simulations.mutants hunts over the whole
matrix), and the original code is back afterwards. The explorer's hunt (--explore) reports the
minimal schedule that caught a mutant, or that it missed it."""
import os
import re

import pytest

from simulations.matrix import BUILTIN_DIR, REGRESSIONS_DIR, run_matrix
from simulations.mutants import CATALOG, by_name, hunt, hunt_one, main
from simulations.scenario import load_scenario

CAUGHT_BY = {
    "fence-unconfirmed": "F01-fence-unreachable-master-crash.toml",
    "fence-failure-is-success": "F01-fence-unreachable-master-crash.toml",
    "never-self-fence": "C03-drift-then-isolation.toml",
    "wall-clock": "C01-slave-clock-forward.toml",
    "takeover-before-self-fence": "H06-master-freeze-long.toml",
    "promote-too-early": "N08-link-flaps.toml",
    "silence-across-deafness": "R005-daemon-stalled-right-after-start.toml",
    "old-master-keeps-role": "R003-rejoin-during-peer-promotion.toml",
    "stale-records-during-declaration": "R010-peer-back-while-declared-dead.toml",
    "act-after-stall": "R005-daemon-stalled-right-after-start.toml",
    "symmetric-tie-break": "N01-link-down-fence-agent.toml",
    "feed-without-lease": "N03-slave-nic-down.toml",
    "lying-fence-device": "N01-link-down-fence-agent.toml",
}


def _path(name):
    for directory in (BUILTIN_DIR, REGRESSIONS_DIR):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise AssertionError("no scenario file %s" % name)


def test_the_catalog_has_at_least_twelve_mutants_each_pinned():
    assert len(CATALOG) >= 12
    assert set(CAUGHT_BY) == {m.name for m in CATALOG}


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_each_mutant_is_caught(name):
    scenario = load_scenario(_path(CAUGHT_BY[name]))
    verdict = hunt(by_name(name), [scenario], seeds=4, workers=1)
    assert verdict.caught, "%s passed %s: the checker missed it" % (name, scenario.id)


def test_the_original_is_restored_after_a_mutant():
    scenario = load_scenario(_path(CAUGHT_BY["takeover-before-self-fence"]))
    hunt(by_name("takeover-before-self-fence"), [scenario], seeds=1, workers=1)
    summaries, _ = run_matrix([scenario], seeds=2, workers=1)
    assert all(s.passed for s in summaries)


def test_the_explorer_catches_a_mutant_and_keeps_its_minimal_schedule(tmp_path, capsys):
    """`python -m simulations.mutants --explore`: random schedules until one breaks a rule under
    the mutant; the shrunk schedule is written with the command that replays it, and it fails
    under the mutant only."""
    status = main(["--explore", "feed-without-lease", "--count", "40", "--jobs", "1",
                   "--save", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "caught  feed-without-lease" in out and "mutation score: 1 of 1 caught" in out
    path = tmp_path / "feed-without-lease.toml"
    seed = int(re.search(r"--seed (\d+)", out).group(1))
    assert "replay: python -m simulations.mutants feed-without-lease --replay %s --seed %d" % (
        path, seed) in out
    scenario = load_scenario(str(path))
    assert hunt_one(by_name("feed-without-lease"), scenario, seed).caught
    summaries, _ = run_matrix([scenario], seed=seed, workers=1)
    assert all(s.passed for s in summaries)


def test_a_mutant_the_explorer_cannot_see_is_reported_missed(tmp_path, capsys):
    """The symmetric tie-break only changes who is fenced, which no generated schedule pins."""
    status = main(["--explore", "symmetric-tie-break", "--count", "10", "--jobs", "1",
                   "--save", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1
    assert "MISSED  symmetric-tie-break" in out and "in 20 schedules" in out
