"""End-to-end: two real halizard daemons in the two-host lab (simulations/lab), real faults.

Each test starts a lab with the short timings (simulations/lab/config.py), waits until both
daemons decide `normal` with every protected VM running, does one failure, and judges the
outcome from the lab's ground truth: the timestamped domain start/stop log.

* Safety: no VM on two hosts at any instant (``overlaps``), over the whole run.
* Liveness: every protected VM running again on exactly one host within the simulator's bound
  for the configured timings (simulations.runner.default_liveness_bound: the slowest takeover
  path plus a minute), measured from the fault to the last start in the log.
* What must not happen, where nothing should: over a window longer than everything the timing
  rules could set off (takeover_delay + lease_timeout + watchdog_timeout + 2 s), no domain
  starts or stops, no host resets, the master stays.

Every wait has a deadline (Lab.wait_until); a failed test keeps its lab directory (daemon logs,
events, domain log) and names it; HALIZARD_LAB_KEEP=1 keeps every test's.
"""
import os
import re
import shutil
import sys
import tempfile
import time

import pytest

from simulations.lab.api import Lab, describe
from simulations.lab.domainlog import all_back_at, overlaps
from tests.netns import needs_root

pytestmark = [pytest.mark.lab, pytest.mark.runtime, needs_root]

STEADY = 45.0  # s for a fresh lab to reach `normal` on both hosts (daemon start, first rounds)
REJOIN = 60.0  # s for a host that comes back to be a slave in `normal` again


@pytest.fixture
def lab(request):
    directory = tempfile.mkdtemp(prefix="hzlab-")
    running = Lab(directory, timings="short", vms=4, python=sys.executable)
    running.up()
    failed = True
    try:
        running.wait_until(running.steady, STEADY, "both daemons normal, every VM running")
        yield running
        failed = getattr(getattr(request.node, "rep_call", None), "failed", True)
    finally:
        problems = running.down()
        if failed or os.environ.get("HALIZARD_LAB_KEEP"):
            sys.stderr.write("lab of %s kept in %s\n" % (request.node.name, directory))
        else:
            shutil.rmtree(directory, ignore_errors=True)
        assert problems == [], problems


def window(lab):
    """Longer than anything the timing rules could set off after a fault."""
    c = lab.config
    return c.takeover_delay + c.lease_timeout + c.watchdog_timeout + 2.0


def assert_safe(lab):
    found = overlaps(lab.domain_log())
    assert not found, "safety: %s\n%s" % ("; ".join(str(o) for o in found), lab.events_log())


def assert_back_within_bound(lab, since, on):
    """Every protected VM runs again on host ``on`` (and nowhere else) by the liveness bound
    after ``since``; the failover time, from the domain log."""
    bound = lab.liveness_bound

    def all_on(status):
        return lab.protected_running(status) and \
            sorted(status["hosts"][on]["domains"]) == sorted(status["protected"])

    lab.wait_until(all_on, max(0.0, since + bound - time.time()),
                   "protected VMs all running on %s within the liveness bound (%.0f s)"
                   % (on, bound))
    back = all_back_at(lab.domain_log(), lab.status()["protected"], since)
    assert back is not None and back - since <= bound, (back, since, bound)
    return back - since


def placement(status):
    return {h: s["domains"] for h, s in status["hosts"].items()}


def assert_nothing_happens(lab, for_seconds):
    """Watch the lab for ``for_seconds``: no domain event, no reset, the same master."""
    before = lab.status()
    log_length = len(lab.domain_log())
    end = time.monotonic() + for_seconds
    while time.monotonic() < end:
        status = lab.status()
        assert placement(status) == placement(before), describe(status)
        assert all(not s["resets"] for s in status["hosts"].values()), describe(status)
        assert status["hosts"]["xs1"]["role"] == "master", describe(status)
        assert all(s["mode"] not in ("isolated", "self-fenced", "takeover")
                   for s in status["hosts"].values()), describe(status)
        time.sleep(0.5)
    assert len(lab.domain_log()) == log_length


def master_is(host):
    def check(status):
        return (status["hosts"][host]["role"] == "master"
                and status["hosts"][host]["pool_conf"] == "master")
    return check


def rejoined_as_slave(host, master):
    def check(status):
        s = status["hosts"][host]
        return (s["power"] == "on" and s["role"] == "slave"
                and s["pool_conf"] == "slave:%s" % status["hosts"][master]["address"]
                and s["mode"] == "normal" and status["hosts"][master]["mode"] == "normal")
    return check


def stops_of(lab, host):
    return [e for e in lab.domain_log() if e.host == host and e.event == "stop"]


# --- hosts ---------------------------------------------------------------------------------------


def test_master_crash(lab):
    at = lab.fault("crash", "xs1")
    took = assert_back_within_bound(lab, at, "xs2")
    lab.wait_until(master_is("xs2"), 10, "xs2 acting as pool master")
    assert_safe(lab)
    # The survivor told its administrator: the peer lost, the takeover and how it went.
    lab.wait_until(lambda status: "alert: halizard xs2: takeover finished: " in
                   lab.daemon_log("xs2"), 20, "xs2's alert that the takeover finished")
    log = lab.daemon_log("xs2")
    assert "alert: halizard xs2: peer lost: " in log
    assert log.index("alert: halizard xs2: takeover started: ") < log.index(
        "alert: halizard xs2: takeover finished: ")
    # The old master comes back and joins the new one as a slave.
    lab.fault("power-on", "xs1")
    lab.wait_until(rejoined_as_slave("xs1", "xs2"), REJOIN, "xs1 back as a slave of xs2")
    assert_safe(lab)
    assert took > lab.config.takeover_delay


def test_slave_crash(lab):
    at = lab.fault("crash", "xs2")
    assert_back_within_bound(lab, at, "xs1")
    assert master_is("xs1")(lab.status())
    assert_safe(lab)


# --- network ---------------------------------------------------------------------------------------


def test_master_nic_down(lab):
    """The master loses its only NIC: it self-fences (its lease expires), the slave promotes
    itself and restarts everything; when the NIC returns the old master yields."""
    at = lab.fault("port-down", "xs1")
    assert_back_within_bound(lab, at, "xs2")
    lab.wait_until(master_is("xs2"), 10, "xs2 acting as pool master")
    assert {e.vm for e in stops_of(lab, "xs1")} == {"vm-1", "vm-3"}
    assert not lab.status()["hosts"]["xs1"]["resets"]  # a self-fence, not a reset
    assert "alert: halizard xs1: self-fence: no contact with peer or gateway" in \
        lab.daemon_log("xs1")
    assert_safe(lab)
    lab.fault("port-up", "xs1")
    lab.wait_until(rejoined_as_slave("xs1", "xs2"), REJOIN, "xs1 back as a slave of xs2")
    assert lab.protected_running(lab.status())
    assert_safe(lab)


def test_slave_nic_down(lab):
    at = lab.fault("port-down", "xs2")
    assert_back_within_bound(lab, at, "xs1")
    assert master_is("xs1")(lab.status())
    assert [e.cause for e in stops_of(lab, "xs2")] == ["xl destroy", "xl destroy"]
    assert_safe(lab)
    lab.fault("port-up", "xs2")
    lab.wait_until(rejoined_as_slave("xs2", "xs1"), REJOIN, "xs2 back as a slave of xs1")
    assert_safe(lab)


def test_gateway_down_with_both_hosts_fine(lab):
    lab.fault("gateway-down", "gw")
    assert_nothing_happens(lab, window(lab))
    lab.fault("gateway-up", "gw")
    assert_nothing_happens(lab, 2.0)
    assert lab.steady(lab.status())
    assert_safe(lab)


# --- the daemon and xapi ----------------------------------------------------------------------------


def test_daemon_stall_longer_than_the_takeover_delay(lab):
    """The master's daemon stops (SIGSTOP): it stops feeding the watchdog, which resets the
    host; the slave takes over. The stalled daemon never acts again (it died in the reset)."""
    at = lab.fault("stall", "xs1")
    status = lab.wait_until(lambda s: s["hosts"]["xs1"]["resets"],
                            lab.config.watchdog_timeout + 5, "the watchdog resets xs1")
    wall, reason = status["hosts"]["xs1"]["resets"][0]
    assert reason.startswith("watchdog:"), reason
    assert [e.cause for e in stops_of(lab, "xs1")] == ["watchdog", "watchdog"]
    assert_back_within_bound(lab, at, "xs2")
    lab.wait_until(master_is("xs2"), 10, "xs2 acting as pool master")
    assert_safe(lab)
    lab.wait_until(rejoined_as_slave("xs1", "xs2"), REJOIN, "xs1 rebooted, a slave of xs2")
    assert_safe(lab)


def test_a_killed_daemon_is_restarted_before_its_watchdog_fires(lab):
    """systemd's Restart=always (RestartSec=1): the new daemon opens the watchdog device,
    which is still counting, in time; nothing moves and nobody is reset."""
    first = lab.status()["hosts"]["xs1"]["daemon_pid"]
    lab.fault("daemon-kill", "xs1")
    lab.wait_until(lambda s: s["hosts"]["xs1"]["daemon_starts"] == 2
                   and s["hosts"]["xs1"]["mode"] == "normal", 10, "xs1's daemon back, normal")
    assert lab.status()["hosts"]["xs1"]["daemon_pid"] != first
    assert_nothing_happens(lab, lab.config.watchdog_timeout + 2.0)
    assert_safe(lab)


def test_xapi_hang_on_the_slave(lab):
    """The slave's xapi hangs: the slave is alive (it answers pings, its daemon runs), so
    nothing may be taken over and nobody fences."""
    lab.fault("xapi-hang", "xs2")
    assert_nothing_happens(lab, window(lab))
    lab.fault("xapi-resume", "xs2")
    assert_nothing_happens(lab, 2.0)
    assert_safe(lab)


def test_planned_master_shutdown(lab):
    """`poweroff` on the master: its daemon hands the master role over and guards the guests
    while xapi shuts them down cleanly, then exits 0; the new master restarts them."""
    at = lab.fault("shutdown", "xs1")
    took = assert_back_within_bound(lab, at, "xs2")
    status = lab.wait_until(lambda s: master_is("xs2")(s) and s["hosts"]["xs1"]["power"] == "off",
                            30, "xs2 acting as pool master, xs1 powered off")
    assert not status["hosts"]["xs1"]["resets"] and not status["hosts"]["xs2"]["resets"]
    assert re.search(r"xs1 daemon pid \d+ exited: status 0", lab.events_log()), \
        lab.daemon_log("xs1")[-3000:]
    assert {e.cause for e in stops_of(lab, "xs1")} <= {"xapi"}  # stopped cleanly, not killed
    assert_safe(lab)
    # Not "at once": the new master's xapi restarts as master while the old one powers off,
    # so the new master finds its peer gone and waits out takeover_delay of silence (the
    # simulator's H03 behaves alike). The bound still holds.
    assert took <= lab.liveness_bound
