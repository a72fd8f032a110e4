"""Carrier watch: netlink link events (pyroute2) on the interfaces that carry the heartbeat.

A lost carrier is a hint, never evidence: it makes the executor start a probe round at once
instead of at the next cycle, and only probes decide. On a XenServer host the management
bridge is an Open vSwitch port whose kernel carrier says nothing about the cable, so the
configured interfaces are the physical NICs or bond members.

The watch is one netlink socket (pyroute2's ``IPRSocket``: plain, select-compatible and the same
in pyroute2 0.7 on Python 3.6 and 0.9 on current Python) bound to the link multicast group. The
state is read once by a dump after binding, so no event falls between the two; a receive buffer
overflow (ENOBUFS: a dom0 with many VIFs coming and going) is answered with a fresh dump, and
whatever differs from what we knew is reported as a change. The socket belongs to the network
namespace of the thread that opens the watch.
"""
import errno
import select
import socket
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from pyroute2 import IPRSocket
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

IFNAMSIZ = 16  # the kernel's limit, the terminating NUL included
RECEIVE_BUFFER = 1 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class LinkError(RuntimeError):
    """The watch cannot start: an interface that does not exist, or netlink did not answer."""


class CarrierChange(NamedTuple):
    interface: str
    carrier: Optional[bool]  # None: the interface is gone
    at: float  # monotonic, when the event was read

    @property
    def lost(self) -> bool:
        return self.carrier is not True


def check_interface_names(interfaces: Sequence[str]) -> Tuple[str, ...]:
    names = tuple(interfaces)
    if not names:
        raise LinkError("no interface to watch")
    for name in names:
        if (not isinstance(name, str) or not name or len(name) >= IFNAMSIZ or "/" in name
                or any(c.isspace() for c in name)):
            raise LinkError("%r is not an interface name" % (name,))
    if len(set(names)) != len(names):
        raise LinkError("an interface is listed twice: %s" % ", ".join(names))
    return names


class CarrierWatch:
    """The carrier of ``interfaces``, kept current from netlink events."""

    def __init__(self, interfaces: Sequence[str], clock: Callable[[], float] = time.monotonic,
                 dump_timeout: float = 2.0) -> None:
        self.interfaces = check_interface_names(interfaces)
        self.clock = clock
        self._carrier: Dict[str, Optional[bool]] = {}
        self._dumping = False
        self._redump = False  # events were lost during a dump: dump again when it ends
        self.resyncs = 0  # receive buffer overflows answered with a fresh dump
        self._sock = IPRSocket()
        try:
            self._sock.bind(RTMGRP_LINK)
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except OSError:
                pass  # not root: the kernel's default buffer (an overflow resyncs)
            self._dump()
            deadline = clock() + dump_timeout
            while self._dumping:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise LinkError("netlink did not list the interfaces within %.1f s"
                                    % dump_timeout)
                self._read(remaining)
            missing = [n for n in self.interfaces if self._carrier.get(n) is None]
            if missing:
                raise LinkError("no such interface: %s" % ", ".join(missing))
        except Exception:
            self._sock.close()
            raise

    @property
    def carrier(self) -> Dict[str, Optional[bool]]:
        """Each watched interface: True (carrier), False (none), None (the interface is gone)."""
        return {name: self._carrier.get(name) for name in self.interfaces}

    def fileno(self) -> int:
        """For an executor that selects on several sources at once (then call ``poll``)."""
        return int(self._sock.fileno())

    def poll(self) -> Tuple[CarrierChange, ...]:
        """The changes already queued, without waiting."""
        return self._read(0.0)

    def wait(self, deadline: float) -> Tuple[CarrierChange, ...]:
        """Block until a watched interface's carrier changes or ``deadline`` (monotonic) passes;
        the changes, or () at the deadline."""
        while True:
            changes = self._read(0.0)
            if changes:
                return changes
            remaining = deadline - self.clock()
            if remaining <= 0:
                return ()
            changes = self._read(remaining)
            if changes:
                return changes

    def close(self) -> None:
        self._sock.close()

    def _dump(self) -> None:
        self._sock.put(ifinfmsg(), msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        self._dumping = True

    def _read(self, timeout: float) -> Tuple[CarrierChange, ...]:
        """Wait up to ``timeout`` for the socket to be readable, then read all that is queued."""
        changes: List[CarrierChange] = []
        wait = timeout
        while True:
            readable, _, _ = select.select([self._sock], [], [], max(0.0, wait))
            if not readable:
                return tuple(changes)
            wait = 0.0
            try:
                messages = self._sock.get()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.resyncs += 1  # events were lost: read the whole state again
                if self._dumping:
                    self._redump = True
                else:
                    self._dump()
                continue
            now = self.clock()
            for msg in messages:
                change = self._apply(msg, now)
                if change is not None:
                    changes.append(change)

    def _apply(self, msg: ifinfmsg, now: float) -> Optional[CarrierChange]:
        event = msg.get("event")
        if event == "NLMSG_DONE":
            self._dumping = False
            if self._redump:
                self._redump = False
                self._dump()
            return None
        if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
            return None
        name = msg.get_attr("IFLA_IFNAME")
        if name not in self.interfaces:
            return None
        if event == "RTM_DELLINK":
            carrier: Optional[bool] = None
        else:
            raw = msg.get_attr("IFLA_CARRIER")
            carrier = bool(raw) if raw is not None else msg.get_attr("IFLA_OPERSTATE") == "UP"
        known = name in self._carrier
        before = self._carrier.get(name)
        self._carrier[name] = carrier
        if not known or before == carrier:
            return None  # the first sight (the initial dump), or a change of something else
        return CarrierChange(name, carrier, now)
