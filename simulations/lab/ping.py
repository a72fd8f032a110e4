"""One ICMP echo from inside a lab namespace: the lab's own check that a path works.

The machine may have no ``ping`` binary; the lab's tests need only "does this address answer
from that namespace within a deadline". The socket is opened by a thread that entered the
namespace (simulations.lab.netns), so the packet never leaves the lab.
"""
import os
import select
import socket
import struct
import time

from simulations.lab.netns import NamespaceWorker

ICMP_ECHO = 8
ICMP_ECHOREPLY = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack("!%dH" % (len(data) // 2), data)))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(address: str, timeout: float) -> bool:
    ident = os.getpid() & 0xFFFF
    payload = b"halizard-lab"
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(header + payload), ident, 1) + payload
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock.sendto(packet, (address, 0))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                return False
            data, source = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, got_ident, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if source[0] == address and kind == ICMP_ECHOREPLY and got_ident == ident:
                return True
    except OSError:
        return False  # no route (the interface is down)
    finally:
        sock.close()


def ping(worker: NamespaceWorker, address: str, timeout: float = 1.0) -> bool:
    """Whether ``address`` answers one echo from ``worker``'s namespace within ``timeout``."""
    return worker.call(lambda: _echo(address, timeout), timeout + 5.0)


def reachable_within(worker: NamespaceWorker, address: str, within: float) -> bool:
    """Whether ``address`` answers an echo before ``within`` seconds pass, asking again every
    half second (after a port comes back the neighbour entry may still say unreachable)."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        began = time.monotonic()
        if ping(worker, address, min(0.5, remaining)):
            return True
        time.sleep(max(0.0, 0.5 - (time.monotonic() - began)))
