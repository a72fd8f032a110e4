"""The watchdog: the /dev/watchdog protocol, a simulated device for tests and the lab, host reset.

Why a hardware (or hypervisor, xen_wdt) watchdog: it keeps counting while dom0 is frozen or the
daemon hangs, so an isolated host is reset within lease + watchdog timeout whatever its software
does (ARCHITECTURE.md section 6, assumption 3). The protocol, as the Linux watchdog core has it:
opening the device starts it (and counts as a feed), WDIOC_SETTIMEOUT sets the timeout and
answers the one the driver chose, any write feeds, and a close right after writing 'V' (the
magic close) stops it. A close without it leaves the timer running: a daemon that crashes is
reset unless its successor opens and feeds the device in time.

``Watchdog`` speaks the protocol to a character device, or to the simulated device: a FIFO whose
reader (``SimulatedWatchdog``) keeps the same rules and, when not fed in time, calls a
``HostReset`` instead of resetting anything. A FIFO cannot take an ioctl, so the timeout goes to
it as the line ``T<seconds>`` (no 'V' in it). Host reset itself is behind ``HostReset``:
``SysrqReset`` is the real one, ``RecordingReset`` the one for tests and the lab.
"""
import abc
import errno
import fcntl
import os
import select
import stat
import struct
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from halizard.effects import STALE_WATCHDOG, WatchdogControl, WatchdogResult, is_stale

WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)
FEED = b"\0"  # any byte but 'V' feeds
MAGIC_CLOSE = b"V"
MAX_TIMEOUT = 3600  # s; the drivers' limits are lower still (xen_wdt, softdog: 65535)


class WatchdogError(RuntimeError):
    """The device refused: absent, busy, not a watchdog, or a timeout other than asked."""


# --- host reset ---------------------------------------------------------------------------------


class HostReset(abc.ABC):
    """The last rung of the self-fence ladder: reset this host now."""

    @abc.abstractmethod
    def reset(self, reason: str) -> None:
        """Reset the host. The real one does not return."""


class SysrqReset(HostReset):
    """An immediate reboot through the magic SysRq trigger: no sync, no unmount, since a disk
    that hangs must not hold up the fence. Writing the trigger is allowed to root whatever
    kernel.sysrq says. ``path`` is for tests; nothing but a daemon may use the default."""

    def __init__(self, path: str = "/proc/sysrq-trigger") -> None:
        self.path = path

    def reset(self, reason: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"b")
        finally:
            os.close(fd)


class RecordingReset(HostReset):
    """Records resets instead of performing them (tests, the lab). ``on_reset`` is what the lab
    does instead: stop the host's processes."""

    def __init__(self, on_reset: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_reset = on_reset
        self.clock = clock
        self.resets: List[Tuple[float, str]] = []  # (monotonic, reason)
        self._done = threading.Event()

    def reset(self, reason: str) -> None:
        self.resets.append((self.clock(), reason))
        self._done.set()
        if self.on_reset is not None:
            self.on_reset(reason)

    def wait(self, timeout: float) -> bool:
        """True once a reset was recorded, False if none came within ``timeout`` seconds."""
        return self._done.wait(timeout)


# --- the driver -----------------------------------------------------------------------------------


class Watchdog:
    """The daemon's side of a watchdog device (``path``: /dev/watchdog, or a simulated device's
    FIFO). ``ioctl`` is for tests of the character-device path."""

    def __init__(self, path: str, ioctl: Callable[..., Any] = fcntl.ioctl,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not path:
            raise WatchdogError("no watchdog device path")
        self.path = path
        self.ioctl = ioctl
        self.clock = clock
        self.timeout: Optional[int] = None
        self._fd: Optional[int] = None
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def perform(self, effect: WatchdogControl) -> WatchdogResult:
        """One WatchdogControl effect: refused when stale (every op, as in the simulator),
        otherwise performed; never raises."""
        with self._lock:
            if is_stale(effect, self.clock()):
                return STALE_WATCHDOG
            try:
                if effect.op == "arm":
                    self._arm(effect.timeout_s)
                elif effect.op == "feed":
                    if self._fd is None:
                        return WatchdogResult(False, "not armed")
                    self._write(FEED)
                elif effect.op == "disarm":
                    self._disarm()
                else:
                    return WatchdogResult(False, "unknown watchdog op %r" % (effect.op,))
            except (OSError, WatchdogError) as exc:
                return WatchdogResult(False, str(exc))
            return WatchdogResult(True)

    def arm(self, timeout_s: int) -> None:
        with self._lock:
            self._arm(timeout_s)

    def feed(self) -> None:
        with self._lock:
            if self._fd is None:
                raise WatchdogError("%s: not armed" % self.path)
            self._write(FEED)

    def disarm(self) -> None:
        with self._lock:
            self._disarm()

    def close(self) -> None:
        """Close *without* the magic close: the device keeps counting (a daemon that exits
        without disarming must be reset unless a successor takes over in time)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _arm(self, timeout_s: int) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or \
                not 1 <= timeout_s <= MAX_TIMEOUT:
            raise WatchdogError("watchdog timeout must be 1 to %d whole seconds, not %r"
                                % (MAX_TIMEOUT, timeout_s))
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # a FIFO nobody reads
                    raise WatchdogError("%s: no simulated watchdog is listening"
                                        % self.path) from None
                if exc.errno == errno.EBUSY:
                    raise WatchdogError("%s: busy (another process holds the watchdog)"
                                        % self.path) from None
                raise
        try:
            self._set_timeout(timeout_s)
        except (OSError, WatchdogError):
            self._disarm()  # a running watchdog whose timeout is not ours: stop it
            raise
        self.timeout = timeout_s

    def _set_timeout(self, timeout_s: int) -> None:
        assert self._fd is not None
        mode = os.fstat(self._fd).st_mode
        if stat.S_ISFIFO(mode):
            self._write(b"T%d\n" % timeout_s)
            return
        if not stat.S_ISCHR(mode):
            raise WatchdogError("%s is not a watchdog device" % self.path)
        buf = bytearray(struct.pack("i", timeout_s))
        self.ioctl(self._fd, WDIOC_SETTIMEOUT, buf, True)
        chosen = struct.unpack("i", bytes(buf))[0]
        if chosen != timeout_s:
            # Longer would reset later than the timing proof assumes; shorter could reset a
            # healthy host between two feeds.
            raise WatchdogError("%s set a %d s timeout for the %d s asked" % (
                self.path, chosen, timeout_s))

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        written = os.write(self._fd, data)
        if written != len(data):
            raise WatchdogError("%s: short write" % self.path)

    def _disarm(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, MAGIC_CLOSE)
        finally:
            os.close(fd)


# --- the simulated device --------------------------------------------------------------------------


class WatchdogEvent(NamedTuple):
    at: float  # monotonic
    kind: str  # "timeout" | "feed" | "magic" | "close" | "fired"
    detail: str = ""


class SimulatedWatchdog:
    """A watchdog device for tests and the lab: a FIFO at ``path`` read by a thread that keeps
    the Linux watchdog core's rules (any byte feeds, 'V' then close stops, a plain close keeps
    counting) and calls ``reset`` when a deadline passes. It never resets the machine."""

    def __init__(self, path: str, reset: HostReset, clock: Callable[[], float] = time.monotonic,
                 tick: float = 0.05) -> None:
        self.path = path
        self.reset = reset
        self.clock = clock
        self.tick = tick
        self.events: List[WatchdogEvent] = []
        self.armed = False
        self.fired = False
        self.timeout = 0
        self.deadline: Optional[float] = None
        self._expect_close = False
        self._pending = b""
        self._changed = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="simulated-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        os.unlink(self.path)

    def kinds(self) -> List[str]:
        with self._changed:
            return [e.kind for e in self.events]

    def wait_for(self, predicate: Callable[["SimulatedWatchdog"], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (checked after every event), up to ``timeout``."""
        end = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def check(self) -> None:
        """Fire if the deadline has passed (the thread calls this on every wake)."""
        with self._changed:
            if self.armed and not self.fired and self.deadline is not None \
                    and self.clock() > self.deadline:
                self.fired = True
                self.armed = False
                self._record("fired", "not fed for %d s" % self.timeout)
                fire = True
            else:
                fire = False
        if fire:
            self.reset.reset("watchdog: not fed within %d s" % self.timeout)

    def _record(self, kind: str, detail: str = "") -> None:
        self.events.append(WatchdogEvent(self.clock(), kind, detail))
        self._changed.notify_all()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        poller.register(self._fd, select.POLLIN)
        while True:
            self.check()
            ready = dict(poller.poll(self.tick * 1000.0))
            if self._stop_r in ready:
                return
            flags = ready.get(self._fd, 0)
            if flags & select.POLLIN:
                data = os.read(self._fd, 4096)
                if data:
                    self._consume(data)
                    continue
            if flags & (select.POLLHUP | select.POLLIN):
                self._closed()
                # A fresh read end (no HUP until its next writer leaves), opened before the old
                # one is closed: a writer arriving meanwhile always finds a reader.
                fresh = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                poller.unregister(self._fd)
                os.close(self._fd)
                self._fd = fresh
                poller.register(self._fd, select.POLLIN)

    def _consume(self, data: bytes) -> None:
        with self._changed:
            data = self._pending + data
            self._pending = b""
            i = 0
            while i < len(data):
                byte = data[i:i + 1]
                if byte == b"T":
                    end = data.find(b"\n", i)
                    if end < 0:
                        self._pending = data[i:]  # the rest of the line comes next read
                        break
                    seconds = int(data[i + 1:end])
                    self.timeout = seconds
                    self._ping("timeout", str(seconds))
                    i = end + 1
                    continue
                self._expect_close = byte == MAGIC_CLOSE
                self._ping("magic" if self._expect_close else "feed")
                i += 1

    def _ping(self, kind: str, detail: str = "") -> None:
        if self.fired:
            return  # the host is being reset: nothing written now counts
        if kind == "timeout":
            self.armed = True  # opening the device started it; the timeout line follows
        if self.armed:
            self.deadline = self.clock() + self.timeout
        self._record(kind, detail)

    def _closed(self) -> None:
        with self._changed:
            if self._expect_close and self.armed:
                self.armed = False
                self.deadline = None
                self._record("close", "magic close: stopped")
            else:
                self._record("close", "closed without magic close: still counting"
                             if self.armed else "closed")
            self._expect_close = False
