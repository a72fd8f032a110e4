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
import time

import pytest

from halizard.effects import XapiCall
from halizard.runtime.publish import status_key
from halizard.runtime.xapi import XapiAdapter
from simulations.onehost import ROOT, OneHost, wait_for
from tests.netns import needs_root

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
