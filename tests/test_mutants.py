"""The mutation catalog: every deliberately broken variant of the core is caught by the scenario
that caught it when the catalog was written (python -m simulations.mutants hunts over the whole
matrix), and the original code is back afterwards. The explorer's hunt (--explore) reports the
minimal schedule that caught a mutant, or that it missed it."""
import os
import re

import pytest

from simulations.explore import judge, problems
from simulations.matrix import BUILTIN_DIR, REGRESSIONS_DIR, run_matrix
from simulations.mutants import CATALOG, apply, by_name, hunt, hunt_one, main
from simulations.runner import run_scenario
from simulations.scenario import load_scenario
from simulations.schedules import Schedule, Spec

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


def test_a_mutant_the_explorer_has_not_caught_yet_is_reported_missed(tmp_path, capsys):
    """The old master that keeps its role takes 162 schedules to catch (BENCHMARKS.md): two are
    not enough, and the command says so and fails."""
    status = main(["--explore", "old-master-keeps-role", "--count", "1", "--jobs", "1",
                   "--no-corpus", "--save", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1
    assert "MISSED  old-master-keeps-role" in out and "in 2 schedules" in out


FENCE_AGENT = (("fence_agent", "fence_ipmilan"),)
# The minimal schedules by which the explorer's rules caught the mutants they missed before
# the silence rules (I7), the stale-reads rule (I5) and the fence device check (I8): each
# breaks that rule under its mutant, and is clean without it.
EXPLORER_CATCHES = [
    ("promote-too-early", "I7", Schedule((Spec("daemon.stall", "xs2", 30.0, 4.9),), "xs2", 0)),
    ("silence-across-deafness", "I7", Schedule((Spec("gw.block", "xs1", 30.0, 19.1),
                                                Spec("link.down", "xs1-xs2", 44.0, 11.9)),
                                               "xs1", 1, FENCE_AGENT)),
    ("act-after-stall", "I5", Schedule((Spec("daemon.stall", "xs2", 41.5, 2.6),), "xs1", 0)),
    # 3.5 s: with 3.4 s, just above peer_timeout, the slave's peer was silent too briefly for
    # the mutant's early fence once the simulated prober read the peer's requests at the end
    # of each round (R025).
    ("symmetric-tie-break", "I7", Schedule((Spec("link.down", "xs1-xs2", 30.0, 3.5),), "xs2", 0,
                                           FENCE_AGENT)),
    ("lying-fence-device", "I8", Schedule((Spec("link.down", "xs1-xs2", 30.0, 3.6),), "xs2", 0,
                                          FENCE_AGENT)),
]


@pytest.mark.parametrize("name,rule,schedule", EXPLORER_CATCHES,
                         ids=[c[0] for c in EXPLORER_CATCHES])
def test_the_explorer_rules_catch_the_mutants_only_the_matrix_caught_before(name, rule, schedule):
    assert not problems(judge(schedule))
    undo = apply(by_name(name))
    try:
        assert rule in {p.rule for p in problems(judge(schedule))}
    finally:
        undo()


def test_the_corpus_is_clean_and_finds_again_what_random_schedules_rarely_reach():
    """The explorer's corpus (the saved regressions under its own rules) passes unmutated; the
    mutant that trusts records a declaration is about to reset needs R010's race (the cut-off
    host back within the 3 s of xapi's declaration, its domain deaths written in that window),
    which random schedules reach about once in several thousand: the corpus finds it at once."""
    from simulations.mutants import corpus

    r010 = next(s for s in corpus() if s.id == "R010")
    assert r010.expect.vm_final == () and r010.expect.fenced == "any"  # the explorer's rules
    assert not problems(run_scenario(r010, 0))
    undo = apply(by_name("stale-records-during-declaration"))
    try:
        assert {"I1"} <= {p.rule for p in problems(run_scenario(r010, 0))}
    finally:
        undo()
