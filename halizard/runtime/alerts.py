"""Alert delivery: the book of what was said (halizard.core.alerts) and a courier per channel.

Delivery never holds up a decision. The executor hands each decision to ``AlertReporter``,
which derives the alerts (pure, microseconds) and puts them on each channel's bounded queue
without waiting; one worker thread per channel delivers them in order, each delivery under its
own deadline, and retries a failed one with a growing pause (a self-fenced host cannot reach
its mail server until its network is back; its alerts wait for it). A queue that is full drops
its oldest alert, counts it, logs it, and says so in the next alert that channel delivers.
Every failure is logged (the journal always has every alert).

Channels:

* the journal: every alert, always, with structured fields (``journalctl HALIZARD_ALERT=
  takeover-finished``), the numbers as ``HALIZARD_FACT_<NAME>``;
* XenAPI messages on the pool (XenCenter, Xen Orchestra, ``xe message-list``), created through
  whichever xapi is master: this host's own, or its master's over the network; held while
  there is none to reach;
* e-mail (halizard.runtime.mail) and a webhook (halizard.runtime.webhook), when configured.
"""
import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from halizard.core.alerts import (
    CRITICAL,
    INFO,
    REJOIN,
    RESOLVED,
    TAKEOVER_FINISHED,
    TWO_MASTERS,
    WARNING,
    Alert,
    AlertBook,
    AlertPolicy,
    observe,
)
from halizard.core.config import Config
from halizard.core.state import Decision
from halizard.effects import LOCAL, POOL_SESSION, PoolRole, XapiCall
from halizard.runtime.alertconfig import AlertSettings
from halizard.runtime.channel import ChannelError
from halizard.runtime.systemd import ERR, NOTICE, Journal
from halizard.runtime.systemd import INFO as JOURNAL_INFO
from halizard.runtime.systemd import WARNING as JOURNAL_WARNING

log = logging.getLogger("halizard.alerts")

BACKOFF = (2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # s between attempts of a failing channel
XAPI_TIMEOUT = 5.0  # s per call of the XenAPI channel
CRIT = ERR - 1

# XenAPI message priorities (xapi's own scale): 1 data-loss imminent, 2 service-loss imminent,
# 3 service degraded, 4 service recovered, 5 informational.
def xapi_priority(alert: Alert) -> int:
    if alert.state == RESOLVED:
        return 4
    if alert.kind == TWO_MASTERS:
        return 1  # the same VM may start on both: disks at stake
    if alert.severity == CRITICAL:
        return 2
    if alert.kind in (TAKEOVER_FINISHED, REJOIN):
        return 4
    return 3 if alert.severity == WARNING else 5


def journal_priority(alert: Alert) -> int:
    if alert.state == RESOLVED:
        return NOTICE
    return {CRITICAL: CRIT, WARNING: JOURNAL_WARNING, INFO: JOURNAL_INFO}.get(alert.severity,
                                                                              NOTICE)


def message_name(alert: Alert) -> str:
    """HALIZARD_PEER_LOST, HALIZARD_PEER_LOST_RESOLVED: what `xe message-list name=` finds."""
    name = "HALIZARD_" + alert.kind.upper().replace("-", "_")
    return name + "_RESOLVED" if alert.state == RESOLVED else name


class JournalChannel:
    """Every alert, always: the record an administrator can count on."""

    name = "journal"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def describe(self) -> str:
        return "systemd journal"

    def send(self, alert: Alert, dropped: int = 0) -> None:
        fields: Dict[str, Any] = {
            "HALIZARD_ALERT": alert.kind, "HALIZARD_ALERT_STATE": alert.state,
            "HALIZARD_ALERT_KEY": alert.key, "HALIZARD_ALERT_SEVERITY": alert.severity,
            "HALIZARD_HOST": alert.host,
        }
        if alert.mode:
            fields["HALIZARD_MODE"] = alert.mode
            fields["HALIZARD_REASON"] = alert.reason
        for name, value in alert.facts:
            fields["HALIZARD_FACT_" + "".join(c if c.isalnum() else "_"
                                              for c in name.upper())] = value
        if dropped:
            fields["HALIZARD_ALERTS_DROPPED"] = dropped
        self.journal.record("alert: " + alert.subject, journal_priority(alert), **fields)


class XapiMessages:
    """A message on the pool for each alert, through whichever xapi is master."""

    name = "xapi"

    def __init__(self, xapi: Any, role: Callable[[], Optional[PoolRole]],
                 timeout: float = XAPI_TIMEOUT) -> None:
        self.xapi = xapi  # a halizard.runtime.xapi.XapiAdapter (it never raises)
        self.role = role
        self.timeout = timeout
        self._pool: Optional[Tuple[Optional[str], str]] = None  # (address, pool uuid)

    def describe(self) -> str:
        return "XenAPI messages on the pool"

    def _call(self, method: str, args: Tuple[Any, ...], address: Optional[str]) -> Any:
        result = self.xapi.perform(XapiCall(method, args, address, POOL_SESSION, self.timeout))
        if not result.ok:
            self._pool = None
            where = "this host's xapi" if address is LOCAL else "the master %s" % address
            raise ChannelError("%s on %s: %s" % (method, where, " ".join(result.error)))
        return result.value

    def send(self, alert: Alert, dropped: int = 0) -> None:
        role = self.role()
        if role is None:
            raise ChannelError("no pool role known yet")
        if not role.is_master and not role.master_address:
            raise ChannelError("this host is a slave with no known master")
        address = LOCAL if role.is_master else role.master_address
        if self._pool is None or self._pool[0] != address:
            records = self._call("pool.get_all_records", (), address)
            uuid = next((r.get("uuid") for r in records.values() if isinstance(r, dict)), None) \
                if isinstance(records, dict) else None
            if not uuid:
                raise ChannelError("pool.get_all_records: no pool")
            self._pool = (address, uuid)
        body = alert.text()
        if dropped:
            body += "\n%d earlier alert%s dropped on this channel (queue full).\n" % (
                dropped, "" if dropped == 1 else "s")
        self._call("message.create", (message_name(alert), str(xapi_priority(alert)), "Pool",
                                      self._pool[1], body), address)


class Courier:
    """One channel's bounded queue and the thread that delivers it, in order."""

    def __init__(self, channel: Any, size: int, backoff: Sequence[float] = BACKOFF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.size = size
        self.backoff = tuple(backoff)
        self.clock = clock
        self._queue: Deque[Alert] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self.sent = 0
        self.failed = 0  # failed attempts
        self.dropped = 0
        self._untold = 0  # dropped, not yet said in a delivered alert
        self._logged_drops = 0
        self._streak = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="alerts-%s" % channel.name,
                                        daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return str(self.channel.name)

    def offer(self, alert: Alert) -> None:
        """Queue ``alert``; never waits (the oldest alert goes when the queue is full)."""
        with self._cond:
            if len(self._queue) >= self.size:
                self._queue.popleft()
                self.dropped += 1
                self._untold += 1
            self._queue.append(alert)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued alert is delivered (True) or ``timeout`` passes (False)."""
        end = self.clock() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = end - self.clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                alert = self._queue[0]
                untold = self._untold
                self._busy = True
            if self.dropped > self._logged_drops:
                log.warning("alert channel %s: %d alert%s dropped so far (queue of %d full)",
                            self.name, self.dropped, "" if self.dropped == 1 else "s",
                            self.size)
                self._logged_drops = self.dropped
            error = ""
            try:
                self.channel.send(alert, untold)
            except ChannelError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a channel's bug must not end the courier
                error = "%s: %s" % (type(exc).__name__, exc)
            self._settle(alert, untold, error)

    def _settle(self, alert: Alert, untold: int, error: str) -> None:
        with self._cond:
            self._busy = False
            if not error:
                if self._queue and self._queue[0] is alert:
                    self._queue.popleft()
                self.sent += 1
                self._untold = max(0, self._untold - untold)
                streak, self._streak = self._streak, 0
                self._cond.notify_all()
                if streak:
                    log.info("alert channel %s: delivering again after %d failed attempt%s",
                             self.name, streak, "" if streak == 1 else "s")
                return
            self.failed += 1
            self._streak += 1
            self.last_error = error
            pause = self.backoff[min(self._streak, len(self.backoff)) - 1]
            queued = len(self._queue)
            self._cond.notify_all()
        log.warning("alert channel %s: %s (%s %s; %d queued; next attempt in %.0f s)",
                    self.name, error, alert.kind, alert.state, queued, pause)
        end = self.clock() + pause
        with self._cond:
            while not self._closed:
                left = end - self.clock()
                if left <= 0:
                    break
                self._cond.wait(left)


class Dispatcher:
    """Hands every alert to each channel's courier."""

    def __init__(self, channels: Sequence[Any], size: int = 100,
                 backoff: Sequence[float] = BACKOFF) -> None:
        self.couriers = [Courier(channel, size, backoff) for channel in channels]

    def offer(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            for courier in self.couriers:
                courier.offer(alert)

    def drain(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        return all(c.drain(max(0.0, end - time.monotonic())) for c in self.couriers)

    def stats(self) -> Dict[str, Dict[str, Any]]:
        return {c.name: {"sent": c.sent, "failed": c.failed, "dropped": c.dropped,
                         "queued": c.pending(), "last_error": c.last_error}
                for c in self.couriers}

    def close(self) -> None:
        for courier in self.couriers:
            courier.close()


class AlertReporter:
    """What the executor calls with each decision: derive, then hand over without waiting."""

    def __init__(self, config: Config, policy: AlertPolicy, dispatcher: Dispatcher,
                 host: str) -> None:
        self.config = config
        self.policy = policy
        self.dispatcher = dispatcher
        self.book = AlertBook(host)
        self._broken = False

    def observe(self, decision: Decision, outcomes: Sequence[Any]) -> Tuple[Alert, ...]:
        try:
            self.book, alerts = observe(self.book, self.policy, self.config, decision,
                                        tuple(outcomes))
        except Exception:  # noqa: BLE001 - alerting must never take the daemon down
            if not self._broken:
                self._broken = True
                log.exception("alerts: cannot derive alerts from a decision (a bug); "
                              "the decisions go on")
            return ()
        if alerts:
            self.dispatcher.offer(alerts)
        return alerts

    def offer(self, alerts: Sequence[Alert]) -> None:
        """Alerts from outside the decisions (start-up findings)."""
        self.dispatcher.offer(alerts)


def build_channels(settings: AlertSettings, smtp_password: str, journal: Journal,
                   xapi: Any, role: Callable[[], Optional[PoolRole]],
                   hostname: Optional[str] = None) -> List[Any]:
    """The channels ``settings`` configure, the journal first; ``xapi`` None leaves the XenAPI
    channel out."""
    channels: List[Any] = [JournalChannel(journal)]
    if settings.xapi_messages and xapi is not None:
        channels.append(XapiMessages(xapi, role))
    # Imported only when configured: smtplib and email weigh half a megabyte in dom0's memory.
    if settings.email is not None:
        from halizard.runtime.mail import Mailer

        channels.append(Mailer(settings.email, smtp_password, hostname))
    if settings.webhook is not None:
        from halizard.runtime.webhook import Webhook

        channels.append(Webhook(settings.webhook))
    return channels


def describe_channels(channels: Sequence[Any]) -> str:
    return ", ".join("%s (%s)" % (c.name, c.describe()) for c in channels)
