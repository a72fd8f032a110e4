"""The daemon loop, written sans-IO: a generator that yields effects and receives their results.

The real executor (halizard.runtime) and the simulator (simulations.executor) drive this same
generator; neither has a copy of any decision. An executor may stop driving it between any two
effects (a crash) or deliver a result late (a freeze or stall): the loop holds no resources, and
every action it yields carries the deadline after which it must not be performed.

One cycle:

    read the clock and the local role       (immediate)
    probe + xapi reads + guest list         (in parallel, each with its own timeout)
    read the clock again                    (if the reads took impossibly long, the daemon was
                                             stalled: start the cycle over, never decide on them)
    decide                                  (pure: halizard.core.decide)
    publish the decision                    (one log line per cycle)
    perform the decision's actions          (in parallel)
    sleep until the next cycle is due       (the decision says when: the cadence, or sooner
                                             when a deadline such as the takeover falls due)
"""
from typing import Any, Generator

from halizard.core.config import Config
from halizard.core.decide import absorb_results, decide
from halizard.core.observe import ReadTemplates, observe, plan_reads, read_templates
from halizard.core.state import DaemonState, Decision, evolve, initial_state
from halizard.effects import (
    LoadState,
    Now,
    Parallel,
    PoolRole,
    Publish,
    ReadClock,
    ReadPoolRole,
    SaveState,
    Sleep,
)

Loop = Generator[Any, Any, None]


def run(config: Config) -> Loop:
    """The daemon. The generator ends only after a planned stop."""
    saved = yield LoadState()
    start: Now
    start = yield ReadClock()
    state = initial_state(start.monotonic, saved)
    templates = read_templates(config)
    while True:
        decision = yield from cycle(config, templates, state)
        state = decision.state
        if state.settings_dirty:
            yield SaveState({"settings": state.settings.to_dict()})
            state = evolve(state, settings_dirty=False)
        if decision.exit:
            return
        yield Sleep(until=decision.next_cycle)


def cycle(config: Config, templates: ReadTemplates, state: DaemonState
          ) -> Generator[Any, Any, Decision]:
    """One HA cycle: observe, decide, publish, act. Returns the decision, which carries the new
    state and when the next cycle is due."""
    while True:
        begin: Now
        begin = yield ReadClock()
        role: PoolRole
        role = yield ReadPoolRole()
        plan = plan_reads(config, templates, state, role, begin.monotonic)
        results = yield Parallel(plan.effects)
        now: Now
        now = yield ReadClock()
        if now.monotonic - begin.monotonic <= templates.read_budget:
            break
        # Stalled or frozen while probing: these answers are too old to decide on. Probe again.
    obs = observe(plan, results, begin.monotonic, now.monotonic, now.wall,
                  now.stop_requested or begin.stop_requested, role)
    decision = decide(config, state, obs)
    yield Publish(decision)
    if decision.actions:
        if len(decision.actions) == 1:
            outcome = yield decision.actions[0]
            outcomes = (outcome,)
        else:
            outcomes = yield Parallel(decision.actions)
        state = absorb_results(config, decision.state, decision, outcomes)
        decision = Decision(
            at=decision.at, wall=decision.wall, mode=decision.mode, reason=decision.reason,
            actions=decision.actions, intents=decision.intents, state=state,
            acting_master=decision.acting_master, peer_dead=decision.peer_dead,
            exit=decision.exit, next_cycle=decision.next_cycle,
        )
    return decision
