"""Exploration: the one schedule generator and its three choosers."""
import itertools

from hypothesis import find, settings

from simulations.schedules import (
    FENCE_AGENT_VARIANT,
    FIRST_ONSET,
    GATEWAY_ONLY_VARIANT,
    INSTANT,
    KINDS,
    NEEDS_DURATION,
    Space,
    edges,
    every_schedule,
    hypothesis_schedules,
    random_schedules,
    random_space,
    single_fault_space,
    targets,
    two_fault_space,
)

# --- the generator ------------------------------------------------------------------------------


def _atoms(space):
    """How many ways one fault can be written in ``space`` (kind, target, loss, duration)."""
    count = 0
    for kind in space.variant.kinds:
        spans = 1 if kind in INSTANT else len(space.durations) + (kind not in NEEDS_DURATION)
        losses = len(space.losses) if kind == "link.loss" else 1
        count += len(targets(kind)) * losses * spans
    return count


def test_exhaustive_enumeration_writes_every_schedule_of_the_grid_once():
    for variant in (FENCE_AGENT_VARIANT, GATEWAY_ONLY_VARIANT):
        for space in (single_fault_space(variant), two_fault_space(variant)):
            schedules = list(every_schedule(space))
            atoms = _atoms(space)
            expected = len(space.onsets) * atoms ** space.counts[0] * len(space.gaps) ** (
                space.counts[0] - 1)
            assert len(schedules) == expected
            assert len(set(schedules)) == expected
    assert sum(1 for _ in every_schedule(two_fault_space(FENCE_AGENT_VARIANT))) == 28125
    assert sum(1 for _ in every_schedule(two_fault_space(GATEWAY_ONLY_VARIANT))) == 13005


def test_exhaustive_walk_covers_a_dependent_choice_tree():
    tiny = Space(GATEWAY_ONLY_VARIANT, (1, 2), (30.0,), (0.5, 1.0), (3.0,), (0.3,), swarm=0,
                 masters=("xs1", "xs2"), seeds=2)
    schedules = list(every_schedule(tiny))
    atoms = _atoms(tiny)
    assert len(schedules) == (atoms + atoms * atoms * 2) * 2 * 2
    assert len(set(schedules)) == len(schedules)


def test_single_faults_straddle_every_edge_at_two_phases():
    schedules = list(every_schedule(single_fault_space(FENCE_AGENT_VARIANT)))
    assert len(schedules) == 868
    faults = [s.faults[0] for s in schedules]
    assert {f.kind for f in faults} == set(KINDS)
    assert {f.at for f in faults} == {FIRST_ONSET, FIRST_ONSET + 0.5}
    lengths = {f.duration for f in faults}
    for edge in edges(FENCE_AGENT_VARIANT.config):
        assert any(d is not None and edge - 0.15 < d < edge for d in lengths), edge
        assert any(d is not None and edge < d < edge + 0.15 for d in lengths), edge
    assert None in lengths  # for good


def test_random_schedules_use_the_whole_vocabulary_a_few_kinds_at_a_time():
    space = random_space(FENCE_AGENT_VARIANT)
    schedules = list(random_schedules(space, seed=1, count=600))
    assert schedules == list(random_schedules(space, seed=1, count=600))  # seeded
    assert schedules != list(random_schedules(space, seed=2, count=600))
    faults = [f for s in schedules for f in s.faults]
    assert {f.kind for f in faults} == set(KINDS)
    assert {len(s.faults) for s in schedules} == {1, 2, 3}
    assert {s.master for s in schedules} == {"xs1", "xs2"}
    # swarm: repeating a kind (flapping, repeated crashes) is common: about 280 of 600 here,
    # where choosing each fault's kind from all fifteen gives about 50
    assert sum(1 for s in schedules if len({f.kind for f in s.faults}) < len(s.faults)) > 150
    lengths = {f.duration for f in faults}
    for edge in edges(FENCE_AGENT_VARIANT.config):
        assert any(d is not None and edge - 0.15 < d < edge for d in lengths), edge
        assert any(d is not None and edge < d < edge + 0.15 for d in lengths), edge
    gaps = {round(b.at - a.at, 1) for s in schedules for a, b in zip(s.faults, s.faults[1:])}
    assert {3.9, 4.1, 11.9, 12.1} <= gaps  # onsets just before and after an edge, too


def test_without_a_fence_agent_no_partition_that_leaves_both_hosts_the_gateway():
    for space in (random_space(GATEWAY_ONLY_VARIANT), two_fault_space(GATEWAY_ONLY_VARIANT)):
        kinds = {f.kind for s in itertools.islice(random_schedules(space, 3, 400), 400)
                 for f in s.faults}
        assert not kinds & {"link.down", "link.oneway", "link.loss", "fence.unreachable"}
        assert "gw.down" in kinds
        assert all(s.config == () for s in random_schedules(space, 3, 20))
    assert all(dict(s.config) == {"fence_agent": "fence_ipmilan"}
               for s in random_schedules(random_space(FENCE_AGENT_VARIANT), 3, 20))


def test_hypothesis_shrinks_through_the_generator():
    """Hypothesis as the chooser: the smallest schedule that ends with a freeze after another
    fault has one kind enabled (the swarm shrinks too), two faults at the earliest onset, on
    the first target, the shortest duration, the first master and seed 0."""
    space = random_space(FENCE_AGENT_VARIANT)
    smallest = find(hypothesis_schedules(space),
                    lambda s: len(s.faults) > 1 and s.faults[-1].kind == "host.freeze",
                    settings=settings(database=None, derandomize=True, max_examples=2000))
    assert [(f.kind, f.target) for f in smallest.faults] == [("host.freeze", "xs1")] * 2
    assert smallest.faults[0].at == FIRST_ONSET and smallest.faults[1].at == FIRST_ONSET
    assert smallest.faults[1].duration == space.durations[0]
    assert smallest.seed == 0 and smallest.master == "xs1"
