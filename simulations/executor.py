"""The simulated executor: runs the daemon's real loop (halizard.loop.run) for one host.

Every effect the loop yields is answered from the world and virtual time. Effects that take
time complete through scheduled events, so faults can fall between any two effects: a crash
closes the generator (systemd restarts it), a host freeze or a daemon stall holds back the next
result until the host or process runs again. The staleness rule (halizard.effects.is_stale) is
applied exactly as the real executor applies it: immediately before an action is performed.
"""
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

from halizard import effects as fx
from halizard.core.config import Config
from halizard.loop import run
from simulations.world.scheduler import NS
from simulations.world.world import GUEST_DESTROY_LATENCY, World
from simulations.xapi.fabric import Failure, Ok, Outcome, Refused, Reset

RESTART_DELAY = 1_500_000_000  # systemd RestartSec=1 plus interpreter start-up
START_AFTER_BOOT = 7 * NS  # the unit is ordered after xapi start-up
STOP_PATIENCE = 90 * NS  # systemd's TimeoutStopSec for the daemon
USERNAME = "root"
PASSWORD = "halizard-sim"
SESSION_TRIES = 3  # calls per exchange while xapi answers SESSION_INVALID (the binding's rule)

Slot = Callable[[Any], None]
# Effects that may carry a deadline (an XapiCall without one is a read).
ACTIONS = frozenset({fx.XapiCall, fx.DestroyGuests, fx.WatchdogControl, fx.StartFence})


class _Join:
    """Collects the results of a Parallel effect; ``done`` gets them once all have arrived
    (unless they all arrived while the effect was still being started: the caller returns
    them at once then)."""

    __slots__ = ("results", "missing", "done", "starting")

    def __init__(self, n: int, done: Callable[[Tuple[Any, ...]], None]) -> None:
        self.results: List[Any] = [None] * n
        self.missing = n
        self.done = done
        self.starting = True

    def put(self, i: int, value: Any) -> None:
        self.results[i] = value
        self.missing -= 1
        if self.missing == 0 and not self.starting:
            self.done(tuple(self.results))

    def slot(self, i: int) -> Callable[[Any], None]:
        return partial(self.put, i)


class SimDaemon:
    """One host's halizard process."""

    def __init__(self, world: World, host: str, config: Config) -> None:
        self.world = world
        self.sched = world.scheduler
        self.name = host
        self.host = world.hosts[host]
        self.peer = world.peer_of(host)
        self.config = config
        self.gen: Any = None
        self.alive = False
        self.generation = 0  # bumps at every (re)start: stale completions are dropped
        self.stalled_until = 0
        self.held: Optional[Tuple[int, Any]] = None  # (generation, result) held back
        self.stop_requested = False
        self.shutting_down = False  # the system is going down (logind), not only the daemon
        self.on_exit: Optional[Callable[[], None]] = None
        self.sessions: Dict[Tuple[str, str], str] = {}
        self.heard: List[Tuple[int, int, str]] = []  # (arrival ns, path, beacon) of requests
        self.heard_since = 0.0
        self.fence_jobs = 0
        self.fence_done: List[fx.FenceOutcome] = []
        self.calls_started = 0
        self.calls_done: List[fx.CallOutcome] = []
        self.decision: Any = None
        # Told of each decision with the outcomes of its actions (the alerts: runner.py), when
        # set; the Enact whose outcomes the loop has not received yet.
        self.on_enacted: Optional[Callable[[Any, Tuple[Any, ...]], None]] = None
        self._enacting: Any = None
        # Ground truth for the checker (simulations.invariants): when this process started, when
        # its current cycle's reads were issued, and the arrival of the latest packet from the
        # peer its prober received (ns; 0: none since the process started).
        self.started_ns = 0
        self.reads_at = 0
        self.peer_heard = 0
        self.master_at_read = False  # this host's xapi ran as master at the last ReadPoolRole
        self.crash_after: Optional[int] = None  # exploration hook: crash before effect N
        self.effects = 0
        self._address_to_host = {h.address: h.name for h in world.hosts.values()}
        self._role: Optional[fx.PoolRole] = None
        self._guests: Optional[fx.GuestList] = None
        self._guests_version = -1
        self._handlers: Dict[type, Callable[[Any, int, Optional[Slot]], Tuple[bool, Any]]] = {
            fx.ReadClock: self._read_clock,
            fx.ReadPoolRole: self._read_pool_role,
            fx.Enact: self._enact,
            fx.Sleep: self._sleep,
            fx.Parallel: self._parallel,
            fx.Probe: self._start_probe,
            fx.ListGuests: self._list_guests,
            fx.CollectFenceResults: self._collect_fence,
            fx.StartCall: self._start_call,
            fx.CollectCalls: self._collect_calls,
            fx.LoadState: self._load_state,
            fx.SaveState: self._save_state,
            fx.XapiCall: self._xapi_call,
            fx.WatchdogControl: self._watchdog,
            fx.DestroyGuests: self._destroy,
            fx.StartFence: self._fence,
        }

    # --- process lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if not self.host.running and self.host.frozen_since is None:
            return
        self.generation += 1
        self.alive = True
        self.stop_requested = False
        self.shutting_down = False
        self.sessions = {}
        self.heard = []
        self.heard_since = self.host.clock.monotonic(self.sched.t)
        self.started_ns = self.reads_at = self.sched.t
        self.peer_heard = 0
        self.fence_done = []
        self.calls_done = []
        self.decision = None
        self._enacting = None
        self.gen = run(self.config)
        self.world.notify("daemon", self.name, "started")
        self._step(self.generation, None)

    def kill(self, restart: bool) -> None:
        if self.alive:
            self.alive = False
            self.generation += 1
            self.held = None
            self.stalled_until = 0  # a stall is the process's: its successor starts fresh
            if self.gen is not None:
                self.gen.close()
            self.gen = None
            self.decision = None
            self._enacting = None
            self.world.notify("daemon", self.name, "killed")
        if restart and self.host.power == "on":
            self.sched.after(RESTART_DELAY, self._restart, self.generation)

    def _restart(self, generation: int) -> None:
        if generation == self.generation and not self.alive and self.host.power == "on":
            self.start()

    def stall(self, duration: int) -> None:
        """Stop scheduling the process for ``duration`` (SIGSTOP and SIGCONT). There is nothing
        to stall when it is not running, and the stall dies with the process."""
        if not self.alive:
            return
        self.stalled_until = max(self.stalled_until, self.sched.t + duration)
        self.sched.at(self.stalled_until, self._resume_if_due)

    def _paused(self) -> bool:
        return self.sched.t < self.stalled_until or self.host.frozen_since is not None

    def _resume_if_due(self) -> None:
        if self.held is not None and not self._paused():
            generation, result = self.held
            self.held = None
            self._step(generation, result)

    def thawed(self) -> None:
        self._resume_if_due()

    def system_shutdown(self) -> None:
        """The system starts going down: the daemon learns it at once (logind's
        PreparingForShutdown), long before systemd stops it."""
        if self.alive:
            self.stop_requested = True
            self.shutting_down = True

    def request_stop(self, on_exit: Callable[[], None]) -> None:
        """Planned shutdown: systemd asks the daemon to stop, and kills it after STOP_PATIENCE."""
        self.on_exit = on_exit
        if not self.alive:
            on_exit()
            return
        self.stop_requested = True
        generation = self.generation

        def too_slow() -> None:
            if self.alive and self.generation == generation and self.on_exit is not None:
                self.kill(restart=False)
                callback, self.on_exit = self.on_exit, None
                callback()

        self.sched.after(STOP_PATIENCE, too_slow)

    # --- driving the generator ------------------------------------------------------------------

    def _deliver(self, generation: int, result: Any) -> None:
        """A timed effect completed; hand its result over unless the process is paused."""
        if generation != self.generation or not self.alive:
            return
        if self.sched.t < self.stalled_until or self.host.frozen_since is not None:  # paused
            self.held = (generation, result)
            return
        self._step(generation, result)

    def _step(self, generation: int, result: Any) -> None:
        while True:
            if generation != self.generation or not self.alive:
                return
            if self.crash_after is not None and self.effects >= self.crash_after:
                self.crash_after = None
                self.kill(restart=True)
                return
            if self._enacting is not None:
                decision, self._enacting = self._enacting, None
                if self.on_enacted is not None:
                    self.on_enacted(decision, result)
            try:
                effect = self.gen.send(result)
            except StopIteration:
                self.alive = False
                self.gen = None
                self.world.notify("daemon", self.name, "exited")
                if self.on_exit is not None:
                    callback, self.on_exit = self.on_exit, None
                    callback()
                return
            except Exception as exc:  # a bug in the daemon: the checker reports it
                self.world.notify("daemon_error", self.name, repr(exc))
                self.kill(restart=True)
                return
            self.effects += 1
            immediate, result = self._perform(effect, generation, None)
            if not immediate:
                return

    def _perform(self, effect: Any, generation: int, slot: Optional[Slot]) -> Tuple[bool, Any]:
        """Perform one effect. Returns (True, result) when it completes at once; otherwise the
        result arrives later through ``slot`` (or the generator, when slot is None)."""
        kind = type(effect)
        handler = self._handlers.get(kind)
        if handler is None:
            raise TypeError("unknown effect %r" % (effect,))
        if kind in ACTIONS and effect.valid_until is not None:
            # An action: refused when stale, exactly as the real executor does. Only actions
            # (reads carry no deadline) are reported to the checkers.
            monotonic = self.host.clock.monotonic(self.sched.t)
            stale = fx.is_stale(effect, monotonic)
            self.world.notify("action", self.name, effect, stale, monotonic)
            if stale:
                return True, fx.refusal(effect)
        return handler(effect, generation, slot)

    def _later(self, generation: int, slot: Optional[Slot], delay: int, value: Any) -> None:
        """``value`` handed over ``delay`` ns from now, as a timed effect's result."""
        if slot is None:
            self.sched.after(delay, self._deliver, generation, value)
        else:
            self.sched.after(delay, slot, value)

    # --- one handler per effect ------------------------------------------------------------------

    def _read_clock(self, effect: fx.ReadClock, generation: int, slot: Optional[Slot]
                    ) -> Tuple[bool, Any]:
        return True, self._now()

    def _now(self) -> fx.Now:
        t = self.sched.t
        clock = self.host.clock
        return fx.Now(clock.monotonic(t), clock.wall(t), self.stop_requested, self.shutting_down)

    def _read_pool_role(self, effect: fx.ReadPoolRole, generation: int, slot: Optional[Slot]
                        ) -> Tuple[bool, Any]:
        is_master, address = self.world.xapi.pool_conf(self.name)
        # For I4 (simulations.invariants): whether xapi ran as master when the role was read.
        self.master_at_read = self.world.xapi.role(self.name) == "master"
        role = self._role
        if role is None or role.is_master != is_master or role.master_address != address:
            role = self._role = fx.PoolRole(self.host.uuid, is_master, address)
        return True, role

    def _enact(self, effect: fx.Enact, generation: int, slot: Optional[Slot]
               ) -> Tuple[bool, Any]:
        decision = effect.decision
        self.decision = decision
        if self.on_enacted is not None:
            self._enacting = decision
        self.world.notify("decision", self.name, decision)
        actions = decision.actions
        if not actions:
            return True, ()
        if len(actions) > 1:
            return self._parallel(fx.Parallel(actions), generation, slot)
        # One action (nearly always the watchdog feed): no join needed.
        def done(value: Any) -> None:
            if slot is None:
                self._deliver(generation, (value,))
            else:
                slot((value,))

        immediate, value = self._perform(actions[0], generation, done)
        return (True, (value,)) if immediate else (False, None)

    def _sleep(self, effect: fx.Sleep, generation: int, slot: Optional[Slot]) -> Tuple[bool, Any]:
        """The answer is the clock at the moment of waking. A host frozen or stalled at that
        moment gets it late: a stall just after reading the clock, which the loop must (and
        does) survive."""
        now = self.sched.t
        t = self.host.clock.global_time(effect.until)
        if t <= now:
            return True, self._now()
        self.sched.at(t, self._wake, generation, slot)
        return False, None

    def _wake(self, generation: int, slot: Optional[Slot]) -> None:
        now = self._now()
        if slot is None:
            self._deliver(generation, now)
        else:
            slot(now)

    def _start_probe(self, effect: fx.Probe, generation: int, slot: Optional[Slot]
                     ) -> Tuple[bool, Any]:
        self.reads_at = self.sched.t
        delay, finish = self._probe(effect)

        def finished() -> None:
            if generation == self.generation:  # a restarted daemon's inbox is not this round's
                report = finish()
                if slot is None:
                    self._deliver(generation, report)
                else:
                    slot(report)

        self.sched.after(delay, finished)
        return False, None

    def _list_guests(self, effect: fx.ListGuests, generation: int, slot: Optional[Slot]
                     ) -> Tuple[bool, Any]:
        version = self.host.domains_version
        if self._guests is None or self._guests_version != version:
            self._guests = fx.GuestList(tuple(sorted(self.host.domains)))
            self._guests_version = version
        return True, self._guests

    def _collect_fence(self, effect: fx.CollectFenceResults, generation: int,
                       slot: Optional[Slot]) -> Tuple[bool, Any]:
        done, self.fence_done = tuple(self.fence_done), []
        return True, done

    def _start_call(self, effect: fx.StartCall, generation: int, slot: Optional[Slot]
                    ) -> Tuple[bool, Any]:
        self.calls_started += 1
        job = self.calls_started

        def done(result: fx.XapiResult) -> None:
            if generation == self.generation:  # a restarted daemon has forgotten the job
                self.calls_done.append(fx.CallOutcome(job, result))

        self._xapi(effect.call, done)
        return True, fx.CallStarted(job)

    def _collect_calls(self, effect: fx.CollectCalls, generation: int, slot: Optional[Slot]
                       ) -> Tuple[bool, Any]:
        if not self.calls_done:
            return True, ()
        done, self.calls_done = tuple(self.calls_done), []
        return True, done

    def _load_state(self, effect: fx.LoadState, generation: int, slot: Optional[Slot]
                    ) -> Tuple[bool, Any]:
        return True, self.host.disk.get("state")

    def _save_state(self, effect: fx.SaveState, generation: int, slot: Optional[Slot]
                    ) -> Tuple[bool, Any]:
        self.host.disk["state"] = dict(effect.data)
        return True, None

    def _xapi_call(self, effect: fx.XapiCall, generation: int, slot: Optional[Slot]
                   ) -> Tuple[bool, Any]:
        if slot is not None:
            self._xapi(effect, slot)
        else:
            self._xapi(effect, lambda r: self._deliver(generation, r))
        return False, None

    def _watchdog(self, effect: fx.WatchdogControl, generation: int, slot: Optional[Slot]
                  ) -> Tuple[bool, Any]:
        if effect.op == "arm":
            self.world.watchdog_arm(self.name, effect.timeout_s)
        elif effect.op == "feed":
            self.world.watchdog_feed(self.name)
        else:
            self.world.watchdog_disarm(self.name)
        return True, fx.WatchdogResult(True)

    def _destroy(self, effect: fx.DestroyGuests, generation: int, slot: Optional[Slot]
                 ) -> Tuple[bool, Any]:
        delay = self.world.streams("toolstack").uniform_ns(*GUEST_DESTROY_LATENCY)

        def destroyed() -> None:
            if self.host.running:
                self._destroy_guests()
            result = fx.GuestList(tuple(sorted(self.host.domains)))
            if slot is None:
                self._deliver(generation, result)
            else:
                slot(result)

        self.sched.after(delay, destroyed)
        return False, None

    def _fence(self, effect: fx.StartFence, generation: int, slot: Optional[Slot]
               ) -> Tuple[bool, Any]:
        self.fence_jobs += 1
        job = self.fence_jobs
        state = {"done": False}

        def once(result: str) -> None:
            if not state["done"] and generation == self.generation:
                state["done"] = True
                self.fence_done.append(fx.FenceOutcome(job, effect.action, result))

        self.world.fence(self.name, self.peer, effect.action, once)
        self.sched.after(self.host.clock.duration(effect.timeout), once, "timeout")
        return True, fx.FenceStarted(job)

    def _destroy_guests(self) -> None:
        for vm in sorted(self.host.domains):
            self.world.destroy_domain(self.name, vm, cause="self-fence")
            if self.world.xapi is not None:
                self.world.xapi.on_domain_died(self.name, vm)

    def _parallel(self, effect: fx.Parallel, generation: int, slot: Optional[Slot]
                  ) -> Tuple[bool, Any]:
        if slot is None:
            join = _Join(len(effect.effects), lambda results: self._deliver(generation, results))
        else:
            join = _Join(len(effect.effects), slot)
        for i, sub in enumerate(effect.effects):
            immediate, value = self._perform(sub, generation, join.slot(i))
            if immediate:
                join.put(i, value)
        join.starting = False
        if join.missing == 0:
            return True, tuple(join.results)
        return False, None

    # --- probes ----------------------------------------------------------------------------------

    def _probe(self, effect: fx.Probe) -> Tuple[int, Callable[[], fx.ProbeReport]]:
        """One probe round: how long it lasts, and what builds its report when it ends. Echo
        fates are drawn at the round's start; the prober reads each reply (and each request
        from the peer) as it arrives, and stamps it then. The peer's requests are read at the
        end, as the real prober drains its socket after reading ``finished``: a request the
        peer sends after this round began and that arrives before it ends belongs to this
        round (regression R025: read at the start, it went to the next round, whose lower
        bound, ``heard_since``, is later than its arrival, and the lease outlived the last
        real contact)."""
        world = self.world
        net = world.network
        now = self.sched.t
        mono = self.host.clock.monotonic
        spacing = int(effect.spacing * NS)
        last_sent = (effect.echoes - 1) * spacing
        gateway_window = last_sent + int(effect.timeout * NS)
        peer_window = last_sent + int(effect.peer_wait * NS)
        peer_host = world.hosts[self.peer]
        peer_daemon = world.daemons.get(self.peer)
        answers = peer_host.power == "on" and peer_host.frozen_since is None
        listening = peer_daemon is not None and peer_daemon.alive and peer_host.power == "on"

        peer_end = 0  # when each part of the round ends (ns after the start)
        peer_replies = []  # (replies, latest reply) per path
        for path in range(len(effect.peer_addresses)):
            arrivals: Optional[List[int]] = [] if listening else None
            replies, last, complete = net.echoes_to_host(
                self.name, self.peer, path, effect.echoes, spacing, peer_window, answers, arrivals)
            if arrivals and peer_daemon is not None:
                inbox = peer_daemon.heard
                for t in arrivals:
                    inbox.append((now + t, path, effect.beacon))
            end = last if complete else peer_window
            if end > peer_end:
                peer_end = end
            peer_replies.append((replies, last))
        gateway_end = 0
        gateway_reports = []
        for gw, address in zip(net.gateway_names, effect.gateway_addresses):
            replies, last, complete = net.echoes_to_gateway(self.name, gw, effect.echoes, spacing,
                                                            gateway_window)
            end = last if complete else gateway_window
            if end > gateway_end:
                gateway_end = end
            gateway_reports.append(fx.PathReport(address, replies, False,
                                                 mono(now + last) if replies else None))
            if replies:
                self._contact(now + last)
        finish = now + (peer_end if peer_end > gateway_end else gateway_end)
        for replies, last in peer_replies:
            if replies:
                self._heard_from_peer(now + last)

        def report() -> fx.ProbeReport:
            # Requests from the peer (its own probes of us) that arrived by the end of this
            # round, stamped with their arrival (the kernel's receive timestamp).
            heard: Dict[int, int] = {}
            beacon, beacon_at = None, -1
            if self.heard:
                keep = []
                for arrival, path, text in self.heard:
                    if arrival <= finish:
                        if arrival > heard.get(path, 0):
                            heard[path] = arrival
                        if arrival > beacon_at:
                            beacon, beacon_at = text, arrival
                    else:
                        keep.append((arrival, path, text))
                self.heard = keep
            peer_reports = []
            for path, address in enumerate(effect.peer_addresses):
                replies, last = peer_replies[path]
                stamp = now + last if replies else 0
                if heard.get(path, 0) > stamp:
                    stamp = heard[path]
                    self._heard_from_peer(stamp)
                peer_reports.append(fx.PathReport(address, replies, path in heard,
                                                  mono(stamp) if stamp else None))
            heard_since = self.heard_since
            self.heard_since = mono(finish)
            return fx.ProbeReport(
                started=mono(now),
                finished=self.heard_since,
                heard_since=heard_since,
                peer=tuple(peer_reports),
                gateways=tuple(gateway_reports),
                peer_beacon=beacon,
            )

        return finish - now, report

    def _heard_from_peer(self, t: int) -> None:
        self._contact(t)
        if t > self.peer_heard:
            self.peer_heard = t

    def _contact(self, t: int) -> None:
        """Ground truth for the checker: this host really received a packet from its peer or a
        gateway at ``t``."""
        contact = self.world.last_contact
        if t > contact.get(self.name, 0):
            contact[self.name] = t

    # --- xapi ------------------------------------------------------------------------------------

    def _xapi(self, call: fx.XapiCall, done: Callable[[fx.XapiResult], None]) -> None:
        """One XenAPI call with session handling and a deadline, like the real adapter."""
        _XapiExchange(self, call, done).start()


class _XapiExchange:
    """One XenAPI call in flight: log in if there is no session (or it was invalidated), call,
    answer ``done`` exactly once, by the deadline at the latest. A class rather than nested
    closures, whose mutual references would be reference cycles."""

    __slots__ = ("daemon", "call", "done", "target", "transport", "key", "timer", "calls")

    def __init__(self, daemon: SimDaemon, call: fx.XapiCall,
                 done: Callable[[fx.XapiResult], None]) -> None:
        self.daemon = daemon
        self.call = call
        self.done: Optional[Callable[[fx.XapiResult], None]] = done
        self.target = daemon.name if call.address is None else \
            daemon._address_to_host.get(call.address)
        self.transport = "unix" if call.address is None else "tcp"
        self.key = (self.target or "", call.session)
        self.calls = 0
        self.timer: Any = None

    def start(self) -> None:
        d = self.daemon
        deadline = d.sched.t + d.host.clock.duration(self.call.timeout)
        self.timer = d.sched.at(deadline, self.finish, fx.XapiResult(error=(fx.TIMEOUT,)))
        if self.target is None or not d.host.running:
            return  # nowhere to connect: the deadline answers
        if self.call.address is not None and not d.world.connected(d.name, self.target):
            return  # SYNs into a black hole
        session = d.sessions.get(self.key)
        if session is None:
            self.login()
        else:
            self.send(session)

    def finish(self, result: fx.XapiResult) -> None:
        done, self.done = self.done, None
        if done is not None:
            self.timer.cancel()
            done(result)

    def login(self) -> None:
        if self.call.session == fx.LOCAL_SESSION:
            method = "session.slave_local_login_with_password"
            params: List[Any] = [USERNAME, PASSWORD]
        else:
            method = "session.login_with_password"
            params = [USERNAME, PASSWORD, "1.0", "halizard"]
        assert self.target is not None
        self.daemon.world.xapi.call(self.target, method, params, self.logged_in, self.transport)

    def logged_in(self, outcome: Outcome) -> None:
        if isinstance(outcome, Ok):
            self.daemon.sessions[self.key] = outcome.value
            self.send(outcome.value)
        elif isinstance(outcome, Failure):
            self.finish(fx.XapiResult(error=tuple(outcome.description)))
        else:
            self.finish(_transport_error(outcome))

    def send(self, session: Optional[str]) -> None:
        assert self.target is not None
        self.calls += 1
        params = [session] + list(self.call.args)
        self.daemon.world.xapi.call(self.target, self.call.method, params, self.reply,
                                    self.transport)

    def reply(self, outcome: Outcome) -> None:
        if isinstance(outcome, Ok):
            self.finish(fx.XapiResult(value=outcome.value))
        elif isinstance(outcome, Failure):
            if outcome.description[:1] == ["SESSION_INVALID"]:
                # The session died with a xapi restart or a master change: log in again and
                # repeat the call, as the XenAPI binding does (three calls in all).
                self.daemon.sessions.pop(self.key, None)
                if self.calls < SESSION_TRIES:
                    self.login()
                    return
            self.finish(fx.XapiResult(error=tuple(outcome.description)))
        else:
            self.finish(_transport_error(outcome))


def _transport_error(outcome: Outcome) -> fx.XapiResult:
    if isinstance(outcome, Refused):
        return fx.XapiResult(error=(fx.CONNECTION_REFUSED,))
    if isinstance(outcome, Reset):
        return fx.XapiResult(error=(fx.CONNECTION_RESET,))
    return fx.XapiResult(error=(fx.GARBAGE,))

