"""What every alert channel shares: one error type, and a deadline that really ends a delivery.

A socket timeout bounds each blocking call, not a delivery: a server that answers one byte at a
time can hold a client for as long as it likes. ``Deadline`` sets each step's socket timeout to
the time left and, as a last resort, shuts the socket down when the time is up, which ends any
call still waiting on it.
"""
import socket
import threading
import time
from typing import Callable, Optional


class ChannelError(Exception):
    """A delivery failed; the message says which step and why (it goes to the journal)."""


class Deadline:
    """The end of one delivery (monotonic seconds). Use as a context manager; ``watch`` the
    socket once it exists."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.end = clock() + seconds
        self._sock: Optional[socket.socket] = None
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()
        self.expired = False

    def left(self, step: str) -> float:
        """Seconds left for ``step``; ChannelError when none are."""
        remaining = self.end - self.clock()
        if remaining <= 0:
            self.expired = True
            raise ChannelError("%s: no time left (deadline %.1f s)" % (step, self.seconds))
        return remaining

    def step(self, sock: Optional[socket.socket], step: str) -> None:
        """Before ``step`` on ``sock``: its timeout becomes the time left."""
        remaining = self.left(step)
        if sock is not None:
            sock.settimeout(remaining)

    def watch(self, sock: Optional[socket.socket]) -> None:
        """Shut ``sock`` down at the deadline if the delivery is still on it then."""
        if sock is None:
            return
        with self._lock:
            self._sock = sock
            if self._timer is None:
                self._timer = threading.Timer(max(0.0, self.end - self.clock()), self._expire)
                self._timer.daemon = True
                self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Deadline":
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
            self._sock = None
        if timer is not None:
            timer.cancel()

    def explain(self, step: str, exc: BaseException) -> ChannelError:
        """The error for ``exc`` raised during ``step``: a timeout says how long was allowed."""
        if self.expired or isinstance(exc, socket.timeout) or self.clock() >= self.end:
            return ChannelError("%s: timed out (deadline %.1f s)" % (step, self.seconds))
        text = str(exc) or type(exc).__name__
        return ChannelError("%s: %s" % (step, text))
