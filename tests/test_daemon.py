"""The daemon process on a real network: `halizard daemon --config FILE` in a network namespace,
beside the wire-level simulated xapi, with a simulated watchdog device and a fake `xl`.

It must arm and feed the watchdog while it has contact, self-fence when its only link goes down
(through xapi, since it is the pool master: the VM is halted in the pool database), disarm the
watchdog once no guest runs, and exit 0 on SIGTERM. A configuration problem stops it at once
with exit status 78 and a message naming the key.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from halizard.effects import XapiCall
from halizard.runtime.publish import status_key
from halizard.runtime.xapi import XapiAdapter
from simulations.onehost import ROOT, OneHost, wait_for
from tests.netns import in_netns, needs_root
from tests.servers import Silent, start_hook, stop_hook

pytestmark = pytest.mark.runtime
@pytest.fixture
def host(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    rig = OneHost(str(tmp_path))
    try:
        yield rig
    finally:
        rig.close()


def report(rig: OneHost) -> dict:
    """The daemon's status report, read from the pool database over the wire."""
    adapter = XapiAdapter(rig.pool.url("xs1"), str, rig.pool.credentials)
    refs = adapter.perform(XapiCall("pool.get_all", timeout=5.0))
    other = adapter.perform(XapiCall("pool.get_other_config", (refs.value[0],), timeout=5.0))
    adapter.close()
    value = other.value.get(status_key(rig.pool.host_uuid("xs1")))
    return json.loads(value) if value else {}


@needs_root
def test_the_daemon_guards_its_guests_and_self_fences_when_its_link_goes(host):
    daemon = host.start()
    watchdog, pool = host.watchdog, host.pool
    try:
        wait_for(lambda: watchdog.kinds().count("feed") >= 3, 20,
                 "the daemon arms the watchdog and feeds it")
        assert "normal: " in host.read_log()
        wait_for(lambda: report(host).get("state") == "normal", 10,
                 "the daemon publishes its report in the pool database")
        assert len(pool.domains("xs1")) == 1
        cut = time.monotonic()
        host.link_down()
        # lease_timeout 4 s, then the self-fence within watchdog_timeout 5 s.
        wait_for(lambda: not pool.domains("xs1"), 15, "the isolated master's guests stop")
        stopped = time.monotonic() - cut
        wait_for(lambda: "magic" in watchdog.kinds(), 10,
                 "the watchdog is disarmed once no guest runs")
        text = host.read_log()
        assert "carrier lost on eth0: probing now" in text
        assert "isolated: " in text and "self-fenced: self-fence complete" in text
        assert "shut down hard through xapi" in text
        assert not watchdog.fired and not os.path.exists(os.path.join(host.dir, "reset"))
        assert stopped < 4.0 + 5.0 + 1.0, stopped
        wait_for(lambda: report(host).get("state") == "self-fenced", 10,
                 "the report follows the mode")
        assert report(host)["peer_seen_ago"] >= 4.0
        daemon.terminate()
        assert daemon.wait(15) == 0
        assert "stopped" in host.read_log()
    finally:
        host.close()


@needs_root
def test_a_bad_configuration_stops_the_daemon_at_once_naming_the_key(host):
    config = host.config
    with open(config) as handle:
        text = handle.read().replace('interfaces = ["eth0"]', 'interfaces = ["eth0 eth1"]')
    with open(config, "w") as handle:
        handle.write(text + 'fence_agent = "fence_ipmilan"\nfence_options = { password = "x" }\n')
    os.chmod(config, 0o644)
    done = subprocess.run([sys.executable, "-m", "halizard", "daemon", "--config", config],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                          timeout=30, universal_newlines=True)
    assert done.returncode == 78, done.stdout
    assert "fence_options: the configuration file %s is mode 0644" % config in done.stdout
    assert "chmod 600" in done.stdout
    assert "interfaces: " in done.stdout  # every problem at once, not the first only


@needs_root
def test_pool_wide_settings_come_from_the_pool_and_are_kept_for_later(tmp_path):
    rig = OneHost(str(tmp_path), pool_settings={"halizard.config.gateway_policy": "all",
                                                "halizard.config.watchdog_device": "/dev/x"})
    try:
        rig.start()
        wait_for(lambda: "normal: " in rig.read_log(), 20, "the daemon decides")
        text = rig.read_log()
        assert "pool-wide settings from the pool database: gateway_policy=all, " \
            "watchdog_device=/dev/x" in text
        # A host-local key in the pool is not applied, and the daemon says so, as an alert too.
        assert "halizard.config.watchdog_device: not applied" in text
        assert "unsafe configuration: 1 pool-wide setting not applied" in text
        assert "gateway 198.18.5.3 (all)" in text
        with open(os.path.join(rig.dir, "pool-settings.json")) as handle:
            assert json.load(handle)["halizard.config.gateway_policy"] == "all"
    finally:
        rig.close()


@needs_root
def test_alerts_go_out_and_a_mail_server_that_never_answers_delays_no_decision(host):
    """The journal, the pool's messages and a webhook get the self-fence as it happens, while
    the mail server (in the host's namespace, reachable whatever the link does) holds every
    delivery for its whole 8 s deadline: the self-fence completes on time all the same, and
    the mail's failure is logged."""
    mail = in_netns(host.ns, Silent)
    hook = in_netns(host.ns, start_hook)
    try:
        with open(host.config, "a") as handle:
            handle.write(textwrap.dedent("""\
                [alerts]
                resolve_after = "5s"
                [alerts.email]
                server = "127.0.0.1"
                port = %d
                security = "none"
                from = "halizard@xs1.example"
                to = ["ops@example.com"]
                timeout = "8s"
                [alerts.webhook]
                url = "http://127.0.0.1:%d/hook"
                """ % (mail.port, hook.server_address[1])))
        os.chmod(host.config, 0o600)  # it holds the webhook's URL
        daemon = host.start()
        wait_for(lambda: host.watchdog.kinds().count("feed") >= 3, 20, "the daemon settles")
        assert "alerts: journal (systemd journal), xapi (XenAPI messages on the pool), email " \
            "(127.0.0.1:%d (none) to ops@example.com), webhook" % mail.port in host.read_log()
        cut = time.monotonic()
        host.link_down()
        wait_for(lambda: "self-fenced: self-fence complete" in host.read_log(), 15,
                 "the self-fence completes")
        completed = time.monotonic() - cut
        assert completed < 4.0 + 5.0 + 1.0, completed  # as without alerts (the test above)
        names = lambda: [m["name"] for m in host.pool.messages("xs1")]  # noqa: E731
        wait_for(lambda: "HALIZARD_SELF_FENCE" in names(), 10, "the pool's message")
        assert {"HALIZARD_PEER_LOST", "HALIZARD_GATEWAY_LOST"} <= set(names())
        wait_for(lambda: any(r[2]["kind"] == "self-fence" for r in hook.received), 10,
                 "the webhook's POST")
        text = host.read_log()
        assert "alert: halizard xs1: self-fence: no contact with peer or gateway" in text
        wait_for(lambda: "alert channel email: connect to 127.0.0.1:%d: timed out (deadline "
                 "8.0 s)" % mail.port in host.read_log(), 20, "the mail's failure, logged")
        daemon.terminate()
        assert daemon.wait(20) == 0
    finally:
        host.close()
        mail.close()
        stop_hook(hook)


@needs_root
def test_a_refused_configuration_is_an_alert_too(host, hook):
    with open(host.config) as handle:
        text = handle.read()
    with open(host.config, "w") as handle:
        handle.write(text + 'takeover_delay = "5s"\n[alerts.webhook]\nurl = "http://127.0.0.1:%d/h"'
                     '\n' % hook.server_address[1])
    os.chmod(host.config, 0o600)
    done = subprocess.run([sys.executable, "-m", "halizard", "daemon", "--config", host.config],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                          timeout=60, universal_newlines=True)
    assert done.returncode == 78, done.stdout
    kind = [r[2] for r in hook.received if r[2]["kind"] == "unsafe-configuration"]
    assert kind and kind[0]["summary"].startswith("the daemon refuses to start: 2 problems in ")
    assert any("takeover_delay" in line for line in kind[0]["details"])
    assert [m["name"] for m in host.pool.messages("xs1")] == ["HALIZARD_UNSAFE_CONFIGURATION"]
    assert "alert: halizard " in done.stdout and "unsafe configuration" in done.stdout
