"""The alert channels against real servers on loopback, and the couriers that keep delivery
from ever holding up a decision.

E-mail goes to a real SMTP server (aiosmtpd) without TLS, with STARTTLS and with implicit TLS,
with and without a login; the XenAPI messages to the wire-level simulated pool, through the
master's socket or, from a slave, over the network; the webhook to a local HTTP server. The
failures (a server down, one that never answers, a refused login, an error status) end in a
clear ChannelError within the channel's deadline, are logged by the courier, and retried.
"""
import email
import email.policy
import logging
import threading
import time

import pytest

from halizard.core.alerts import TAKEOVER_FINISHED, Alert, event_alert
from halizard.effects import PoolRole
from halizard.runtime.alertconfig import EmailSettings, WebhookSettings
from halizard.runtime.alerts import (
    Courier,
    Dispatcher,
    JournalChannel,
    XapiMessages,
    message_name,
    xapi_priority,
)
from halizard.runtime.channel import ChannelError
from halizard.runtime.mail import Mailer
from halizard.runtime.systemd import Journal
from halizard.runtime.webhook import Webhook
from halizard.runtime.xapi import XapiAdapter
from simulations.onehost import wait_for
from simulations.xapi import SimulatedPool
from tests.servers import LOGIN, PASSWORD, free_port

pytestmark = pytest.mark.runtime


def takeover_alert(**changes):
    base = dict(key=TAKEOVER_FINISHED, kind=TAKEOVER_FINISHED, state="event",
                severity="warning", host="xs2",
                summary="1 VM restarted in 4.1 s (16.3 s after the peer was last heard)",
                details=("vm-a restarted on xs2",), facts=(("took_s", 4.1), ("restarted", 1)),
                mode="survivor", reason="peer certainly dead (...); all protected VMs running",
                wall=1700000000.0)
    base.update(changes)
    return Alert(**base)


def mailer(port, cert=None, security="none", username=None, password="", timeout=5.0):
    settings = EmailSettings("127.0.0.1", "halizard@xs2.example", ("ops@example.com",
                                                                   "oncall@example.com"),
                             security, port, username, "/unused" if username else None,
                             timeout, cert[0] if cert else None)
    return Mailer(settings, password, "xs2.example")


@pytest.mark.parametrize("smtp", ["none", "starttls", "tls"], indirect=True)
def test_an_alert_arrives_by_mail_with_every_kind_of_tls(smtp, cert):
    inbox, port, mode = smtp
    login = {} if mode == "none" else dict(username=LOGIN, password=PASSWORD)
    mailer(port, cert, mode, **login).send(takeover_alert(), dropped=2)
    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "halizard@xs2.example"
    assert envelope.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert msg["Subject"] == ("halizard xs2: takeover finished: 1 VM restarted in 4.1 s (16.3 s "
                              "after the peer was last heard)")
    assert msg["X-Halizard-Alert"] == "takeover-finished event warning"
    assert msg["From"] == "halizard@xs2.example" and "Message-ID" in msg and "Date" in msg
    text = msg.get_content()
    assert "Decision: survivor: peer certainly dead (...); all protected VMs running" in text
    assert "vm-a restarted on xs2" in text and "Numbers: took_s=4.1, restarted=1" in text
    assert "2 earlier alerts could not be delivered by e-mail" in text


@pytest.mark.parametrize("smtp", ["starttls"], indirect=True)
def test_a_refused_login_is_a_clear_failure(smtp, cert):
    inbox, port, _ = smtp
    with pytest.raises(ChannelError) as failure:
        mailer(port, cert, "starttls", LOGIN, "wrong").send(takeover_alert())
    assert "login as halizard at 127.0.0.1:%d: 535" % port in str(failure.value)
    assert inbox.envelopes == []


@pytest.mark.parametrize("smtp", ["starttls"], indirect=True)
def test_a_certificate_that_does_not_verify_is_refused(smtp):
    _, port, _ = smtp
    with pytest.raises(ChannelError) as failure:
        mailer(port, None, "starttls", LOGIN, PASSWORD).send(takeover_alert())
    assert "STARTTLS at 127.0.0.1:%d" % port in str(failure.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failure.value)


def test_a_mail_server_that_is_down_fails_at_once():
    port = free_port()
    with pytest.raises(ChannelError) as failure:
        mailer(port).send(takeover_alert())
    assert "connect to 127.0.0.1:%d" % port in str(failure.value)
    assert "refused" in str(failure.value).lower()


def test_a_mail_server_that_never_answers_ends_at_the_deadline(silent):
    started = time.monotonic()
    with pytest.raises(ChannelError) as failure:
        mailer(silent.port, timeout=1.5).send(takeover_alert())
    waited = time.monotonic() - started
    assert "timed out (deadline 1.5 s)" in str(failure.value)
    assert waited < 1.5 + 2.0  # bounded by the deadline, not by the server


# --- webhook ----------------------------------------------------------------------------------


def test_the_webhook_posts_the_alerts_json(hook):
    url = "http://127.0.0.1:%d/hooks/T0K3N?x=1" % hook.server_address[1]
    channel = Webhook(WebhookSettings(url, 5.0))
    assert "T0K3N" not in channel.describe() and "T0K3N" not in repr(channel.settings)
    channel.send(takeover_alert(), dropped=3)
    path, kind, data = hook.received[0]
    assert path == "/hooks/T0K3N?x=1" and kind == "application/json"
    assert data["kind"] == "takeover-finished" and data["host"] == "xs2"
    assert data["dropped"] == 3 and data["facts"] == {"took_s": 4.1, "restarted": 1}
    assert data["decision"]["mode"] == "survivor"
    assert data == dict(takeover_alert().to_dict(), dropped=3, halizard=data["halizard"])


def test_a_webhook_error_status_or_silence_is_a_failure(hook, silent):
    hook.status = 500
    url = "http://127.0.0.1:%d/h" % hook.server_address[1]
    with pytest.raises(ChannelError) as failure:
        Webhook(WebhookSettings(url, 5.0)).send(takeover_alert())
    assert "HTTP 500" in str(failure.value)
    with pytest.raises(ChannelError) as failure:
        Webhook(WebhookSettings("http://127.0.0.1:%d/h" % silent.port, 1.0)).send(
            takeover_alert())
    assert "timed out (deadline 1.0 s)" in str(failure.value)


# --- XenAPI messages ----------------------------------------------------------------------------


@pytest.fixture
def pool(tmp_path):
    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=20.0, boot_time=(3.0, 4.0),
                      vms=[{"name": "vm-a", "host": "xs1"}], unix_dir=str(tmp_path))
    p.start()
    yield p
    p.stop()


def adapter(pool, host):
    return XapiAdapter(pool.url(host), lambda address: "http://%s:%d" % (address, pool.port),
                       pool.credentials)


def test_messages_on_the_pool_from_the_master_and_through_it_from_a_slave(pool):
    master = XapiMessages(adapter(pool, "xs1"),
                          lambda: PoolRole(pool.host_uuid("xs1"), True, None))
    master.send(takeover_alert())
    slave = XapiMessages(adapter(pool, "xs2"),
                         lambda: PoolRole(pool.host_uuid("xs2"), False, pool.address("xs1")))
    slave.send(takeover_alert(state="resolved", kind="peer-lost", key="peer-lost",
                              severity="info"), dropped=1)
    messages = pool.messages("xs1")
    assert [m["name"] for m in messages] == ["HALIZARD_TAKEOVER_FINISHED",
                                             "HALIZARD_PEER_LOST_RESOLVED"]
    pool_uuid = pool.inspect(lambda: next(iter(
        pool.model._xapis["xs1"].db.pool.records.values()))["uuid"])
    assert all(m["cls"] == "Pool" and m["obj_uuid"] == pool_uuid for m in messages)
    assert [m["priority"] for m in messages] == ["4", "4"]
    assert messages[0]["body"].startswith("halizard xs2: takeover finished: 1 VM restarted")
    assert "1 earlier alert dropped" in messages[1]["body"]


def test_with_no_master_to_reach_the_message_waits_and_goes_once_there_is(pool, caplog):
    caplog.set_level(logging.INFO, logger="halizard.alerts")
    slave = XapiMessages(adapter(pool, "xs2"),
                         lambda: PoolRole(pool.host_uuid("xs2"), False, pool.address("xs1")),
                         timeout=1.0)
    pool.crash("xs1")
    courier = Courier(slave, 10, backoff=(0.2,))
    try:
        courier.offer(takeover_alert())
        wait_for(lambda: courier.failed >= 2, 20, "the courier tries and fails, twice")
        assert courier.pending() == 1 and courier.sent == 0
        assert "alert channel xapi: message.create" in caplog.text or \
            "alert channel xapi: pool.get_all_records" in caplog.text
        pool.power_on("xs1")
        wait_for(lambda: courier.sent == 1, 60, "delivered once the master is back")
        assert [m["name"] for m in pool.messages("xs1")] == ["HALIZARD_TAKEOVER_FINISHED"]
        assert "alert channel xapi: delivering again after" in caplog.text
    finally:
        courier.close()


def test_priorities_and_names_follow_xapis_scale():
    assert xapi_priority(takeover_alert(kind="two-masters", severity="critical")) == 1
    assert xapi_priority(takeover_alert(kind="self-fence", severity="critical")) == 2
    assert xapi_priority(takeover_alert(kind="peer-lost", severity="warning")) == 3
    assert xapi_priority(takeover_alert(state="resolved")) == 4
    assert xapi_priority(takeover_alert(kind="test", severity="info")) == 5
    assert message_name(takeover_alert(kind="vm-not-restarted")) == "HALIZARD_VM_NOT_RESTARTED"


# --- the journal ---------------------------------------------------------------------------------


def test_the_journal_gets_every_alert_with_its_fields():
    import io

    stream = io.StringIO()
    JournalChannel(Journal(use_binding=False, stream=stream, priority_prefix=True)).send(
        takeover_alert(), dropped=4)
    line = stream.getvalue()
    assert line.startswith("<4>alert: halizard xs2: takeover finished: 1 VM restarted")
    for field in ("HALIZARD_ALERT=takeover-finished", "HALIZARD_ALERT_STATE=event",
                  "HALIZARD_FACT_TOOK_S=4.1", "HALIZARD_ALERTS_DROPPED=4",
                  "HALIZARD_MODE=survivor"):
        assert field in line


# --- couriers: bounded, never waiting, failures logged -------------------------------------------


class Stuck:
    """A channel whose delivery hangs until released (a mail server that holds the line)."""

    name = "stuck"

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.got = []

    def send(self, alert, dropped=0):
        self.entered.set()
        if not self.release.wait(30):
            raise ChannelError("never released")
        self.got.append((alert.summary, dropped))


def test_offering_never_waits_for_a_hung_channel_and_a_full_queue_drops_the_oldest(caplog):
    caplog.set_level(logging.INFO, logger="halizard.alerts")
    channel = Stuck()
    dispatcher = Dispatcher([channel], size=5)
    try:
        dispatcher.offer([event_alert("test", "xs1", "first")])
        assert channel.entered.wait(10)
        offered = threading.Thread(target=dispatcher.offer, args=(
            [event_alert("test", "xs1", "alert %d" % i) for i in range(12)],))
        offered.start()
        offered.join(10)
        assert not offered.is_alive()  # handed over while the channel still hangs
        stats = dispatcher.stats()["stuck"]
        assert stats["queued"] == 5 and stats["dropped"] == 8  # "first" and alerts 0 to 6
        channel.release.set()
        assert dispatcher.drain(10)
        assert channel.got[0] == ("first", 0)
        # what was delivered after the drops says how many: the 7 dropped behind "first"
        assert [g for g in channel.got[1:]] == [("alert 7", 8)] + [
            ("alert %d" % i, 0) for i in range(8, 12)]
        assert "alert channel stuck: 8 alerts dropped so far (queue of 5 full)" in caplog.text
    finally:
        dispatcher.close()


class Flaky:
    name = "flaky"

    def __init__(self, failures):
        self.failures = failures
        self.got = []

    def send(self, alert, dropped=0):
        if self.failures:
            self.failures -= 1
            raise ChannelError("connect to mail.example: [Errno 111] Connection refused")
        self.got.append(alert.summary)


def test_a_failing_channel_is_retried_in_order_and_each_failure_logged(caplog):
    caplog.set_level(logging.INFO, logger="halizard.alerts")
    channel = Flaky(3)
    courier = Courier(channel, 10, backoff=(0.05, 0.1))
    try:
        for i in range(3):
            courier.offer(event_alert("test", "xs1", "n%d" % i))
        wait_for(lambda: len(channel.got) == 3, 20, "all three delivered")
        assert channel.got == ["n0", "n1", "n2"] and courier.failed == 3
        assert caplog.text.count("alert channel flaky: connect to mail.example") == 3
        assert "alert channel flaky: delivering again after 3 failed attempts" in caplog.text
    finally:
        courier.close()
