"""The Probe effect on a real network: ICMP echo rounds over raw sockets, and the passive heartbeat.

Why raw sockets and not icmplib: a round must also *hear* the peer's own echo requests (the
passive heartbeat), read the beacon from their payload, and stamp every arrival with the
kernel's receive time (SO_TIMESTAMPNS). icmplib sends and matches its own replies only, reads
with ``recvfrom`` (no ancillary data, so no kernel timestamp) and discards requests. One raw
socket per address family does all of it: it sends our requests, receives the replies and, like
every raw ICMP socket, a copy of each echo request the host receives (the kernel still answers
those itself). No dependency to pin twice, either (icmplib 3.x is broken on Python 3.6).

A round sends ``echoes`` requests ``spacing`` apart to every address at once and ends when every
address has answered them all, or its window has passed (the last request plus ``timeout``, or
``peer_wait`` for peer addresses). Only IP literals are probed: a name is a configuration error,
never resolved (DNS is the first thing to hang in a partition).

Times: the round's bounds are read on the monotonic clock. Each arrival carries the kernel's
wall-clock timestamp; it becomes monotonic with the offset read just after the packet was
dequeued (the wall clock first, then the monotonic one, so the offset errs late). If the offset
shrank since the previous read, the wall clock stepped forward and any packet still queued may
carry a timestamp from before the step: those, up to the next empty queue, get the read time,
which is later than their arrival. No stamp is ever later than its read time. So ``last_at`` is
never earlier than the true arrival (effects.PathReport).
"""
import errno
import ipaddress
import random
import select
import socket
import struct
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from halizard.core.beacon import PREFIX
from halizard.effects import PathReport, Probe, ProbeReport

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Python 3.6 lacks the constant
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # root may exceed net.core.rmem_max
SOL_RAW = 255
ICMP_FILTER = 1  # SOL_RAW option of IPv4 raw ICMP sockets: bit n set drops type n
ICMP6_FILTER = 1  # IPPROTO_ICMPV6 option: the same, as a 256-bit map
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
RECEIVE_BUFFER = 1 << 20  # packets queue here between rounds (a stalled daemon reads them later)
MAX_BEACON = 200  # bytes; a beacon is one short line
STEP_TOLERANCE = 1e-4  # s: offset changes below this are float noise, not a clock step
_TIMESPEC = struct.Struct("@ll")
_ICMP = struct.Struct("!BBHHH")


class ProbeError(ValueError):
    """A probe that must not be sent: a name instead of an IP literal, or bad parameters."""


def ip_literal(text: str) -> Tuple[int, str]:
    """(4 or 6, canonical text) of an IP literal; ProbeError for anything else."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProbeError("%r is not an IP address: names are never resolved (configure the "
                         "address itself)" % (text,)) from None
    if address.version == 6 and address.is_link_local:
        raise ProbeError("%s is link-local: it needs an interface; configure a global "
                         "address" % text)
    return address.version, str(address)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request; the kernel fills in the ICMPv6 checksum itself (it covers the
    pseudo-header, which a raw socket does not see)."""
    header = _ICMP.pack(ECHO_REQUEST[version], 0, 0, ident, seq)
    if version == 6:
        return header + payload
    return _ICMP.pack(ECHO_REQUEST[4], 0, checksum(header + payload), ident, seq) + payload


class ArrivalClock:
    """Converts kernel receive timestamps (wall clock) to the monotonic clock, never early."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.monotonic = monotonic
        self.wall = wall
        self._offset = self._read()[1]
        self._stepped = False

    def _read(self) -> Tuple[float, float]:
        w = self.wall()
        m = self.monotonic()  # after the wall clock: the offset errs late, never early
        return m, m - w

    def stamp(self, kernel_wall: Optional[float]) -> float:
        """The arrival of a packet just dequeued, on the monotonic clock."""
        now, offset = self._read()
        if offset < self._offset - STEP_TOLERANCE:
            self._stepped = True  # the wall clock jumped forward: queued stamps are suspect
        self._offset = offset
        if kernel_wall is None or self._stepped:
            return now
        return min(kernel_wall + offset, now)

    def queue_empty(self) -> None:
        """Every packet queued before a step has been read: stamps are good again."""
        self._stepped = False


class Packet(NamedTuple):
    version: int
    source: str
    icmp_type: int
    ident: int
    seq: int
    payload: bytes
    at: float  # arrival, monotonic


def parse(version: int, data: bytes, source: str, at: float) -> Optional[Packet]:
    """An echo request or reply from what a raw socket read, or None for anything else."""
    if version == 4:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4:]
        if checksum(data) != 0:
            return None
    if len(data) < _ICMP.size:
        return None
    icmp_type, code, _, ident, seq = _ICMP.unpack_from(data)
    if code != 0 or icmp_type not in (ECHO_REQUEST[version], ECHO_REPLY[version]):
        return None
    return Packet(version, source, icmp_type, ident, seq, data[_ICMP.size:], at)


def beacon_text(payload: bytes) -> Optional[str]:
    """The beacon carried by a request, or None when the payload is not one of ours."""
    if len(payload) > MAX_BEACON or not payload.startswith(PREFIX.encode("ascii")):
        return None
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _open(version: int) -> socket.socket:
    if version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        keep = (1 << ECHO_REQUEST[4]) | (1 << ECHO_REPLY[4])
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~keep & 0xFFFFFFFF))
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        blocked = [0xFFFFFFFF] * 8
        for kind in (ECHO_REQUEST[6], ECHO_REPLY[6]):
            blocked[kind >> 5] &= ~(1 << (kind & 31)) & 0xFFFFFFFF
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Target:
    """One address probed this round."""

    __slots__ = ("address", "version", "window_end", "replies", "seen", "last_at")

    def __init__(self, address: str, version: int, window_end: float) -> None:
        self.address = address
        self.version = version
        self.window_end = window_end
        self.replies = 0
        self.seen: Set[int] = set()
        self.last_at: Optional[float] = None


class Prober:
    """Performs Probe effects. Open it at daemon start: it listens for the peer's requests from
    then on (``heard_since`` of the first round). Needs CAP_NET_RAW. The sockets belong to the
    network namespace of the thread that creates the Prober."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, ident: Optional[int] = None) -> None:
        self.monotonic = monotonic
        # Read before the sockets open: no request can have been heard before it.
        self.heard_since = monotonic()
        self.arrivals = ArrivalClock(monotonic, wall)
        self.send_errors = 0  # requests the kernel refused (no route, a blackhole): lost
        self.ident = random.SystemRandom().randrange(1, 0x10000) if ident is None else ident
        self._seq = random.SystemRandom().randrange(0x10000)
        self._lock = threading.Lock()
        self._sockets: Dict[int, socket.socket] = {4: _open(4)}
        try:
            self._sockets[6] = _open(6)
        except OSError as exc:  # IPv6 disabled on this host: only IPv4 addresses can be probed
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                self.close()
                raise
        self._peers: Dict[Tuple[int, str], int] = {}
        self._heard: Dict[int, float] = {}  # peer path -> latest request arrival
        self._beacon: Optional[Tuple[float, str]] = None

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets = {}

    def round(self, probe: Probe) -> ProbeReport:
        """One probe round, by its deadline. ProbeError for an address that is not an IP
        literal (or not of a family this host has) or parameters that make no sense."""
        with self._lock:
            return self._round(probe)

    def _round(self, probe: Probe) -> ProbeReport:
        peers = [self._check(a) for a in probe.peer_addresses]
        gateways = [self._check(a) for a in probe.gateway_addresses]
        if probe.echoes < 1 or probe.spacing < 0 or probe.timeout <= 0 or probe.peer_wait <= 0:
            raise ProbeError("echoes >= 1, spacing >= 0, timeout and peer_wait > 0: got %r"
                             % (probe,))
        try:
            payload = probe.beacon.encode("ascii")
        except UnicodeEncodeError:
            raise ProbeError("beacon is not ASCII: %r" % (probe.beacon,)) from None
        if len(payload) > MAX_BEACON:
            raise ProbeError("beacon longer than %d bytes" % MAX_BEACON)
        self._peers = {key: path for path, key in enumerate(peers)}

        started = self.monotonic()
        last_send = started + (probe.echoes - 1) * probe.spacing
        peer_targets = [_Target(a, v, last_send + probe.peer_wait) for v, a in peers]
        gateway_targets = [_Target(a, v, last_send + probe.timeout) for v, a in gateways]
        targets = peer_targets + gateway_targets
        by_source: Dict[Tuple[int, str], List[_Target]] = {}
        for t in targets:
            by_source.setdefault((t.version, t.address), []).append(t)
        first_seq = self._seq
        self._seq = (self._seq + probe.echoes) & 0xFFFF
        seqs = {(first_seq + i) & 0xFFFF for i in range(probe.echoes)}

        sent = 0
        poller = select.poll()
        for sock in self._sockets.values():
            poller.register(sock.fileno(), select.POLLIN)
        while True:
            now = self.monotonic()
            while sent < probe.echoes and now >= started + sent * probe.spacing:
                seq = (first_seq + sent) & 0xFFFF
                for t in targets:
                    self._send(t, seq, payload)
                sent += 1
            open_ends = [t.window_end for t in targets
                         if t.replies < probe.echoes and now < t.window_end]
            if sent == probe.echoes and not open_ends:
                break
            wake = min(open_ends) if open_ends else last_send
            if sent < probe.echoes:
                wake = min(wake, started + sent * probe.spacing)
            if poller.poll(max(0.0, wake - now) * 1000.0):
                self._drain(by_source, seqs)
        finished = self.monotonic()  # before the last read: what it reads arrived by now
        self._drain(by_source, seqs)

        heard, self._heard = self._heard, {}
        beacon = self._beacon[1] if self._beacon is not None else None
        self._beacon = None
        peer_reports = []
        for path, t in enumerate(peer_targets):
            stamps = [s for s in (t.last_at, heard.get(path)) if s is not None]
            peer_reports.append(PathReport(t.address, t.replies, path in heard,
                                           max(stamps) if stamps else None))
        report = ProbeReport(
            started=started,
            finished=finished,
            heard_since=self.heard_since,
            peer=tuple(peer_reports),
            gateways=tuple(PathReport(t.address, t.replies, False, t.last_at)
                           for t in gateway_targets),
            peer_beacon=beacon,
        )
        self.heard_since = finished
        return report

    def _check(self, address: str) -> Tuple[int, str]:
        version, text = ip_literal(address)
        if version not in self._sockets:
            raise ProbeError("%s: this host cannot send ICMPv%d (IPv6 is disabled)"
                             % (address, version))
        return version, text

    def _send(self, target: _Target, seq: int, payload: bytes) -> None:
        packet = echo_request(target.version, self.ident, seq, payload)
        try:
            self._sockets[target.version].sendto(packet, (target.address, 0))
        except OSError:
            self.send_errors += 1  # no route, a full queue, a blackhole: lost, as on the wire

    def _drain(self, by_source: Dict[Tuple[int, str], List[_Target]], seqs: Set[int]) -> None:
        """Read every queued packet; count replies to this round and requests from the peer."""
        for version, sock in self._sockets.items():
            while True:
                try:
                    data, ancillary, _, source = sock.recvmsg(2048, 64)
                except (BlockingIOError, InterruptedError):
                    break
                kernel_wall = None
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and \
                            len(value) >= _TIMESPEC.size:
                        sec, nsec = _TIMESPEC.unpack_from(value)
                        kernel_wall = sec + nsec / 1e9
                at = self.arrivals.stamp(kernel_wall)
                packet = parse(version, data, source[0], at)
                if packet is not None:
                    self._take(packet, by_source, seqs)
        self.arrivals.queue_empty()

    def _take(self, packet: Packet, by_source: Dict[Tuple[int, str], List[_Target]],
              seqs: Set[int]) -> None:
        key = (packet.version, _canonical(packet.source))
        if packet.icmp_type == ECHO_REPLY[packet.version]:
            if packet.ident != self.ident or packet.seq not in seqs:
                return  # another prober's, or a late reply to an earlier round
            for t in by_source.get(key, ()):
                if packet.seq not in t.seen:
                    t.seen.add(packet.seq)
                    t.replies += 1
                    if t.last_at is None or packet.at > t.last_at:
                        t.last_at = packet.at
            return
        path = self._peers.get(key)
        if path is None:
            return  # a request from someone else than the peer
        if packet.at > self._heard.get(path, float("-inf")):
            self._heard[path] = packet.at
        text = beacon_text(packet.payload)
        if text is not None and (self._beacon is None or packet.at >= self._beacon[0]):
            self._beacon = (packet.at, text)


def _canonical(source: str) -> str:
    """Addresses as ip_literal writes them (recvmsg gives IPv6 in its own spelling)."""
    try:
        return str(ipaddress.ip_address(source.split("%", 1)[0]))
    except ValueError:
        return source

