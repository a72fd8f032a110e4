"""The real executor: drives the daemon loop (halizard.loop.run) on a real host.

It answers each effect the loop yields with the host's real clocks, sockets, files and
processes (the Host bundle below), in the same contract the simulator keeps
(halizard.effects): actions are refused when stale, immediately before they are performed;
every wait has a deadline. Effects inside a Parallel run at once on a small thread pool; an
effect that overruns its own deadline by more than OVERRUN is an executor bug, and the daemon
exits rather than decide on a half-answered cycle (systemd restarts it, and the watchdog device,
left armed, still guards the host).

Besides performing effects, the executor reports each decision: a journal record when the mode
or the gist of the reason changes (and every REMIND seconds otherwise), the systemd STATUS
line every cycle, READY once the first decision is made, the systemd watchdog keep-alive
from this main loop, and, once its actions are done, the decision and their outcomes to the
alerts (halizard.runtime.alerts), which derive what an administrator must hear and deliver
it in the background.
"""
import logging
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from halizard import effects as fx
from halizard.core.state import Decision, Mode
from halizard.runtime.alerts import AlertReporter
from halizard.runtime.fence import FenceRunner
from halizard.runtime.guests import Toolstack
from halizard.runtime.link import CarrierWatch
from halizard.runtime.localhost import LocalFileError, StateStore
from halizard.runtime.probe import Prober
from halizard.runtime.publish import StatusPublisher
from halizard.runtime.selffence import SelfFence
from halizard.runtime.systemd import ERR, INFO, NOTICE, WARNING, Journal, Notifier, one_line
from halizard.runtime.watchdog import Watchdog
from halizard.runtime.xapi import XapiAdapter

log = logging.getLogger("halizard.executor")

OVERRUN = 2.0  # s past an effect's own deadline before the executor gives up on it
REMIND = 300.0  # s between journal records of an unchanged decision
WORKERS = 8  # threads for the effects of one Parallel (a cycle has at most about six)
SYSTEM_STATE_TIMEOUT = 2.0  # s for `systemctl is-system-running`
_DIGITS = re.compile(r"\d+(\.\d+)?")
_PRIORITY = {Mode.ISOLATED: WARNING, Mode.SELF_FENCED: WARNING, Mode.TAKEOVER: NOTICE,
             Mode.SURVIVOR: NOTICE}


class ExecutorError(RuntimeError):
    """The executor cannot go on honestly (an effect overran its deadline, a role file went
    missing): the daemon exits and systemd restarts it."""


class Host(NamedTuple):
    """Every side effect of the real host, each behind its own module."""

    prober: Prober
    xapi: XapiAdapter
    toolstack: Toolstack
    watchdog: Watchdog
    self_fence: SelfFence
    fence: Optional[FenceRunner]
    carrier: Optional[CarrierWatch]
    store: StateStore
    read_role: Callable[[], fx.PoolRole]
    journal: Journal
    notifier: Notifier
    publisher: Optional[StatusPublisher] = None
    system_state: Tuple[str, ...] = ("systemctl", "is-system-running")
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    alerts: Optional[AlertReporter] = None


class RealExecutor:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.stop_requested = False
        self._stop_told = False  # a clock read has said stop to the loop
        self.shutting_down = False
        self._check_system_state = False
        self._pool = ThreadPoolExecutor(max_workers=WORKERS)
        self._calls_started = 0
        self._calls_done: List[fx.CallOutcome] = []
        self._lock = threading.Lock()
        self._role: Optional[fx.PoolRole] = None
        self._ready = False
        self._logged: Optional[Tuple[str, str]] = None
        self._logged_at = 0.0
        self.decision: Optional[Decision] = None
        self._handlers: Dict[type, Callable[[Any], Any]] = {
            fx.ReadClock: self._read_clock,
            fx.ReadPoolRole: self._read_pool_role,
            fx.Sleep: self._sleep,
            fx.Parallel: self._parallel,
            fx.Enact: self._enact,
            fx.Probe: host.prober.round,
            fx.ListGuests: host.toolstack.list_guests,
            fx.XapiCall: host.xapi.perform,
            fx.DestroyGuests: host.self_fence.perform,
            fx.WatchdogControl: host.watchdog.perform,
            fx.StartFence: self._start_fence,
            fx.CollectFenceResults: self._collect_fence,
            fx.StartCall: self._start_call,
            fx.CollectCalls: self._collect_calls,
            fx.LoadState: lambda effect: host.store.load(),
            fx.SaveState: lambda effect: host.store.save(effect.data),
        }

    # --- the driver ------------------------------------------------------------------------------

    def drive(self, loop: Any) -> None:
        """Run the loop until it ends (a planned stop). Exceptions propagate: the caller
        exits, and systemd restarts the daemon."""
        result: Any = None
        try:
            while True:
                try:
                    effect = loop.send(result)
                except StopIteration:
                    return
                result = self.perform(effect)
        finally:
            loop.close()

    def perform(self, effect: Any) -> Any:
        handler = self._handlers.get(type(effect))
        if handler is None:
            raise ExecutorError("unknown effect %r" % (effect,))
        if getattr(effect, "valid_until", None) is not None and fx.is_stale(
                effect, self.host.monotonic()):
            return fx.refusal(effect)
        return handler(effect)

    @property
    def role(self) -> Optional[fx.PoolRole]:
        """The pool role read last (None before the first read)."""
        return self._role

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """From a signal handler: the next clock read says stop. A SIGTERM may be the system
        going down: the clock read that first says stop asks systemd (not here: a handler must
        be quick)."""
        if signum == signal.SIGTERM:
            self._check_system_state = True  # before stop_requested: see _read_clock
        self.stop_requested = True

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # --- effects ---------------------------------------------------------------------------------

    def _read_clock(self, effect: fx.ReadClock) -> fx.Now:
        # The first decision after a SIGTERM must already know whether the system is going
        # down: it is the one that disarms the watchdog and exits on a stop of the daemon
        # alone, while guests still here must stay guarded through a shutdown (R012). A SIGTERM
        # that comes in the middle of this is seen whole at the next read.
        stop = self.stop_requested
        if self._check_system_state:
            self._check_system_state = False
            self.shutting_down = self._system_stopping()
        self._stop_told = self._stop_told or stop
        return fx.Now(self.host.monotonic(), self.host.wall(), stop, self.shutting_down)

    def _read_pool_role(self, effect: fx.ReadPoolRole) -> fx.PoolRole:
        try:
            role = self.host.read_role()
        except LocalFileError as exc:
            if self._role is None:
                raise ExecutorError(str(exc)) from None
            log.warning("%s; keeping the role read last", exc)
            return self._role
        if role != self._role:  # the same object while unchanged: the core compares cheaply
            self._role = role
        return self._role

    def _sleep(self, effect: fx.Sleep) -> fx.Now:
        carrier = self.host.carrier
        # A stop the loop has not heard of yet ends the sleep; once told, the loop keeps its
        # cadence (a hand-over, or guarding guests while the system goes down, takes many
        # cycles, and must not probe back to back).
        while not (self.stop_requested and not self._stop_told):
            remaining = effect.until - self.host.monotonic()
            if remaining <= 0:
                break
            if carrier is None:
                time.sleep(min(remaining, 0.5))
                continue
            changes = carrier.wait(self.host.monotonic() + min(remaining, 0.5))
            lost = [c for c in changes if c.lost]
            if lost:
                # A hint only: the next probe round decides. It comes now, not at the cadence.
                log.warning("carrier lost on %s: probing now",
                            ", ".join(c.interface for c in lost))
                break
        return self._read_clock(fx.ReadClock())

    def _system_stopping(self) -> bool:
        try:
            done = subprocess.run(list(self.host.system_state), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, universal_newlines=True,
                                  timeout=SYSTEM_STATE_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot tell whether the system is going down (%s): treating the stop "
                        "as the daemon's alone", exc)
            return False
        state = done.stdout.strip()
        log.info("stop requested; the system is %s", state or "in an unknown state")
        return state == "stopping"

    def _parallel(self, effect: fx.Parallel) -> Tuple[Any, ...]:
        return self._all(effect.effects)

    def _all(self, items: Tuple[Any, ...]) -> Tuple[Any, ...]:
        """Perform ``items`` at once; their results in order."""
        results: List[Any] = [None] * len(items)
        pending: List[Tuple[int, Future[Any], float]] = []
        for i, item in enumerate(items):
            if type(item) in _BLOCKING:
                pending.append((i, self._pool.submit(self.perform, item),
                                self.host.monotonic() + _allowance(item)))
            else:
                results[i] = self.perform(item)
        for i, future, deadline in pending:
            try:
                results[i] = future.result(timeout=max(0.0, deadline - self.host.monotonic()))
            except FutureTimeout:
                raise ExecutorError("%s overran its deadline by %.1f s" % (
                    type(items[i]).__name__, OVERRUN)) from None
        return tuple(results)

    def _enact(self, effect: fx.Enact) -> Tuple[Any, ...]:
        decision: Decision = effect.decision
        self.decision = decision
        self._report(decision)
        outcomes = self._all(decision.actions) if decision.actions else ()
        if self.host.alerts is not None:
            # After the actions, which alerts never delay: deriving them takes microseconds and
            # handing them over never waits (halizard.runtime.alerts).
            self.host.alerts.observe(decision, outcomes)
        return outcomes

    def _start_fence(self, effect: fx.StartFence) -> Any:
        if self.host.fence is None:
            raise ExecutorError("StartFence without a fence agent configured")
        return self.host.fence.start(effect)

    def _collect_fence(self, effect: fx.CollectFenceResults) -> Tuple[fx.FenceOutcome, ...]:
        return () if self.host.fence is None else self.host.fence.collect()

    def _start_call(self, effect: fx.StartCall) -> fx.CallStarted:
        with self._lock:
            self._calls_started += 1
            job = self._calls_started

        def call() -> None:
            result = self.host.xapi.perform(effect.call)
            with self._lock:
                self._calls_done.append(fx.CallOutcome(job, result))

        # A thread of its own (an event.from long poll lasts up to 30 s), and a daemon thread:
        # a planned stop must not wait for the poll to end.
        threading.Thread(target=call, name="xapi-call-%d" % job, daemon=True).start()
        return fx.CallStarted(job)

    def _collect_calls(self, effect: fx.CollectCalls) -> Tuple[fx.CallOutcome, ...]:
        with self._lock:
            done, self._calls_done = tuple(self._calls_done), []
        return done

    # --- reporting -------------------------------------------------------------------------------

    def _report(self, decision: Decision) -> None:
        line = decision.line()
        notifier = self.host.notifier
        notifier.notify("WATCHDOG=1", "STATUS=" + one_line(line))
        if not self._ready:
            self._ready = True
            notifier.ready(line)
        if self.host.publisher is not None:
            self.host.publisher.offer(decision, self._role)
        gist = (decision.mode.value, _DIGITS.sub("#", decision.reason))
        now = self.host.monotonic()
        if gist != self._logged or now - self._logged_at >= REMIND:
            self._logged, self._logged_at = gist, now
            s = decision.state
            self.host.journal.decision(
                decision.mode.value, decision.reason,
                None if s.peer_upper is None else max(0.0, decision.at - s.peer_upper),
                None if s.gateway_upper is None else max(0.0, decision.at - s.gateway_upper),
                priority=_PRIORITY.get(decision.mode, INFO),
                HALIZARD_ACTING_MASTER=int(decision.acting_master),
                HALIZARD_ACTIONS=" ".join(type(a).__name__ if not isinstance(a, fx.XapiCall)
                                          else a.method for a in decision.actions) or "-")
        for action, intent in zip(decision.actions, decision.intents):
            if not isinstance(action, fx.WatchdogControl) or action.op != "feed":
                log.info("action: %s (%s)", _describe(action), getattr(intent, "kind", intent))


# Effects that wait on the outside world: run on the pool inside a Parallel.
_BLOCKING = frozenset({fx.Probe, fx.ListGuests, fx.XapiCall, fx.DestroyGuests})


def _allowance(effect: Any) -> float:
    """How long ``effect`` may take before the executor gives up on it."""
    if isinstance(effect, fx.Probe):
        window = max(effect.timeout, effect.peer_wait)
        return (effect.echoes - 1) * effect.spacing + window + OVERRUN
    return float(getattr(effect, "timeout", 0.0)) + OVERRUN


def _describe(action: Any) -> str:
    if isinstance(action, fx.XapiCall):
        return "%s%s" % (action.method, "" if action.address is None else
                         " on " + action.address)
    if isinstance(action, fx.WatchdogControl):
        return "watchdog %s (%d s)" % (action.op, action.timeout_s)
    if isinstance(action, fx.StartFence):
        return "fence agent: %s" % action.action
    return type(action).__name__


JOURNAL_PRIORITY = {logging.CRITICAL: ERR - 1, logging.ERROR: ERR, logging.WARNING: WARNING,
                    logging.INFO: INFO}


class JournalHandler(logging.Handler):
    """The runtime modules' log records, into the journal (or stderr without it)."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.journal.record(self.format(record),
                                JOURNAL_PRIORITY.get(record.levelno, 7),
                                HALIZARD_LOGGER=record.name)
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)
