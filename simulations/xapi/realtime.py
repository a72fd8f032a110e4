"""Virtual time run against the real clock, for the wire-level pool server.

The xapi model and the world are driven by a Scheduler of virtual nanoseconds, exactly as in
the simulator. Here a thread lets that virtual time follow the monotonic clock, ``speed`` times
as fast (a test may run a 10 s promotion fuse in 0.5 s with ``speed=20``), and every other
thread touches the model only through ``RealTime.run``: under one lock, with virtual time caught
up to now first. The model itself stays single-threaded and unchanged.
"""
import threading
import time
from typing import Any, Callable, List, Optional, TypeVar

from simulations.world.scheduler import NS, Scheduler

T = TypeVar("T")


class RealTime:
    def __init__(self, scheduler: Scheduler, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive, not %r" % speed)
        self.scheduler = scheduler
        self.speed = speed
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._t0 = time.monotonic()
        self._v0 = scheduler.t
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        self.after_catch_up: List[Callable[[], None]] = []

    def virtual_now(self) -> int:
        if self._thread is None:
            return self.scheduler.t
        return self._v0 + int((time.monotonic() - self._t0) * self.speed * NS)

    def real_seconds(self, virtual_ns: int) -> float:
        """How long ``virtual_ns`` of virtual time takes in real time."""
        return virtual_ns / NS / self.speed

    def start(self) -> None:
        """Virtual time runs from its current value from now on (it stands still before)."""
        with self.lock:
            self._t0 = time.monotonic()
            self._v0 = self.scheduler.t
        self._thread = threading.Thread(target=self._loop, name="xapi-sim-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` under the lock at the current virtual time; whatever it schedules
        runs when due."""
        with self._wake:
            self._catch_up()
            try:
                return fn(*args)
            finally:
                self._after()
                self._wake.notify_all()

    def _catch_up(self) -> None:
        self.scheduler.run_until(self.virtual_now())

    def _after(self) -> None:
        for hook in self.after_catch_up:
            hook()

    def _loop(self) -> None:
        with self._wake:
            while not self._stopped:
                self._catch_up()
                self._after()
                due = self.scheduler.next_time()
                if due is None:
                    self._wake.wait(1.0)
                else:
                    self._wake.wait(max(0.0, self.real_seconds(due - self.virtual_now())))
