"""The real prober (halizard.runtime.probe) on a real network: two namespaces joined by a veth,
this host in one, the peer (its kernel, and its daemon's own prober) in the other."""
import threading

import pytest

from halizard.effects import Probe
from halizard.runtime.probe import (
    ArrivalClock,
    ProbeError,
    Prober,
    checksum,
    echo_request,
    ip_literal,
    parse,
)
from tests.netns import in_netns, needs_root

pytestmark = [pytest.mark.runtime, needs_root]

US, PEER, SILENT = "198.18.0.1", "198.18.0.2", "198.18.0.9"
OUR_BEACON = "halizard/1 slave normal"
PEER_BEACON = "halizard/1 master survivor"


def probe(peers=(PEER,), gateways=(SILENT,), echoes=3, spacing=0.02, timeout=0.15,
          peer_wait=None, beacon=OUR_BEACON):
    return Probe(tuple(peers), tuple(gateways), echoes, spacing, timeout,
                 timeout if peer_wait is None else peer_wait, beacon)


@pytest.fixture
def hosts(netns):
    """(our namespace, the peer's), one veth between them."""
    ours, peers = netns.add("us"), netns.add("peer")
    netns.veth(ours, "hb0", peers, "hb0")
    netns.address(ours, "hb0", US + "/24")
    netns.address(peers, "hb0", PEER + "/24")
    return netns, ours, peers


@pytest.fixture
def open_prober():
    opened = []

    def make(ns, **kwargs):
        p = in_netns(ns, lambda: Prober(**kwargs))
        opened.append(p)
        return p

    yield make
    for p in opened:
        p.close()


def test_replies_from_the_peer_none_from_a_silent_address(hosts, open_prober):
    _, ours, _ = hosts
    prober = open_prober(ours)
    report = prober.round(probe())
    assert report.started <= report.finished
    (peer,), (gateway,) = report.peer, report.gateways
    assert (peer.address, peer.replies) == (PEER, 3)
    assert report.started < peer.last_at <= report.finished + 0.05
    assert not peer.heard  # the peer's daemon is not running: nothing but its kernel answers
    assert (gateway.address, gateway.replies, gateway.heard, gateway.last_at) == (
        SILENT, 0, False, None)
    # The silent address holds the round open for its whole window, and no longer.
    window = 2 * 0.02 + 0.15
    assert window <= report.finished - report.started < window + 0.1
    assert report.peer_beacon is None


def test_a_round_ends_as_soon_as_every_reply_is_in(hosts, open_prober):
    _, ours, _ = hosts
    prober = open_prober(ours)
    report = prober.round(probe(gateways=(PEER,), timeout=2.0))
    assert [p.replies for p in report.peer + report.gateways] == [3, 3]
    assert report.finished - report.started < 0.5


def test_the_peers_own_probes_are_heard_with_its_beacon(hosts, open_prober):
    _, ours, peers = hosts
    prober = open_prober(ours)
    peer_daemon = open_prober(peers)
    first = prober.round(probe())
    assert not first.peer[0].heard
    theirs = peer_daemon.round(probe(peers=(US,), gateways=(), beacon=PEER_BEACON))
    # It listened since it opened: our first round's requests reached it, with our beacon.
    assert theirs.peer[0].replies == 3 and theirs.peer[0].heard
    assert theirs.peer_beacon == OUR_BEACON

    report = prober.round(probe())
    assert report.heard_since == first.finished
    (peer,) = report.peer
    assert peer.heard and peer.replies == 3
    assert report.peer_beacon == PEER_BEACON
    # Heard means: since the previous round. The peer has not probed since.
    again = prober.round(probe())
    assert again.heard_since == report.finished
    assert not again.peer[0].heard and again.peer_beacon is None


def test_request_stamps_are_the_kernels_arrival_not_the_read(hosts, open_prober):
    netns, ours, peers = hosts
    listener = open_prober(ours)
    peer_daemon = open_prober(peers)
    # The peer's kernel stops answering, so the path's stamp is its heard requests' alone.
    netns.run_in(peers, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all")
    sent = peer_daemon.round(probe(peers=(US,), gateways=(), beacon=PEER_BEACON))
    report = listener.round(probe(gateways=(), echoes=1, peer_wait=0.02))
    (peer,) = report.peer
    assert peer.heard and peer.replies == 0 and report.peer_beacon == PEER_BEACON
    # The requests arrived during the peer's round, before this round began and read them: a
    # stamp taken when reading would be later than report.started.
    assert sent.started <= peer.last_at <= sent.finished < report.started


def test_one_way_loss_the_side_that_still_hears_counts_the_requests(hosts, open_prober):
    netns, ours, peers = hosts
    prober = open_prober(ours)
    peer_daemon = open_prober(peers)
    # Everything the peer sends to us is dropped (a blackhole route in the peer's namespace):
    # its replies and its own requests. What we send still reaches it.
    netns.ip(peers, "route", "add", "blackhole", US + "/32")
    theirs = {}

    def peer_round():
        theirs["report"] = peer_daemon.round(probe(peers=(US,), gateways=(),
                                                   beacon=PEER_BEACON, echoes=5))

    thread = threading.Thread(target=peer_round)
    thread.start()
    ours_report = prober.round(probe(gateways=(), echoes=5))
    thread.join(5)
    assert not thread.is_alive()
    second = prober.round(probe(gateways=()))  # anything of the peer's round still in flight
    for report in (ours_report, second):
        assert report.peer[0].replies == 0 and not report.peer[0].heard
        assert report.peer[0].last_at is None and report.peer_beacon is None
    late = peer_daemon.round(probe(peers=(US,), gateways=(), beacon=PEER_BEACON))
    heard = [r.peer[0] for r in (theirs["report"], late)]
    assert [h.replies for h in heard] == [0, 0]
    assert any(h.heard for h in heard)  # our requests reached it: it knows we are alive
    assert peer_daemon.send_errors > 0 and prober.send_errors == 0  # the blackhole refused
    assert (theirs["report"].peer_beacon or late.peer_beacon) == OUR_BEACON


def test_names_and_bad_parameters_are_refused(hosts, open_prober):
    _, ours, _ = hosts
    prober = open_prober(ours)
    with pytest.raises(ProbeError, match="not an IP address"):
        prober.round(probe(peers=("peer.example.org",)))
    with pytest.raises(ProbeError, match="link-local"):
        prober.round(probe(peers=("fe80::1",)))
    with pytest.raises(ProbeError, match="echoes"):
        prober.round(probe(echoes=0))
    with pytest.raises(ProbeError, match="beacon"):
        prober.round(probe(beacon="halizard/1 " + "x" * 300))
    with pytest.raises(ProbeError, match="not ASCII"):
        prober.round(probe(beacon="halizard/1 maître normal"))


def test_ipv6_loopback_replies_and_our_own_requests_heard(netns, open_prober):
    ns = netns.add("v6")
    prober = open_prober(ns)
    report = prober.round(probe(peers=("::1",), gateways=("0:0::1",), echoes=2))
    (peer,), (gateway,) = report.peer, report.gateways
    assert peer.address == gateway.address == "::1"
    assert peer.replies == gateway.replies == 2
    # On loopback our own requests arrive too: the passive path, seen from both ends.
    assert peer.heard and report.peer_beacon == OUR_BEACON


def test_ip_literals_are_canonical():
    assert ip_literal("198.18.0.1") == (4, "198.18.0.1")
    assert ip_literal("2001:DB8:0::1") == (6, "2001:db8::1")
    for bad in ("", "localhost", "198.18.0.256", "198.18.0.1/32"):
        with pytest.raises(ProbeError):
            ip_literal(bad)


def test_packets_round_trip_and_corrupt_ones_are_dropped():
    request = echo_request(4, 0x1234, 7, b"halizard/1 slave normal")
    assert checksum(request) == 0
    header = bytes([0x45]) + bytes(19)
    packet = parse(4, header + request, "198.18.0.2", 1.0)
    assert packet is not None and (packet.ident, packet.seq, packet.icmp_type) == (0x1234, 7, 8)
    assert packet.payload == b"halizard/1 slave normal"
    corrupt = bytearray(request)
    corrupt[-1] ^= 0xFF
    assert parse(4, header + bytes(corrupt), "198.18.0.2", 1.0) is None
    assert parse(4, header + request[:5], "198.18.0.2", 1.0) is None


class Clocks:
    def __init__(self, mono, wall):
        self.mono, self.wall = mono, wall


def test_arrival_stamps_are_never_early_when_the_wall_clock_steps():
    c = Clocks(100.0, 1000.0)
    stamps = ArrivalClock(lambda: c.mono, lambda: c.wall)
    # Normal: the kernel's stamp, moved onto the monotonic clock.
    c.mono, c.wall = 101.0, 1001.0
    assert stamps.stamp(1000.5) == pytest.approx(100.5)
    # The wall clock steps forward 50 s after a packet arrived (at mono 101.2): its stamp,
    # converted with the new offset, would say mono 51.2. The read time is used instead, up to
    # the next empty queue.
    c.mono, c.wall = 101.5, 1051.5
    assert stamps.stamp(1001.2) == 101.5
    c.mono, c.wall = 101.6, 1051.6
    assert stamps.stamp(1051.55) == 101.6  # still in the same drain
    stamps.queue_empty()
    c.mono, c.wall = 102.0, 1052.0
    assert stamps.stamp(1051.9) == pytest.approx(101.9)
    # A step back makes converted stamps late, never early; they never pass the read time.
    c.mono, c.wall = 103.0, 1003.0
    assert stamps.stamp(1052.9) == 103.0
    assert stamps.stamp(None) == 103.0  # no kernel stamp: the read time
