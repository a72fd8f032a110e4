"""The network between the two hosts, the gateway(s) and the fence devices.

Topology, as on a typical small pool:

    heartbeat path 1 (the management network): host NIC -- switch -- host NIC; the gateways,
        the fence devices (BMCs) and xapi's own traffic use the management network too.
    heartbeat paths 2.. (optional): independent networks (a direct cable, the storage network).

A `nic.down` takes a host's management NIC down: path 1, the gateways, xapi traffic and its
reach to the peer's fence device. `link.*` faults act on host-to-host paths (all of them unless a
path is named) or on a host's link to the gateways. Loss and latency are per packet and per
direction; a structural fault (down) is separate from random loss, so the oracle can tell an
isolated host from an unlucky one.
"""
from typing import Dict, List, Optional, Tuple

from simulations.world.rng import Stream

BASE_LATENCY_NS = 200_000  # 0.2 ms on a quiet LAN


class Link:
    """One direction of one connection."""

    __slots__ = ("down", "loss", "latency", "jitter")

    def __init__(self) -> None:
        self.down = 0  # a count, so overlapping faults heal correctly
        self.loss = 0.0
        self.latency = 0
        self.jitter = 0

    def quiet(self) -> bool:
        return self.loss == 0.0 and self.latency == 0 and self.jitter == 0


class Network:
    def __init__(self, hosts: List[str], paths: int, gateways: int, streams_loss: Stream,
                 streams_latency: Stream) -> None:
        self.hosts = list(hosts)
        self.paths = paths
        self.gateway_names = ["gw%d" % (i + 1) for i in range(gateways)]
        self.nic_down: Dict[str, int] = {h: 0 for h in hosts}
        self.carrier_kept: Dict[str, bool] = {h: False for h in hosts}
        self.gw_down: Dict[str, int] = {g: 0 for g in self.gateway_names}
        self.gw_block: Dict[Tuple[str, str], int] = {}
        self.links: Dict[Tuple[str, str, int], Link] = {}
        for a in hosts:
            for b in hosts:
                if a != b:
                    for p in range(paths):
                        self.links[(a, b, p)] = Link()
            for g in self.gateway_names:
                self.links[(a, g, 0)] = Link()
                self.links[(g, a, 0)] = Link()
        self._loss = streams_loss
        self._latency = streams_latency

    # --- structure ---------------------------------------------------------------------------

    def nic_up(self, host: str, path: int) -> bool:
        return path > 0 or self.nic_down[host] == 0

    def path_up(self, a: str, b: str, path: int) -> bool:
        """Both directions of one heartbeat path work structurally (random loss aside)."""
        return (
            self.nic_up(a, path)
            and self.nic_up(b, path)
            and self.links[(a, b, path)].down == 0
            and self.links[(b, a, path)].down == 0
            and self.links[(a, b, path)].loss < 1.0
            and self.links[(b, a, path)].loss < 1.0
        )

    def gateway_up_for(self, host: str, gw: str) -> bool:
        return (
            self.nic_down[host] == 0
            and self.gw_down[gw] == 0
            and self.gw_block.get((gw, host), 0) == 0
            and self.links[(host, gw, 0)].down == 0
            and self.links[(gw, host, 0)].down == 0
            and self.links[(host, gw, 0)].loss < 1.0
            and self.links[(gw, host, 0)].loss < 1.0
        )

    def management_connected(self, a: str, b: str) -> bool:
        """TCP between the hosts over the management network (xapi traffic)."""
        return self.path_up(a, b, 0)

    # --- packets -----------------------------------------------------------------------------

    def _deliver(self, link: Link) -> Optional[int]:
        """Latency of one packet over ``link``, or None if it is lost."""
        if link.down:
            return None
        if link.quiet():
            return BASE_LATENCY_NS
        if link.loss > 0.0 and self._loss.random() < link.loss:
            return None
        delay = BASE_LATENCY_NS + link.latency
        if link.jitter:
            delay += int(link.jitter * self._latency.random())
        return delay

    def to_host(self, a: str, b: str, path: int) -> Optional[int]:
        if not (self.nic_up(a, path) and self.nic_up(b, path)):
            return None
        return self._deliver(self.links[(a, b, path)])

    def to_gateway(self, host: str, gw: str) -> Optional[int]:
        if self.nic_down[host] or self.gw_down[gw] or self.gw_block.get((gw, host), 0):
            return None
        return self._deliver(self.links[(host, gw, 0)])

    def from_gateway(self, gw: str, host: str) -> Optional[int]:
        if self.nic_down[host] or self.gw_down[gw] or self.gw_block.get((gw, host), 0):
            return None
        return self._deliver(self.links[(gw, host, 0)])

    # --- probe rounds --------------------------------------------------------------------------

    def echoes_to_host(self, a: str, b: str, path: int, count: int, spacing: int, window: int,
                       answers: bool, arrivals: Optional[List[int]]) -> Tuple[int, int, bool]:
        """``count`` echo requests from ``a`` to ``b`` on ``path``, ``spacing`` ns apart, replies
        awaited until ``window`` ns after the first. Returns (replies, latest reply in ns after
        the start, every echo answered). Request arrival times at ``b`` are appended to
        ``arrivals`` (b's prober sees them as the peer's own probes). ``answers``: b's kernel
        replies (powered and not frozen)."""
        if not (self.nic_up(a, path) and self.nic_up(b, path)):
            return 0, 0, False
        return self._echoes(self.links[(a, b, path)], self.links[(b, a, path)], count, spacing,
                            window, answers, arrivals)

    def echoes_to_gateway(self, host: str, gw: str, count: int, spacing: int, window: int
                          ) -> Tuple[int, int, bool]:
        """Like echoes_to_host, to a gateway (which never probes us itself)."""
        if self.nic_down[host] or self.gw_down[gw] or self.gw_block.get((gw, host), 0):
            return 0, 0, False
        return self._echoes(self.links[(host, gw, 0)], self.links[(gw, host, 0)], count, spacing,
                            window, True, None)

    def _echoes(self, there_link: Link, back_link: Link, count: int, spacing: int, window: int,
                answers: bool, arrivals: Optional[List[int]]) -> Tuple[int, int, bool]:
        if there_link.quiet() and back_link.quiet() and not there_link.down and not back_link.down:
            # Nothing random on a quiet link: every request arrives, every reply comes back.
            # Only the first and the last arrival matter to the receiver (it stamps the latest
            # one that arrived by the end of its own round), so only those are recorded.
            if arrivals is not None:
                arrivals.append(BASE_LATENCY_NS)
                if count > 1:
                    arrivals.append((count - 1) * spacing + BASE_LATENCY_NS)
            if not answers:
                return 0, 0, False
            return count, (count - 1) * spacing + 2 * BASE_LATENCY_NS, True
        replies = latest = 0
        complete = True
        for k in range(count):
            sent = k * spacing
            there = self._deliver(there_link)
            if there is None:
                complete = False
                continue
            if arrivals is not None:
                arrivals.append(sent + there)
            back = self._deliver(back_link) if answers else None
            if back is None or sent + there + back > window:
                complete = False
                continue
            replies += 1
            latest = max(latest, sent + there + back)
        return replies, latest, complete

    # --- fault helpers -----------------------------------------------------------------------

    def host_links(self, a: str, b: str, path: Optional[int], both: bool) -> List[Link]:
        paths = range(self.paths) if path is None else [path]
        out = [self.links[(a, b, p)] for p in paths]
        if both:
            out += [self.links[(b, a, p)] for p in paths]
        return out

    def gateway_links(self, host: str) -> List[Link]:
        out = []
        for g in self.gateway_names:
            out.append(self.links[(host, g, 0)])
            out.append(self.links[(g, host, 0)])
        return out
