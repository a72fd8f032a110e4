"""The daemon loop, written sans-IO: a generator that yields effects and receives their results.

The real executor (halizard.runtime) and the simulator (simulations.executor) drive this same
generator; neither has a copy of any decision. An executor may stop driving it between any two
effects (a crash) or deliver a result late (a freeze or stall): the loop holds no resources, and
every action it yields carries the deadline after which it must not be performed.

One cycle:

    wake: the clock and the local role      (immediate; the clock comes with the end of the
                                             previous sleep)
    probe + xapi reads + guest list         (in parallel, each with its own timeout)
    read the clock again                    (if the reads took impossibly long, the daemon was
                                             stalled: feed the watchdog if the round renewed the
                                             lease, then start the cycle over, never decide on
                                             them)
    decide                                  (pure: halizard.core.decide)
    enact the decision                      (one log line per cycle, then its actions, in
                                             parallel)
    sleep until the next cycle is due       (the decision says when: the cadence, or sooner
                                             when a deadline such as the takeover falls due)
"""
from typing import Any, Generator

from halizard.core.config import Config
from halizard.core.decide import absorb_results, decide, feed_after_pause
from halizard.core.evidence import heard_in_discarded_round
from halizard.core.observe import (
    NOTHING_CARRIED,
    ReadTemplates,
    carry,
    observe,
    plan_reads,
    read_templates,
)
from halizard.core.state import DaemonState, Decision, evolve, initial_state
from halizard.effects import (
    Enact,
    LoadState,
    Now,
    Parallel,
    PoolRole,
    ReadClock,
    ReadPoolRole,
    SaveState,
    Sleep,
)

Loop = Generator[Any, Any, None]


def run(config: Config) -> Loop:
    """The daemon. The generator ends only after a planned stop."""
    saved = yield LoadState()
    now: Now
    now = yield ReadClock()
    state = initial_state(now.monotonic, saved)
    templates = read_templates(config)
    while True:
        decision = yield from cycle(config, templates, state, now)
        state = decision.state
        if state.cache_dirty:
            yield SaveState({"settings": state.settings.to_dict(),
                             "vms": [vm.to_dict() for vm in state.known_vms]})
            state = evolve(state, cache_dirty=False)
        if decision.exit:
            return
        now = yield Sleep(until=decision.next_cycle)


def cycle(config: Config, templates: ReadTemplates, state: DaemonState, begin: Now
          ) -> Generator[Any, Any, Decision]:
    """One HA cycle, begun at ``begin``: observe, decide, enact. Returns the decision, which
    carries the new state and when the next cycle is due."""
    carried = NOTHING_CARRIED
    while True:
        role: PoolRole
        role = yield ReadPoolRole()
        plan = plan_reads(config, templates, state, role, begin.monotonic)
        results = yield Parallel(plan.effects)
        results, carried = carry(plan, results, carried)
        now: Now
        now = yield ReadClock()
        if now.monotonic - begin.monotonic <= templates.read_budget:
            break
        # Stalled or frozen before or while probing: these answers are too old to decide on.
        # Feed the watchdog first if this round's contact renews the lease (the watchdog kept
        # counting through the pause), then probe again.
        feed = feed_after_pause(config, state, results[0], now.monotonic,
                                now.shutting_down or begin.shutting_down)
        if feed is not None:
            yield feed
        # What the round heard of the peer still counts for its silence (never for the lease).
        state = heard_in_discarded_round(config, state, results[0])
        begin = now
    obs = observe(plan, results, begin.monotonic, now.monotonic, now.wall,
                  now.stop_requested or begin.stop_requested, role,
                  now.shutting_down or begin.shutting_down)
    decision = decide(config, state, obs)
    outcomes = yield Enact(decision)
    if outcomes:
        state = absorb_results(config, decision.state, decision, outcomes)
        decision = decision._replace(state=state)
    return decision
