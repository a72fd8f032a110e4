"""The daemon process on a real network: `halizard daemon --config FILE` in a network namespace,
beside the wire-level simulated xapi, with a simulated watchdog device and a fake `xl`.

It must arm and feed the watchdog while it has contact, self-fence when its only link goes down
(through xapi, since it is the pool master: the VM is halted in the pool database), disarm the
watchdog once no guest runs, and exit 0 on SIGTERM. A configuration problem stops it at once
with exit status 78 and a message naming the key.
"""
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Callable, List

import pytest

from halizard.runtime.watchdog import RecordingReset, SimulatedWatchdog
from simulations.xapi.pool import SimulatedPool
from tests.netns import Namespaces, needs_root

pytestmark = pytest.mark.runtime
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW = "%-40s %5d %5d %5d     %s  %8.1f %s        -                -\n"
HEADER = ("Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID"
          "                            Reason-Code\tSecurity Label\n")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("not within %.0f s: %s" % (timeout, what))
        time.sleep(0.05)


class FakeXl:
    """`xl list -v` and `xl destroy DOMID` against the simulated pool's domains on one host,
    through files the script reads and writes (a thread here keeps them in step)."""

    def __init__(self, directory: str, pool: SimulatedPool, host: str) -> None:
        self.directory = directory
        self.pool = pool
        self.host = host
        self.path = os.path.join(directory, "xl")
        with open(self.path, "w") as handle:
            handle.write(textwrap.dedent("""\
                #!/bin/sh
                if [ "$1" = list ]; then cat '%(d)s/header' '%(d)s/domains'
                else echo "$2" >> '%(d)s/destroyed'; fi
                """ % {"d": directory}))
        os.chmod(self.path, 0o755)
        with open(os.path.join(directory, "header"), "w") as handle:
            handle.write(HEADER + ROW % ("Domain-0", 0, 4096, 2, "r-----", 1.0,
                                         "00000000-0000-0000-0000-000000000000"))
        self.stopped = threading.Event()
        self._applied = 0
        self.sync()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _domains(self) -> List[str]:
        return sorted(self.pool.domains(self.host))

    def sync(self) -> None:
        try:
            with open(os.path.join(self.directory, "destroyed")) as handle:
                destroyed = handle.read().split()
        except OSError:
            destroyed = []
        domains = self._domains()
        for word in destroyed[self._applied:]:
            if word.isdigit() and 0 < int(word) <= len(domains):
                uuid = domains[int(word) - 1]
                self.pool.inspect(self._destroy, uuid)
        self._applied = len(destroyed)
        rows = "".join(ROW % ("vm%d" % i, i, 1024, 1, "-b----", 1.0, uuid)
                       for i, uuid in enumerate(self._domains(), 1))
        temporary = os.path.join(self.directory, "domains.tmp")
        with open(temporary, "w") as handle:
            handle.write(rows)
        os.replace(temporary, os.path.join(self.directory, "domains"))

    def _destroy(self, uuid: str) -> None:
        self.pool.world.destroy_domain(self.host, uuid, cause="self-fence")
        self.pool.model.on_domain_died(self.host, uuid)

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            self.sync()


@pytest.fixture
def host(tmp_path):
    """xs1 (pool master, one protected VM) in its own namespace, its peer's and gateway's
    addresses on a second namespace at the other end of a veth (the kernel answers pings)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    spaces = Namespaces()
    pool = watchdog = xl = None
    try:
        here, there = spaces.add("xs1"), spaces.add("peer")
        spaces.veth(here, "eth0", there, "eth0")
        spaces.address(here, "eth0", "198.18.5.1/24")
        spaces.address(there, "eth0", "198.18.5.2/24")
        spaces.address(there, "eth0", "198.18.5.3/24")
        d = str(tmp_path)
        pool = SimulatedPool(["xs1", "xs2"], "xs1",
                             [{"name": "web", "host": "xs1", "restart": "restart"}],
                             unix_dir=d).start()
        with open(os.path.join(d, "password"), "w") as handle:
            handle.write(pool.credentials[1])
        os.chmod(os.path.join(d, "password"), 0o600)
        with open(os.path.join(d, "inventory"), "w") as handle:
            handle.write("INSTALLATION_UUID='%s'\n" % pool.host_uuid("xs1"))
        with open(os.path.join(d, "pool.conf"), "w") as handle:
            handle.write("master")
        xl = FakeXl(d, pool, "xs1")
        watchdog = SimulatedWatchdog(os.path.join(d, "watchdog"), RecordingReset())
        config = os.path.join(d, "halizard.toml")
        with open(config, "w") as handle:
            handle.write(textwrap.dedent("""\
                peer_addresses = ["198.18.5.2"]
                gateway_addresses = ["198.18.5.3"]
                watchdog_device = "%(d)s/watchdog"
                xapi_url = "unix:%(d)s/xs1.xapi"
                xapi_peer_url = "http://{address}:%(port)d/"
                xapi_password_file = "%(d)s/password"
                interfaces = ["eth0"]
                state_file = "%(d)s/state.json"
                inventory_file = "%(d)s/inventory"
                pool_conf_file = "%(d)s/pool.conf"
                xl_command = "%(d)s/xl"
                host_reset = "record:%(d)s/reset"
                system_state_command = "echo running"
                """ % {"d": d, "port": pool.port}))
        yield {"ns": here, "spaces": spaces, "pool": pool, "watchdog": watchdog,
               "config": config, "dir": d}
    finally:
        if xl is not None:
            xl.stopped.set()
        if watchdog is not None:
            watchdog.stop()
        if pool is not None:
            pool.stop()
        spaces.close()


def start_daemon(ns: str, config: str, log_path: str) -> "subprocess.Popen[bytes]":
    log = open(log_path, "wb")
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "halizard",
                             "daemon", "--config", config], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def read(path: str) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()


@needs_root
def test_the_daemon_guards_its_guests_and_self_fences_when_its_link_goes(host):
    log = os.path.join(host["dir"], "daemon.log")
    daemon = start_daemon(host["ns"], host["config"], log)
    watchdog, pool = host["watchdog"], host["pool"]
    try:
        wait_for(lambda: watchdog.kinds().count("feed") >= 3, 20,
                 "the daemon arms the watchdog and feeds it")
        assert "normal: " in read(log)
        assert len(pool.domains("xs1")) == 1
        cut = time.monotonic()
        host["spaces"].ip(host["ns"], "link", "set", "eth0", "down")
        # lease_timeout 4 s, then the self-fence within watchdog_timeout 5 s.
        wait_for(lambda: not pool.domains("xs1"), 15, "the isolated master's guests stop")
        stopped = time.monotonic() - cut
        wait_for(lambda: "magic" in watchdog.kinds(), 10,
                 "the watchdog is disarmed once no guest runs")
        text = read(log)
        assert "carrier lost on eth0: probing now" in text
        assert "isolated: " in text and "self-fenced: self-fence complete" in text
        assert "shut down hard through xapi" in text
        assert not watchdog.fired and not os.path.exists(os.path.join(host["dir"], "reset"))
        assert stopped < 4.0 + 5.0 + 1.0, stopped
        daemon.terminate()
        assert daemon.wait(15) == 0
        assert "stopped" in read(log)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(5)


@needs_root
def test_a_bad_configuration_stops_the_daemon_at_once_naming_the_key(host):
    config = host["config"]
    text = read(config).replace('interfaces = ["eth0"]', 'interfaces = ["eth0 eth1"]')
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
