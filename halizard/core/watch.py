"""The pool watcher: an ``event.from`` long poll that keeps the daemon's view of the pool current
at a few XenAPI calls a minute. Pure: the loop starts each poll as a background call
(effects.StartCall), collects the outcomes (effects.CollectCalls), and hands them here.

Why: a view kept current by full reads costs four calls per read; reading every few seconds
costs about fifty calls a minute for two hosts. A long poll costs two calls a minute while
nothing changes and answers within about 50 ms of a change (research/xenapi.md 2.6).

Where: a master watches its own xapi; a slave watches its master, and only while its master is
visible (a poll at an unreachable master would only time out). A token is meaningful only on
the server that issued it, so a new target starts over from ``""`` (a full resync, one call).

What the view still needs from full reads: ``host_metrics`` (``live``, ``memory_total``),
which is too noisy to watch; the loop passes in the table from its last full read, which it
repeats every FULL_REFRESH in a quiet steady state (halizard.core.observe).
"""
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Tuple

from halizard.core.config import Config
from halizard.core.pool import PoolParseError, PoolView
from halizard.core.poolcache import EMPTY, WATCHED, PoolRecords, Records, apply_events
from halizard.effects import GARBAGE, CallOutcome, XapiCall

POLL = 30.0  # seconds an event.from waits when nothing changes: two calls a minute
RETRY = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before the next poll after 1, 2, ... failures
CLASSES = list(WATCHED)  # event.from's class list (an XML-RPC array)


@dataclass(frozen=True)
class Watch:
    """One watcher's state. ``records`` are current as of the last reply; while a poll is out
    they stay current (xapi answers it as soon as anything changes), until the poll is overdue.
    """

    address: Optional[str]  # effects.LOCAL (this host's xapi) or the master's address
    session: str
    records: PoolRecords = EMPTY
    metrics: Records = field(default_factory=dict)  # host_metrics from the last full read
    job: Optional[int] = None  # the poll in flight
    asked_with: str = ""  # the token the poll in flight was sent with
    polling_since: Optional[float] = None
    failures: int = 0
    retry_after: float = 0.0
    error: str = ""  # why the last poll failed ("" after a good reply)

    def is_current(self, now: float, config: Config) -> bool:
        """The records are the pool as it is now: synced, the last poll answered, and the one
        in flight (if any) not overdue."""
        if not self.records.token or self.error:
            return False
        return self.job is None or (self.polling_since is not None
                                    and now - self.polling_since <= overdue_after(config))


def overdue_after(config: Config) -> float:
    """How long a poll may be out before the watch stops vouching for its records: the poll's
    own timeout, and one cycle until its answer is collected."""
    return POLL + config.xapi_timeout + config.probe_interval + config.probe_window


def retarget(watch: Optional[Watch], address: Optional[str], session: str) -> Watch:
    """The watch on ``address``: the same one, or a new one that starts with a full resync."""
    if watch is not None and watch.address == address and watch.session == session:
        return watch
    return Watch(address, session, metrics=watch.metrics if watch is not None else {})


def poll(watch: Watch, now: float, call_timeout: float) -> Optional[XapiCall]:
    """The next event.from to start, if one is due (none while one is out)."""
    if watch.job is not None or now < watch.retry_after:
        return None
    return XapiCall("event.from", (CLASSES, watch.records.token, POLL), watch.address,
                    watch.session, POLL + call_timeout)


def started(watch: Watch, job: int, token: str, now: float) -> Watch:
    return replace(watch, job=job, asked_with=token, polling_since=now)


def absorb(watch: Watch, outcomes: Tuple[CallOutcome, ...], now: float) -> Watch:
    """The watch after the poll in flight answered (outcomes of other jobs, from an earlier
    target, are ignored). A failure keeps the records (the last known pool, for the cache) but
    forgets the token: the next poll resyncs, after a backoff."""
    for outcome in outcomes:
        if outcome.job != watch.job:
            continue
        result = outcome.result
        error = result.code
        if result.ok:
            try:
                records = apply_events(watch.records, watch.asked_with, result.value)
                return replace(watch, records=records, job=None, polling_since=None,
                               failures=0, retry_after=now, error="")
            except PoolParseError:
                error = GARBAGE
        failures = watch.failures + 1
        return replace(watch, records=watch.records._replace(token=""), job=None,
                       polling_since=None, failures=failures,
                       retry_after=now + RETRY[min(failures, len(RETRY)) - 1], error=error)
    return watch


def with_metrics(watch: Watch, metrics: Any) -> Watch:
    return replace(watch, metrics=metrics) if isinstance(metrics, Mapping) else watch


def view_of(watch: Watch) -> PoolView:
    """The pool as the watch has it (raises PoolParseError for records not shaped like xapi's:
    the caller resyncs)."""
    return watch.records.view(watch.metrics)


def resync(watch: Watch) -> Watch:
    """Start over from a full resync at the next poll (the records did not parse)."""
    return replace(watch, records=watch.records._replace(token=""), error=GARBAGE)
