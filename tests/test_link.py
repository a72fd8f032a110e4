"""The carrier watch (halizard.runtime.link) on a veth pair in a namespace of the test's own."""
import socket
import subprocess
import time

import pytest

from halizard.runtime.link import CarrierWatch, LinkError, check_interface_names
from tests.netns import in_netns, needs_root

pytestmark = [pytest.mark.runtime, needs_root]


@pytest.fixture
def link(netns):
    """(namespaces, the namespace, a watch on nic0 whose far end is far0)."""
    ns = netns.add("link")
    netns.veth(ns, "nic0", ns, "far0")
    netns.ip(ns, "link", "add", "spare0", "type", "veth", "peer", "name", "spare1")  # left down
    watch = in_netns(ns, lambda: CarrierWatch(["nic0", "spare0"]))
    try:
        yield netns, ns, watch
    finally:
        watch.close()


def changes_until(watch, wanted, within):
    """Every change read until ``wanted`` (interface, carrier) shows up, or the deadline."""
    deadline = time.monotonic() + within
    seen = []
    while time.monotonic() < deadline:
        seen.extend(watch.wait(deadline))
        if any((c.interface, c.carrier) == wanted for c in seen):
            break
    return seen


def test_the_initial_state_comes_from_a_dump(link):
    _, _, watch = link
    # An interface that was never brought up has no carrier.
    assert watch.carrier == {"nic0": True, "spare0": False}
    assert watch.poll() == ()


def test_losing_and_regaining_the_far_end_is_seen_by_the_deadline(link):
    netns, ns, watch = link
    began = time.monotonic()
    netns.ip(ns, "link", "set", "far0", "down")
    seen = changes_until(watch, ("nic0", False), 2.0)
    lost = [c for c in seen if c.interface == "nic0"]
    assert [c.carrier for c in lost] == [False] and lost[0].lost
    assert began <= lost[0].at < began + 1.0
    assert watch.carrier["nic0"] is False

    netns.ip(ns, "link", "set", "far0", "up")
    seen = changes_until(watch, ("nic0", True), 2.0)
    assert [c.carrier for c in seen if c.interface == "nic0"] == [True]
    assert not seen[-1].lost and watch.carrier["nic0"] is True


def test_a_quiet_wait_ends_at_its_deadline_and_other_link_news_does_not_wake_it(link):
    netns, ns, watch = link
    netns.ip(ns, "link", "set", "nic0", "mtu", "1400")  # a link event, but not the carrier
    netns.veth(ns, "other0", ns, "other1")  # interfaces not watched
    deadline = time.monotonic() + 0.3
    assert watch.wait(deadline) == ()
    assert deadline <= time.monotonic() < deadline + 0.2


def test_a_deleted_interface_is_reported_gone(link):
    netns, ns, watch = link
    netns.ip(ns, "link", "del", "far0")  # takes nic0 with it
    seen = changes_until(watch, ("nic0", None), 2.0)
    assert ("nic0", None) in [(c.interface, c.carrier) for c in seen]
    assert watch.carrier["nic0"] is None


def test_an_overflowing_buffer_is_answered_with_a_fresh_dump(link):
    netns, ns, watch = link
    sock = socket.socket(fileno=watch.fileno())  # the watch's own socket: shrink its buffer
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    finally:
        sock.detach()
    batch = "".join("link set far0 %s\nlink set spare0 mtu %d\n" % (state, 1000 + i)
                    for i, state in enumerate(["down", "up"] * 40))
    done = subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch + "link set far0 down\n",
                          universal_newlines=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=10)
    assert done.returncode == 0, done.stderr
    seen = changes_until(watch, ("nic0", False), 2.0)
    assert watch.resyncs >= 1  # the buffer did overflow
    assert watch.carrier == {"nic0": False, "spare0": False}
    assert seen and (seen[-1].interface, seen[-1].carrier) == ("nic0", False)


def test_unknown_and_malformed_interfaces_are_refused(netns):
    ns = netns.add("nolink")
    with pytest.raises(LinkError, match="no such interface: eth9"):
        in_netns(ns, lambda: CarrierWatch(["lo", "eth9"]))
    for bad in ([], ["a" * 16], ["eth0", "eth0"], ["a/b"], ["eth 0"]):
        with pytest.raises(LinkError):
            check_interface_names(bad)
