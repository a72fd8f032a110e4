"""Virtual time: an event heap keyed by (integer nanoseconds, sequence number).

Nothing in the simulator reads a real clock. Events at the same instant run in the order they
were scheduled, so a run is a pure function of its inputs and seed.
"""
import heapq
from typing import Any, Callable, List, Optional, Tuple

NS = 1_000_000_000


def ns(seconds: float) -> int:
    """Seconds to integer nanoseconds (rounded to the nearest nanosecond)."""
    return int(round(seconds * NS))


def seconds(t_ns: int) -> float:
    return t_ns / NS


class Timer:
    """A scheduled call that can be cancelled before it runs."""

    __slots__ = ("t", "fn", "args", "cancelled")

    def __init__(self, t: int, fn: Callable[..., None], args: Tuple[Any, ...]) -> None:
        self.t = t
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Cancel, and let go of the callback: a callback that refers back to its own timer
        (a deadline that cancels itself) would otherwise be a reference cycle, left for the
        cyclic garbage collector, whose passes cost a simulation several percent."""
        self.cancelled = True
        self.fn = _cancelled
        self.args = ()


def _cancelled() -> None:
    pass


class Scheduler:
    """``t`` is the current time (ns); ``now()`` returns it too (the Clock protocol)."""

    def __init__(self) -> None:
        self.t = 0
        self._seq = 0
        self._heap: List[Tuple[int, int, Timer]] = []
        self.events = 0

    def now(self) -> int:
        return self.t

    def at(self, t: int, fn: Callable[..., None], *args: Any) -> Timer:
        if t < self.t:
            t = self.t
        timer = Timer(t, fn, args)
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, timer))
        return timer

    def after(self, dt: int, fn: Callable[..., None], *args: Any) -> Timer:
        return self.at(self.t + dt, fn, *args)

    def next_time(self) -> Optional[int]:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_until(self, t_end: int, after_event: Optional[Callable[[], None]] = None) -> None:
        """Run every event up to and including ``t_end``; ``after_event`` runs after each."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t_end:
            t, _, timer = pop(heap)
            if timer.cancelled:
                continue
            self.t = t
            self.events += 1
            timer.fn(*timer.args)
            if after_event is not None:
                after_event()
        if self.t < t_end:
            self.t = t_end
