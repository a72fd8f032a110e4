"""systemd integration: readiness, status and keep-alives (sd_notify), and journal records.

systemd-python is used when it is installed; it is a C extension that dom0 may not have, so
both halves have a pure-Python fallback: sd_notify is one datagram to ``$NOTIFY_SOCKET`` (a
leading '@' names an abstract socket), and a journal record becomes one line on stderr, which
systemd puts in the journal anyway (with the priority read from a ``<N>`` prefix), just without
the structured fields.

systemd's WatchdogSec only restarts a hung daemon; it is not fencing (that is /dev/watchdog,
halizard.runtime.watchdog). Send WATCHDOG=1 from the main loop, never from a helper thread, or
a stuck loop goes unnoticed.
"""
import importlib
import os
import re
import socket
import sys
from typing import Any, Dict, Optional, TextIO


def _optional(name: str) -> Any:
    """A module of systemd-python, or None. (By name: the repository's own ``systemd/`` folder
    of unit files would otherwise pass for the package with type checkers.)"""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_sd_daemon = _optional("systemd.daemon")
_sd_journal = _optional("systemd.journal")

HAVE_BINDING = _sd_daemon is not None and _sd_journal is not None
FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # journald drops other names
RESERVED_FIELDS = ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER")  # set by record() itself
MAX_STATUS = 1024  # characters of STATUS text
JOURNAL_SOCKET = "/run/systemd/journal/socket"
NOTIFY_TIMEOUT = 1.0  # s; a datagram to a local socket never waits this long

# syslog priorities, as journald uses them
ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7


def one_line(text: str, limit: int = MAX_STATUS) -> str:
    """Text that cannot break the newline-separated notify protocol."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _address(path: str) -> str:
    return "\0" + path[1:] if path.startswith("@") else path


class Notifier:
    """sd_notify for the daemon. Every call returns whether systemd was told; none raises
    (systemd restarts a daemon whose keep-alives stop arriving, which is the right outcome)."""

    def __init__(self, use_binding: Optional[bool] = None) -> None:
        self.use_binding = HAVE_BINDING if use_binding is None else use_binding
        if self.use_binding and not HAVE_BINDING:
            raise RuntimeError("systemd-python is not installed")

    @property
    def enabled(self) -> bool:
        """Started by systemd with Type=notify (NOTIFY_SOCKET set)."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, *assignments: str) -> bool:
        for a in assignments:
            if "\n" in a or "=" not in a:
                raise ValueError("not a notify assignment: %r" % (a,))
        if not self.enabled:
            return False
        state = "\n".join(assignments)
        if self.use_binding:
            try:
                return bool(_sd_daemon.notify(state))
            except OSError:
                return False
        return self._send(state)

    def _send(self, state: str) -> bool:
        path = os.environ.get("NOTIFY_SOCKET", "")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.settimeout(NOTIFY_TIMEOUT)
            sock.sendto(state.encode("utf-8"), _address(path))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def ready(self, status: str = "") -> bool:
        if status:
            return self.notify("READY=1", "STATUS=" + one_line(status))
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """STATUS: what ``systemctl status`` shows, e.g. ``normal: peer and gateway visible``."""
        return self.notify("STATUS=" + one_line(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        if status:
            return self.notify("STOPPING=1", "STATUS=" + one_line(status))
        return self.notify("STOPPING=1")


def watchdog_interval(environ: Optional[Dict[str, str]] = None) -> Optional[float]:
    """How often to send WATCHDOG=1 (half of WatchdogSec, as sd_watchdog_enabled(3) advises),
    or None when systemd watches no keep-alives of this process."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


def _seconds(value: Optional[float]) -> str:
    return "never" if value is None else "%.3f" % value


class Journal:
    """Journal records with structured fields (``journalctl HALIZARD_MODE=survivor``), or plain
    lines on ``stream`` without the binding."""

    def __init__(self, identifier: str = "halizard", use_binding: Optional[bool] = None,
                 stream: Optional[TextIO] = None, priority_prefix: Optional[bool] = None
                 ) -> None:
        self.identifier = identifier
        if use_binding is None:  # the binding drops records silently where journald is not
            use_binding = HAVE_BINDING and os.path.exists(JOURNAL_SOCKET)
        self.use_binding = use_binding
        if self.use_binding and not HAVE_BINDING:
            raise RuntimeError("systemd-python is not installed")
        self.stream = stream
        self.priority_prefix = priority_prefix

    def record(self, message: str, priority: int = INFO, **fields: Any) -> None:
        for name in fields:
            if not FIELD_NAME.match(name) or name in RESERVED_FIELDS:
                raise ValueError("journal field names are upper case letters, digits and _, "
                                 "and not %s: %r" % ("/".join(RESERVED_FIELDS), name))
        values = {name: str(value) for name, value in fields.items()}
        if self.use_binding:
            try:
                _sd_journal.send(message, PRIORITY=str(priority),
                                 SYSLOG_IDENTIFIER=self.identifier, **values)
                return
            except OSError:
                pass  # no journald: the line below still says it
        self._line(message, priority, values)

    def decision(self, mode: str, reason: str, peer_seen_ago: Optional[float],
                 gateway_seen_ago: Optional[float], priority: int = INFO, **fields: Any) -> None:
        """One cycle's decision: the line the simulator's trace shows, with its numbers."""
        self.record("%s: %s" % (mode, reason), priority, HALIZARD_MODE=mode,
                    HALIZARD_REASON=reason, HALIZARD_PEER_SEEN_AGO=_seconds(peer_seen_ago),
                    HALIZARD_GATEWAY_SEEN_AGO=_seconds(gateway_seen_ago), **fields)

    def _line(self, message: str, priority: int, values: Dict[str, str]) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        prefix = self.priority_prefix
        if prefix is None:  # under systemd (not a terminal), journald reads "<6>" as INFO
            isatty = getattr(stream, "isatty", None)
            prefix = not (isatty is not None and isatty())
        extra = " ".join("%s=%s" % (k, one_line(v, 200)) for k, v in sorted(values.items())
                         if k != "HALIZARD_REASON")
        text = one_line(message, 4096) + (" [%s]" % extra if extra else "")
        try:
            stream.write("%s%s\n" % ("<%d>" % priority if prefix else "", text))
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone (closed, a full pipe): nothing left to tell
