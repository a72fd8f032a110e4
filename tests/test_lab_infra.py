"""The lab's own machinery (simulations/lab), without the daemons: namespaces and teardown, the
forwarders carrying xapi across the lab network, the xl shim, the watchdog FIFO's reset, the
faults. The end-to-end tests with the daemons are in tests/test_lab.py."""
import os
import shutil
import signal
import tempfile
import time

import pytest
import XenAPI

from halizard.effects import DestroyGuests, ListGuests, WatchdogControl
from halizard.runtime.guests import XlToolstack
from halizard.runtime.transport import transport_for
from halizard.runtime.watchdog import Watchdog
from simulations.lab import netns
from simulations.lab.api import Lab, down, up
from simulations.lab.domainlog import DomainEvent, all_back_at, overlaps, parse_line
from simulations.lab.layout import Manifest
from simulations.lab.ping import ping, reachable_within
from tests.netns import in_netns, needs_root

pytestmark = [pytest.mark.runtime]


@pytest.fixture
def lab_dir():
    """A short path: the lab's Unix sockets must fit in sun_path."""
    path = tempfile.mkdtemp(prefix="hzlab-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab(lab_dir):
    with Lab(lab_dir, daemons=False) as running:
        yield running


@pytest.fixture
def worker(lab):
    """A thread inside xs1's namespace."""
    w = netns.NamespaceWorker(lab.layout.ns("xs1"))
    try:
        yield w
    finally:
        w.stop()


def lab_namespaces(prefix):
    return [n for n in netns.existing_namespaces() if n.startswith(prefix + "-")]


def machine_links():
    return sorted(line.split(":")[1].strip().split("@")[0]
                  for line in netns.run("ip", "-o", "link", "show").splitlines())


def xapi_from(lab, ns_host, address):
    """Log in to ``address``'s xapi from inside ``ns_host``'s namespace; the VM names, or the
    failure's description."""
    password = open(lab.layout.password_file).read().strip()

    def call():
        url = "http://%s:80/" % address
        session = XenAPI.Session(url, transport=transport_for(url, 3.0, 3.0))
        try:
            session.xenapi.login_with_password("root", password, "1.0", "lab-test")
        except XenAPI.Failure as failure:
            return failure.details
        try:
            return sorted(r["name_label"] for r in session.xenapi.VM.get_all_records().values()
                          if not r["is_control_domain"])
        finally:
            session.xenapi.session.logout()
    return in_netns(lab.layout.ns(ns_host), call)


# --- pure: the judgements on a domain log ---------------------------------------------------------


def events(*lines):
    return [parse_line(line.replace("|", "\t")) for line in lines]


def test_an_overlap_is_found_and_a_handover_is_not():
    handover = events("2026-01-01T00:00:01.000000Z|xs1|vm-1|stop|crash",
                      "2026-01-01T00:00:01.000000Z|xs2|vm-1|start|xapi")
    assert overlaps(handover) == []
    twice = events("2026-01-01T00:00:01.000000Z|xs1|vm-1|start|initial",
                   "2026-01-01T00:00:02.500000Z|xs2|vm-1|start|xapi",
                   "2026-01-01T00:00:03.000000Z|xs1|vm-1|stop|xl destroy")
    found = overlaps(twice)
    assert [(o.vm, list(o.hosts)) for o in found] == [("vm-1", ["xs1", "xs2"])]
    assert "2026-01-01T00:00:02.500000Z" in str(found[0])


def test_liveness_is_when_every_vm_runs_once_without_a_break():
    log = events("2026-01-01T00:00:00.000000Z|xs1|vm-1|start|initial",
                 "2026-01-01T00:00:00.000000Z|xs2|vm-2|start|initial",
                 "2026-01-01T00:00:05.000000Z|xs1|vm-1|stop|crash",
                 "2026-01-01T00:00:09.000000Z|xs2|vm-1|start|xapi")
    t0 = log[0].wall
    assert all_back_at(log, ["vm-1", "vm-2"], t0 + 4) == t0 + 9
    assert all_back_at(log[:3], ["vm-1", "vm-2"], t0 + 4) is None
    assert all_back_at(log[:2], ["vm-1", "vm-2"], t0 + 4) == t0 + 4  # nothing happened
    assert DomainEvent(t0, "xs1", "vm-1", "start", "initial").line().startswith(
        "2026-01-01T00:00:00.000000Z\txs1")


# --- the lab itself --------------------------------------------------------------------------------


@needs_root
def test_up_builds_only_namespaces_and_down_leaves_nothing(lab_dir):
    before = machine_links()
    layout = up(lab_dir, second_link=True, daemons=False)
    try:
        assert sorted(lab_namespaces(layout.prefix)) == sorted(layout.namespaces)
        assert machine_links() == before  # nothing in the machine's own namespace
        for host in ("xs1", "xs2"):
            addresses = netns.run("ip", "-n", layout.ns(host), "-o", "-4", "addr", "show")
            assert all(" 198.18." in line or " 127.0.0.1/" in line
                       for line in addresses.splitlines()), addresses
    finally:
        assert down(lab_dir) == []
    assert lab_namespaces(layout.prefix) == []
    assert Manifest.load(lab_dir).data["state"] == "down"


@needs_root
def test_down_cleans_up_after_a_killed_controller(lab_dir):
    layout = up(lab_dir, daemons=False)
    pid = Manifest.load(lab_dir).data["controller_pid"]
    os.kill(pid, signal.SIGKILL)
    assert down(lab_dir) == []
    assert lab_namespaces(layout.prefix) == []


@needs_root
def test_a_second_lab_beside_the_first_never_clashes(lab, lab_dir):
    other = tempfile.mkdtemp(prefix="hzlab-")
    try:
        with Lab(other, daemons=False) as second:
            assert second.layout.prefix != lab.layout.prefix
            assert second.status()["hosts"]["xs1"]["power"] == "on"
    finally:
        shutil.rmtree(other, ignore_errors=True)


@needs_root
def test_hosts_reach_each_other_and_the_gateway_and_a_port_down_cuts_both(lab, worker):
    assert ping(worker, "198.18.0.1") and ping(worker, "198.18.0.12")
    lab.fault("port-down", "xs1")
    assert not ping(worker, "198.18.0.1", 0.5) and not ping(worker, "198.18.0.12", 0.5)
    carrier = netns.run("ip", "-n", lab.layout.ns("xs1"), "link", "show", "eth0")
    assert "NO-CARRIER" in carrier
    assert lab.status()["partitioned"]
    lab.fault("port-up", "xs1")
    assert reachable_within(worker, "198.18.0.12", 5.0)
    assert not lab.status()["partitioned"]


@needs_root
def test_the_peer_reaches_a_hosts_xapi_only_across_the_lab_network(lab):
    assert xapi_from(lab, "xs2", "198.18.0.11") == ["vm-1", "vm-2", "vm-3", "vm-4"]
    assert xapi_from(lab, "xs1", "198.18.0.12") == ["HOST_IS_SLAVE", "198.18.0.11"]
    lab.fault("port-down", "xs2")
    with pytest.raises(OSError):  # no route while the carrier is gone: unreachable or timeout
        xapi_from(lab, "xs2", "198.18.0.11")
    lab.fault("port-up", "xs2")
    xs2 = netns.NamespaceWorker(lab.layout.ns("xs2"))
    try:
        assert reachable_within(xs2, "198.18.0.11", 5.0)
    finally:
        xs2.stop()
    assert xapi_from(lab, "xs2", "198.18.0.11")[0] == "vm-1"


@needs_root
def test_a_hung_xapi_answers_nothing_until_it_resumes(lab):
    lab.fault("xapi-hang", "xs1")
    with pytest.raises(OSError):  # socket.timeout
        xapi_from(lab, "xs2", "198.18.0.11")
    lab.fault("xapi-resume", "xs1")
    assert xapi_from(lab, "xs2", "198.18.0.11")[0] == "vm-1"


@needs_root
def test_the_xl_shim_lists_and_destroys_through_the_daemons_own_toolstack(lab):
    import shlex

    from halizard.toml import load_file

    # The configured argv prefix, behind one program name for XlToolstack.
    argv = shlex.split(load_file(lab.layout.config_file("xs2"))["xl_command"])
    wrapper = os.path.join(lab.layout.dir, "xl-xs2")
    with open(wrapper, "w") as handle:
        handle.write("#!/bin/sh\nexec %s \"$@\"\n" % " ".join(shlex.quote(a) for a in argv))
    os.chmod(wrapper, 0o755)
    toolstack = XlToolstack(wrapper)
    far = time.monotonic() + 60
    listed = in_netns(lab.layout.ns("xs2"), lambda: toolstack.list_guests(ListGuests(5.0)))
    uuids = set(listed.uuids)
    assert listed.ok and len(uuids) == 2
    remaining = in_netns(lab.layout.ns("xs2"),
                         lambda: toolstack.destroy_guests(DestroyGuests(far, 5.0)))
    assert remaining.ok and remaining.uuids == ()
    assert lab.status()["hosts"]["xs2"]["domains"] == []
    stops = [e for e in lab.domain_log() if e.event == "stop"]
    assert sorted((e.host, e.cause) for e in stops) == [("xs2", "xl destroy")] * 2


@needs_root
def test_an_unfed_watchdog_resets_the_host_and_it_boots_again(lab):
    device = Watchdog(lab.layout.host_file("xs1", "watchdog"))
    assert device.perform(WatchdogControl("arm", 1, time.monotonic() + 5)).ok
    status = lab.wait_until(lambda s: s["hosts"]["xs1"]["resets"], 5, "a watchdog reset")
    device.close()
    assert status["hosts"]["xs1"]["resets"][0][1] == "watchdog: watchdog: not fed within 1 s"
    assert [(e.host, e.cause) for e in lab.domain_log() if e.event == "stop"] == \
        [("xs1", "watchdog")] * 2
    lab.wait_until(lambda s: s["hosts"]["xs1"]["power"] == "on" and
                   s["hosts"]["xs1"]["state"] == "up", 30, "xs1 booted again")
    fresh = Watchdog(lab.layout.host_file("xs1", "watchdog"))  # a new device after the boot
    assert fresh.perform(WatchdogControl("arm", 5, time.monotonic() + 5)).ok
    assert fresh.perform(WatchdogControl("disarm", 0, time.monotonic() + 5)).ok


@needs_root
def test_the_daemons_recorded_reset_resets_the_host(lab):
    with open(lab.layout.host_file("xs2", "reset"), "a") as handle:
        handle.write("self-fence: xl destroy failed\n")
    status = lab.wait_until(lambda s: s["hosts"]["xs2"]["resets"], 5, "the recorded reset")
    assert status["hosts"]["xs2"]["resets"][0][1] == "daemon: self-fence: xl destroy failed"


@needs_root
def test_a_crash_kills_the_hosts_processes_and_domains_and_silences_its_address(lab, worker):
    sleeper = netns.run("sh", "-c", "ip netns exec %s sleep 300 >/dev/null 2>&1 & echo $!"
                        % lab.layout.ns("xs2")).strip()
    lab.wait_until(lambda s: netns.pids_in(lab.layout.ns("xs2")), 5, "the sleeper in xs2")
    lab.fault("crash", "xs2")
    assert netns.pids_in(lab.layout.ns("xs2")) == []
    assert not os.path.exists("/proc/%s/cmdline" % sleeper) or \
        "sleep" not in open("/proc/%s/cmdline" % sleeper).read()
    status = lab.status()
    assert status["hosts"]["xs2"]["power"] == "off" and status["hosts"]["xs2"]["domains"] == []
    assert not ping(worker, "198.18.0.12", 0.5)
    lab.fault("power-on", "xs2")
    lab.wait_until(lambda s: s["hosts"]["xs2"]["state"] == "up", 30, "xs2 booted")
    assert reachable_within(worker, "198.18.0.12", 5.0)


@needs_root
def test_the_second_link_is_a_heartbeat_path_of_its_own(lab_dir):
    with Lab(lab_dir, daemons=False, second_link=True) as lab:
        xs1 = netns.NamespaceWorker(lab.layout.ns("xs1"))
        try:
            assert ping(xs1, "198.18.1.12") and ping(xs1, "198.18.0.12")
            lab.fault("port-down", "xs1")  # eth0: the management network and the gateway
            assert ping(xs1, "198.18.1.12") and not ping(xs1, "198.18.0.12", 0.5)
            assert not ping(xs1, "198.18.0.1", 0.5)
            assert lab.status()["partitioned"]  # xapi traffic goes over eth0 only
            lab.fault("port-down", "xs1:eth1")
            assert not ping(xs1, "198.18.1.12", 0.5)
            assert lab.status()["hosts"]["xs1"]["ports"] == {"eth0": False, "eth1": False}
            lab.fault("port-up", "xs1:eth1")
            assert reachable_within(xs1, "198.18.1.12", 5.0)
        finally:
            xs1.stop()


@needs_root
def test_a_fault_for_a_while_is_undone_by_the_controller(lab, worker):
    lab.fault("gateway-down", "gw", duration=1.0)
    assert not lab.status()["gateway_up"]
    lab.wait_until(lambda s: s["gateway_up"], 5, "the gateway back after 1 s")
    assert reachable_within(worker, "198.18.0.1", 5.0)
    with pytest.raises(Exception, match="cannot take --for"):
        lab.fault("shutdown", "xs1", duration=1.0)
