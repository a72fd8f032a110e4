"""Bringing a lab up and down, and the Python face the tests and the benchmark use.

    with Lab(tmp_dir, timings="short", vms=4) as lab:
        lab.wait_until(lambda s: lab.steady(s), 60, "both daemons normal")
        at = lab.fault("crash", "xs1")
        lab.wait_until(lambda s: lab.protected_running(s), lab.liveness_bound, "VMs back")
        assert not overlaps(lab.domain_log())

`up` builds the network (recording every namespace in the manifest before creating it), then
starts the controller in the lab's ``ctl`` namespace as a daemon of its own session and waits,
with a deadline, until it answers. `down` asks the controller to stop, kills it if it does not,
kills whatever is left in the lab's namespaces and deletes them; it works from the manifest
alone, so it also cleans up after a crashed controller or a killed `up`.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from halizard.core.config import Config
from simulations.lab import netns
from simulations.lab.config import REPO, check_paths, core_config, liveness_bound
from simulations.lab.control import ControlError, request
from simulations.lab.domainlog import DomainEvent, read
from simulations.lab.layout import (
    HOSTS,
    Layout,
    Manifest,
    new_prefix,
    read_manifest,
    write_manifest,
)

DEFAULT_DIR = "/tmp/halizard-lab"
START_TIMEOUT = 30.0  # s for the controller to answer after `up`
STOP_TIMEOUT = 15.0  # s for the controller to exit after `stop`
Status = Dict[str, Any]


class LabTimeout(AssertionError):
    """A condition the lab waited for did not come by its deadline (the lab's state then is in
    the message)."""


class LabUpError(RuntimeError):
    """The lab could not be brought up (it was torn down again)."""


# --- up and down ------------------------------------------------------------------------------------


def _prepare_dir(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    manifest = read_manifest(directory)
    if manifest is not None and manifest.get("state") != "down":
        raise LabUpError("%s: a lab is up there (prefix %s); `down` it first"
                         % (directory, manifest["prefix"]))
    if manifest is None and os.listdir(directory):
        raise LabUpError("%s is not empty and holds no lab: choose another --dir" % directory)
    for name in os.listdir(directory):  # the files of a lab that was downed
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def up(directory: str = DEFAULT_DIR, second_link: bool = False, timings: str = "short",
       vms: int = 4, daemons: bool = True, python: str = sys.executable) -> Layout:
    """Build the lab in ``directory`` and start its controller; its Layout."""
    directory = os.path.abspath(directory)
    core_config(timings, second_link)  # refuses unsafe or unknown timings before anything
    if vms < 1:
        raise LabUpError("a lab needs at least one protected VM")
    _prepare_dir(directory)
    layout = Layout(directory, new_prefix(), second_link)
    problems = check_paths(layout)
    if problems:
        raise LabUpError("; ".join(problems))
    data: Dict[str, Any] = {"prefix": layout.prefix, "second_link": second_link,
                            "namespaces": [], "state": "building", "created": time.time(),
                            "controller_pid": None,
                            "options": {"vms": vms, "timings": timings, "python": python,
                                        "daemons": daemons}}
    write_manifest(directory, data)

    def record(name: str) -> None:
        data["namespaces"].append(name)
        write_manifest(directory, data)

    try:
        netns.build(layout, record)
        _start_controller(layout, data, python)
    except BaseException as exc:
        problems = down(directory)
        raise LabUpError("lab did not come up: %s%s" % (
            exc, "" if not problems else " (and tearing down: %s)" % "; ".join(problems))) \
            from exc
    return layout


def _start_controller(layout: Layout, data: Dict[str, Any], python: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO
    with open(layout.controller_log, "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", layout.ns("ctl"), python, "-m", "simulations.lab",
             "controller", "--dir", layout.dir],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True)
    data["controller_pid"] = proc.pid
    data["state"] = "up"
    write_manifest(layout.dir, data)
    ready = layout.path("controller.ready")
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise LabUpError("the controller exited with status %s; %s:\n%s" % (
                proc.returncode, layout.controller_log, _tail(layout.controller_log)
                + _tail(layout.events_log)))
        if time.monotonic() > deadline:
            raise LabUpError("the controller did not come up within %.0f s; see %s"
                             % (START_TIMEOUT, layout.controller_log))
        time.sleep(0.05)
    request(layout.control_socket, "ping", timeout=5.0)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def down(directory: str = DEFAULT_DIR) -> List[str]:
    """Tear the lab in ``directory`` down; the problems met (empty when everything is gone)."""
    manifest = Manifest.load(directory)
    layout, data = manifest.layout, manifest.data
    pid = data.get("controller_pid")
    if pid and _alive(pid):
        try:
            request(layout.control_socket, "stop", timeout=5.0)
        except ControlError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    # Everything recorded, and anything else with the lab's prefix (a crash between the
    # creation of a namespace and its record cannot happen: the record comes first).
    names = list(data.get("namespaces", []))
    names += [n for n in netns.existing_namespaces()
              if n.startswith(layout.prefix + "-") and n not in names]
    problems = netns.teardown(names)
    data["state"] = "down" if not problems else "down-incomplete"
    write_manifest(directory, data)
    for leftover in [layout.control_socket, layout.path("controller.ready")] + [
            layout.host_file(h, s) for h in HOSTS for s in ("watchdog", "xapi")]:
        if os.path.exists(leftover):
            os.unlink(leftover)
    return problems


# --- the Python face ----------------------------------------------------------------------------------


class Lab:
    """One lab for a test or a benchmark run. ``up`` on entry, ``down`` on exit."""

    def __init__(self, directory: str, timings: str = "short", vms: int = 4,
                 second_link: bool = False, daemons: bool = True,
                 python: str = sys.executable) -> None:
        self.directory = os.path.abspath(directory)
        self.timings = timings
        self.vms = vms
        self.second_link = second_link
        self.daemons = daemons
        self.python = python
        self.layout: Optional[Layout] = None
        self.config: Config = core_config(timings, second_link).config

    def __enter__(self) -> "Lab":
        self.up()
        return self

    def __exit__(self, *exc: Any) -> None:
        problems = self.down()
        if problems and exc[0] is None:
            raise RuntimeError("lab teardown: %s" % "; ".join(problems))

    def up(self) -> None:
        self.layout = up(self.directory, self.second_link, self.timings, self.vms, self.daemons,
                         self.python)

    def down(self) -> List[str]:
        if self.layout is None:
            return []
        problems = down(self.directory)
        self.layout = None
        return problems

    # --- requests -------------------------------------------------------------------------------------

    def _layout(self) -> Layout:
        if self.layout is None:
            raise RuntimeError("the lab is not up")
        return self.layout

    def request(self, cmd: str, timeout: float = 30.0, **fields: Any) -> Dict[str, Any]:
        return request(self._layout().control_socket, cmd, timeout, **fields)

    def status(self) -> Status:
        return self.request("status")

    def fault(self, kind: str, target: str, duration: Optional[float] = None) -> float:
        """Do a fault now; its wall time (the controller's clock, as the domain log's)."""
        fields: Dict[str, Any] = {"kind": kind, "target": target}
        if duration is not None:
            fields["for"] = duration
        return float(self.request("fault", **fields)["wall"])

    def wait_until(self, predicate: Callable[[Status], bool], timeout: float, what: str,
                   interval: float = 0.2) -> Status:
        """Poll the status until ``predicate(status)``; that status, or LabTimeout after
        ``timeout`` seconds (with the last status and the daemons' last decisions)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise LabTimeout("%s: not within %.1f s; the lab then:\n%s" % (
                    what, timeout, describe(status)))
            time.sleep(interval)

    # --- what the tests read ------------------------------------------------------------------------

    def domain_log(self) -> List[DomainEvent]:
        return read(self._layout().domain_log)

    def daemon_log(self, host: str) -> str:
        return _tail(self._layout().host_file(host, "daemon.log"), 10 ** 6)

    def events_log(self) -> str:
        return _tail(self._layout().events_log, 10 ** 6)

    @property
    def liveness_bound(self) -> float:
        return liveness_bound(self.config)

    @staticmethod
    def protected_running(status: Status) -> bool:
        """Every protected VM runs on exactly one host that is up."""
        hosts = status["hosts"]
        for vm in status["protected"]:
            on = [h for h in hosts if vm in hosts[h]["domains"]]
            if len(on) != 1 or hosts[on[0]]["power"] != "on":
                return False
        return True

    @staticmethod
    def modes(status: Status) -> Dict[str, Optional[str]]:
        return {h: s["mode"] for h, s in status["hosts"].items()}

    def steady(self, status: Status) -> bool:
        """Both daemons decided `normal` and every protected VM runs once."""
        return (all(m == "normal" for m in self.modes(status).values())
                and self.protected_running(status))


def describe(status: Status) -> str:
    """The lab's state in a few lines (for `status` and for failures)."""
    lines = []
    for host, s in sorted(status["hosts"].items()):
        lines.append("%s  power %-7s lab %-8s xapi %-10s role %-6s pool.conf %-20s ports %s"
                     % (host, s["power"], s["state"], s["xapi"], s["role"], s["pool_conf"],
                        " ".join("%s:%s" % (k, "up" if v else "DOWN")
                                 for k, v in sorted(s["ports"].items()))))
        lines.append("     domains: %s" % (", ".join(s["domains"]) or "-"))
        lines.append("     daemon: %s%s, started %d times%s" % (
            "pid %s" % s["daemon_pid"] if s["daemon_pid"] else "not running",
            " (STOPPED)" if s["daemon_stalled"] else "", s["daemon_starts"],
            ", watchdog armed" if s["watchdog_armed"] else ""))
        lines.append("     last decision: %s" % (s["last_decision"] or "-"))
        for wall, reason in s["resets"]:
            lines.append("     reset at %s: %s" % (wall, reason))
    lines.append("gateway %s; management network between the hosts %s"
                 % ("up" if status["gateway_up"] else "DOWN",
                    "CUT" if status["partitioned"] else "connected"))
    return "\n".join(lines)
