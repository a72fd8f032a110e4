"""The timestamped domain start/stop log, and the two judgements made from it.

Why a log of the world's own events: the lab's ground truth of where a VM runs is the simulated
world (the "hypervisors"), not any xapi database or any daemon's belief, just as in the
simulator. Every domain start and stop is written the moment the world makes it, one line each::

    2025-06-01T12:00:03.141593Z<TAB>xs2<TAB>vm-1<TAB>start<TAB>xapi
    2025-06-01T12:00:01.000000Z<TAB>xs1<TAB>vm-1<TAB>stop<TAB>crash

The wall time is computed from the world's virtual time by one fixed offset taken when the log
is opened (the pool runs at speed 1), so lines are in event order and never reordered by a wall
clock step. Lines are in the order the events happened (the world runs one event at a time).

``overlaps`` is the safety invariant (no VM on two hosts at any instant); ``all_back_at`` is
liveness (every protected VM running exactly once, and from when).
"""
import calendar
import threading
import time
from typing import IO, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set

NS = 1_000_000_000
_FORMAT = "%Y-%m-%dT%H:%M:%S"


def format_wall(wall: float) -> str:
    whole = int(wall)
    micro = int(round((wall - whole) * 1e6))
    if micro == 1000000:
        whole, micro = whole + 1, 0
    return "%s.%06dZ" % (time.strftime(_FORMAT, time.gmtime(whole)), micro)


def parse_wall(text: str) -> float:
    if not text.endswith("Z") or "." not in text:
        raise ValueError("not a lab timestamp: %r" % text)
    head, frac = text[:-1].split(".")
    return calendar.timegm(time.strptime(head, _FORMAT)) + int(frac) / 1e6


class DomainEvent(NamedTuple):
    wall: float  # seconds since the epoch
    host: str
    vm: str
    event: str  # "start" | "stop"
    cause: str

    def line(self) -> str:
        return "\t".join((format_wall(self.wall), self.host, self.vm, self.event, self.cause))


def parse_line(line: str) -> DomainEvent:
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5 or parts[3] not in ("start", "stop"):
        raise ValueError("not a domain log line: %r" % line)
    return DomainEvent(parse_wall(parts[0]), parts[1], parts[2], parts[3], parts[4])


def read(path: str) -> List[DomainEvent]:
    with open(path) as handle:
        return [parse_line(line) for line in handle if line.strip()]


class DomainLog:
    """A world observer (simulations.world.world.World.notify) that writes the log.

    ``wall_of(t_ns)`` maps virtual time to wall time; ``names`` maps VM UUIDs to names."""

    def __init__(self, out: IO[str], wall_of: Callable[[int], float],
                 names: Dict[str, str]) -> None:
        self.out = out
        self.wall_of = wall_of
        self.names = names
        self._lock = threading.Lock()

    def write(self, event: DomainEvent) -> None:
        with self._lock:
            self.out.write(event.line() + "\n")
            self.out.flush()

    def domain_started(self, t: int, host: str, vm: str, others: List[str],
                       migrated: bool) -> None:
        self.write(DomainEvent(self.wall_of(t), host, self.names.get(vm, vm), "start",
                               "migrated" if migrated else "xapi"))

    def domain_stopped(self, t: int, host: str, vm: str, cause: str) -> None:
        self.write(DomainEvent(self.wall_of(t), host, self.names.get(vm, vm), "stop", cause))

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)
        return _ignore  # the world's other events (power, faults) go elsewhere


def _ignore(*args: object) -> None:
    pass


# --- judgements -----------------------------------------------------------------------------------


class Overlap(NamedTuple):
    vm: str
    hosts: Sequence[str]
    wall: float  # when the second copy started

    def __str__(self) -> str:
        return "%s ran on %s at once from %s" % (self.vm, " and ".join(self.hosts),
                                                 format_wall(self.wall))


def overlaps(events: Iterable[DomainEvent]) -> List[Overlap]:
    """Every instant a VM started on a host while it still ran on another (the safety
    invariant I1 of the simulator, judged on the lab's ground truth)."""
    running: Dict[str, Set[str]] = {}
    found: List[Overlap] = []
    for e in events:
        hosts = running.setdefault(e.vm, set())
        if e.event == "start":
            if hosts - {e.host}:
                found.append(Overlap(e.vm, sorted(hosts | {e.host}), e.wall))
            hosts.add(e.host)
        else:
            hosts.discard(e.host)
    return found


def placement(events: Iterable[DomainEvent], until: Optional[float] = None
              ) -> Dict[str, Set[str]]:
    """vm -> hosts it runs on after the events up to ``until`` (all of them by default)."""
    running: Dict[str, Set[str]] = {}
    for e in events:
        if until is not None and e.wall > until:
            break
        hosts = running.setdefault(e.vm, set())
        if e.event == "start":
            hosts.add(e.host)
        else:
            hosts.discard(e.host)
    return running


def all_back_at(events: Iterable[DomainEvent], vms: Iterable[str], since: float
                ) -> Optional[float]:
    """From when every VM of ``vms`` runs on exactly one host without a break until the end
    of the log (never earlier than ``since``); None if they do not all run at the end."""
    wanted = sorted(vms)
    running: Dict[str, Set[str]] = {vm: set() for vm in wanted}
    back: Optional[float] = None
    for e in events:
        if e.vm not in running:
            continue
        if e.event == "start":
            running[e.vm].add(e.host)
        else:
            running[e.vm].discard(e.host)
        if all(len(running[vm]) == 1 for vm in wanted):
            if back is None:
                back = e.wall
        else:
            back = None
    return None if back is None else max(back, since)
