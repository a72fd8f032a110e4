"""One lab host's halizard daemon process: started inside the host's namespace, its log kept.

The controller plays systemd for each host (Restart=always, RestartSec=1, see the controller);
this module only starts one process, timestamps what it writes to stderr into the host's log
(the lab has no journald: the daemon logs each decision as a line ``<6>mode: reason [FIELDS]``)
and remembers the newest decision line for `status` and the tests.

The process runs in its own session, so signals for the controller (a Ctrl-C) never reach it and
SIGSTOP/SIGCONT (the stall fault) reach exactly it.
"""
import os
import re
import signal
import subprocess
import threading
import time
from typing import IO, Callable, Dict, List, Optional

from halizard.core.state import Mode
from simulations.lab.domainlog import format_wall

_MODES = "|".join(re.escape(m.value) for m in Mode)
DECISION = re.compile(r"^<(?P<priority>\d)>(?P<mode>%s): (?P<reason>.*)$" % _MODES)


class DaemonProcess:
    """``argv`` run as ``ip netns exec NS argv...`` under the host's name; its output goes,
    timestamped, to ``log``."""

    def __init__(self, host: str, ns: str, argv: List[str], log: IO[str], cwd: str,
                 env: Optional[Dict[str, str]] = None,
                 on_line: Optional[Callable[[str, str], None]] = None) -> None:
        self.host = host
        self.log = log
        self.on_line = on_line
        self.started = time.time()
        self.last_decision: Optional[str] = None
        self.last_mode: Optional[str] = None
        self.decisions = 0
        self.stopped_by_signal = False  # SIGSTOP sent and not yet continued
        self._log_lock = threading.Lock()
        # Its own UTS namespace named after the host, as on a real host whose machine name
        # is its name in the pool (alerts carry it before the daemon has read the pool).
        # unshare and sh exec in turn, so the pid stays the daemon's.
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host]
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns] + named + argv, cwd=cwd,
                                     env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     close_fds=True)
        self.pid = self.proc.pid  # `ip netns exec` execs the command: this is the daemon
        self._write("lab: started pid %d: %s" % (self.pid, " ".join(argv)))
        self._reader = threading.Thread(target=self._read, name="daemon-%s" % host, daemon=True)
        self._reader.start()

    def _write(self, line: str) -> None:
        with self._log_lock:
            self.log.write("%s %s[%d] %s\n" % (format_wall(time.time()), self.host, self.pid,
                                                line))
            self.log.flush()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._write(line)
            match = DECISION.match(line)
            if match is not None:
                self.last_decision = line
                self.last_mode = match.group("mode")
                self.decisions += 1
            if self.on_line is not None:
                self.on_line(self.host, line)
        self.proc.stdout.close()

    # --- life -----------------------------------------------------------------------------------

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the daemon (only it: the xl commands it runs have sessions of their
        own); False if it had already exited."""
        if self.proc.poll() is not None:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        if sig == signal.SIGSTOP:
            self.stopped_by_signal = True
        elif sig == signal.SIGCONT:
            self.stopped_by_signal = False
        return True

    def kill(self, timeout: float = 5.0) -> Optional[int]:
        """SIGKILL and reap (a stopped process dies of SIGKILL too); the exit status."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._write("lab: pid %d survived SIGKILL for %.0f s" % (self.pid, timeout))
            return None
        self.finish(code)
        return code

    def finish(self, code: int) -> None:
        """Note the exit in the log once the reader has drained the output."""
        self._reader.join(2.0)
        self._write("lab: exited with status %d" % code if code >= 0
                    else "lab: killed by signal %d" % -code)
