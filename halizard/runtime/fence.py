"""Fence agents in the ClusterLabs convention: power the peer off, and confirm it is off.

The agent (fence_ipmilan, fence_idrac, ...) gets ``key=value`` lines on stdin, the configured
options first and ``action=`` last (the last value wins, so no option can change the action);
options never go on the command line, where ``ps`` shows them. Exit codes: 0 is success, and
for ``status`` 0 means on, 2 off and 1 that the device cannot be reached; a timeout is a
failure, never a success (research/anchors.md section 4).

StartFence runs the agent in the background and answers at once; the outcome arrives through
CollectFenceResults as "off", "on", "failed", "timeout" or "unreachable". The agent runs in a
process group of its own, killed whole when it outlives its timeout (or when it exits and leaves
children behind). Option values never reach a log: messages name the option keys only, and the
agent's own output is logged with every secret-looking option's value blotted out.
"""
import logging
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from halizard.core.config import FenceAgent
from halizard.effects import STALE, FenceOutcome, FenceStarted, StartFence, is_stale

log = logging.getLogger("halizard.fence")

ACTIONS = ("off", "on", "reboot", "status", "monitor", "metadata")
BACKGROUND_ACTIONS = ("off", "on", "reboot", "status")  # those with a FenceOutcome result
SECRET_KEY = re.compile(r"pass|secret|community|token|key|auth|cred", re.IGNORECASE)
OPTION_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
OUTPUT_TAIL = 2048  # bytes of the agent's output kept for the log
REAP_TIMEOUT = 5.0  # s to wait for a killed agent to be gone


class FenceConfigError(ValueError):
    """Agent options that cannot be passed on (named by key; the value is never shown)."""


class FenceRun(NamedTuple):
    """One finished agent run. ``output`` is its stdout and stderr, tail only, secrets blotted."""

    action: str
    exit_code: Optional[int]  # None: timed out, or could not be started
    timed_out: bool
    duration: float
    output: str
    error: str = ""  # why it could not be started


def check_options(agent: FenceAgent) -> None:
    for key, value in agent.options:
        if not OPTION_KEY.match(key):
            raise FenceConfigError("fence option %r: not a key an agent reads" % (key,))
        if key == "action":
            raise FenceConfigError("fence option 'action': halizard chooses the action")
        if any(c in value for c in "\n\r\0"):
            raise FenceConfigError("fence option %r: a line break in its value" % (key,))
    try:
        argv = shlex.split(agent.command)
    except ValueError as exc:
        raise FenceConfigError("fence agent command: %s" % exc) from None
    if not argv:
        raise FenceConfigError("fence agent command is empty")


def agent_input(agent: FenceAgent, action: str) -> bytes:
    """What the agent reads on stdin: the options, then the action."""
    lines = ["%s=%s" % (key, value) for key, value in agent.options]
    lines.append("action=%s" % action)
    return ("\n".join(lines) + "\n").encode("utf-8")


def redact(text: str, agent: FenceAgent) -> str:
    """``text`` with the value of every secret-looking option replaced by ***."""
    for key, value in agent.options:
        if value and SECRET_KEY.search(key):
            text = text.replace(value, "***")
    return text


def run_agent(agent: FenceAgent, action: str, timeout: float) -> FenceRun:
    """Run the agent once and wait for it, at most ``timeout`` seconds. Never raises for what
    the agent does; FenceConfigError for options that cannot be passed on."""
    if action not in ACTIONS:
        raise FenceConfigError("fence action must be one of %s, not %r"
                               % (", ".join(ACTIONS), action))
    if timeout <= 0:
        raise FenceConfigError("fence timeout must be positive, not %r" % (timeout,))
    check_options(agent)
    began = time.monotonic()
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(shlex.split(agent.command), stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT, close_fds=True,
                                    start_new_session=True)
        except OSError as exc:
            return FenceRun(action, None, False, time.monotonic() - began, "",
                            "cannot run %s: %s" % (agent.command, exc.strerror or exc))
        timed_out = False
        try:
            try:
                assert proc.stdin is not None
                proc.stdin.write(agent_input(agent, action))  # far below a pipe's buffer
                proc.stdin.close()
            except OSError:
                pass  # it exited without reading: its exit code tells
            timed_out = not _exited(proc.pid, began + timeout)
        finally:
            # The agent is not reaped yet (a zombie at most), so its group id cannot have been
            # reused: kill the group, for the timeout or for children it left behind.
            _kill_group(proc.pid)
            try:
                proc.wait(REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("fence agent %s (pid %d) survived SIGKILL", agent.command, proc.pid)
        duration = time.monotonic() - began
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        tail = out.read().decode("utf-8", "replace")
    output = redact("".join(c if c.isprintable() or c == "\n" else "?" for c in tail), agent)
    return FenceRun(action, None if timed_out else proc.returncode, timed_out, duration, output)


def _exited(pid: int, deadline: float) -> bool:
    """Wait until child ``pid`` has exited, without reaping it, or until ``deadline``
    (monotonic). Polls like subprocess.Popen.wait does: there is no waitable timeout."""
    delay = 0.0005
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def result_of(run: FenceRun) -> str:
    """The FenceOutcome result of a run of off, on, reboot or status."""
    if run.timed_out:
        return "timeout"
    if run.exit_code is None:
        return "failed"
    if run.action == "status":
        return {0: "on", 1: "unreachable", 2: "off"}.get(run.exit_code, "failed")
    if run.exit_code != 0:
        return "failed"
    return "on" if run.action == "on" else "off"  # reboot: success means the off half did


class FenceRunner:
    """Performs StartFence and CollectFenceResults with one configured agent."""

    def __init__(self, agent: FenceAgent, clock: Callable[[], float] = time.monotonic) -> None:
        check_options(agent)
        self.agent = agent
        self.clock = clock
        self._jobs = 0
        self._running: Dict[int, threading.Thread] = {}
        self._done: List[FenceOutcome] = []
        self._lock = threading.Condition()

    def start(self, effect: StartFence) -> Union[FenceStarted, str]:
        """The job, at once; STALE (the simulator's answer) when the decision is out of date."""
        if is_stale(effect, self.clock()):
            return STALE
        if effect.action not in BACKGROUND_ACTIONS:
            raise FenceConfigError("StartFence action must be one of %s, not %r"
                                   % (", ".join(BACKGROUND_ACTIONS), effect.action))
        with self._lock:
            self._jobs += 1
            job = self._jobs
            thread = threading.Thread(target=self._run, args=(job, effect),
                                      name="fence-%d" % job, daemon=True)
            self._running[job] = thread
        log.info("fence job %d: %s %s (options: %s)", job, self.agent.command, effect.action,
                 ", ".join(k for k, _ in self.agent.options) or "none")
        thread.start()
        return FenceStarted(job)

    def collect(self) -> Tuple[FenceOutcome, ...]:
        """Outcomes of the jobs that finished since the last collection."""
        with self._lock:
            done, self._done = tuple(self._done), []
        return done

    def wait(self, timeout: float) -> bool:
        """True once no job is running, False if some still is after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._running:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def _run(self, job: int, effect: StartFence) -> None:
        try:
            run = run_agent(self.agent, effect.action, effect.timeout)
            result = result_of(run)
            log.log(logging.INFO if result in ("off", "on") else logging.WARNING,
                    "fence job %d: %s %s -> %s (exit %s after %.1f s)%s%s", job,
                    self.agent.command, effect.action, result,
                    "none" if run.exit_code is None else run.exit_code, run.duration,
                    ": " + run.error if run.error else "",
                    "; output: " + run.output.strip() if run.output.strip() else "")
        except Exception:  # noqa: BLE001 - a job must always end in an outcome
            log.exception("fence job %d failed", job)
            result = "failed"
        with self._lock:
            self._done.append(FenceOutcome(job, effect.action, result))
            del self._running[job]
            self._lock.notify_all()
