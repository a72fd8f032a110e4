"""The lab's network: namespaces, a bridged switch, veth pairs, and the faults done to them.

Everything is made with ``ip -n NS ...`` so no interface ever exists in the machine's own
namespace: each veth is created inside the switch namespace with its peer sent straight into
the host (or gateway) namespace. Nothing is attached to a real interface and no address outside
198.18.0.0/15 is configured (``address`` refuses one).

Every command has a deadline; every namespace is recorded (``record``) before it is created,
so `down` can remove what a crashed `up` or controller left behind.
"""
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from simulations.lab.layout import GATEWAY, HOSTS, NETNS_DIR, PREFIX_LENGTH, Layout, host_address, nic

T = TypeVar("T")
COMMAND_TIMEOUT = 10.0  # s; ip answers in milliseconds
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class LabNetworkError(RuntimeError):
    """A network command failed or did not answer in time."""


def run(*argv: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """One command, checked, with a deadline."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, universal_newlines=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabNetworkError("%s: no answer within %.0f s" % (" ".join(argv), timeout)) from None
    if done.returncode != 0:
        raise LabNetworkError("%s: exit %d: %s" % (" ".join(argv), done.returncode,
                                                   done.stderr.strip()))
    return done.stdout


def existing_namespaces() -> List[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _check_address(cidr: str) -> None:
    if not (cidr.startswith("198.18.") or cidr.startswith("198.19.")):
        raise LabNetworkError("refusing address %s: the lab stays in 198.18.0.0/15" % cidr)


def add_namespace(name: str, record: Callable[[str], None]) -> None:
    record(name)  # first: a crash right after the add still leaves it findable
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")


def veth_to(switch_ns: str, port: str, other_ns: str, other_if: str) -> None:
    """A veth from the switch (``port``) to ``other_ns`` (``other_if``), both ends up."""
    run("ip", "-n", switch_ns, "link", "add", port, "type", "veth", "peer", "name", other_if,
        "netns", other_ns)
    run("ip", "-n", switch_ns, "link", "set", port, "up")
    run("ip", "-n", other_ns, "link", "set", other_if, "up")


def address(ns: str, interface: str, ip: str) -> None:
    cidr = "%s/%d" % (ip, PREFIX_LENGTH)
    _check_address(cidr)
    run("ip", "-n", ns, "addr", "add", cidr, "dev", interface)


def build(layout: Layout, record: Callable[[str], None]) -> None:
    """The whole network: switch with one bridge per heartbeat network, the gateway, the hosts,
    and the controller's namespace (loopback only)."""
    sw = layout.ns("sw")
    for role in ("sw", "gw", "ctl") + HOSTS:
        add_namespace(layout.ns(role), record)
    for network in layout.networks:
        bridge = layout.bridge(network)
        run("ip", "-n", sw, "link", "add", bridge, "type", "bridge", "forward_delay", "0",
            "stp_state", "0")
        run("ip", "-n", sw, "link", "set", bridge, "up")
        for host in HOSTS:
            port = layout.port(host, network)
            veth_to(sw, port, layout.ns(host), nic(network))
            run("ip", "-n", sw, "link", "set", port, "master", bridge)
            address(layout.ns(host), nic(network), host_address(host, network))
    port = layout.port("gw", 0)
    veth_to(sw, port, layout.ns("gw"), "eth0")
    run("ip", "-n", sw, "link", "set", port, "master", layout.bridge(0))
    address(layout.ns("gw"), "eth0", GATEWAY)


def set_link(ns: str, interface: str, up: bool) -> None:
    run("ip", "-n", ns, "link", "set", interface, "up" if up else "down")


def pids_in(ns: str) -> List[int]:
    try:
        out = run("ip", "netns", "pids", ns)
    except LabNetworkError:
        return []  # the namespace is gone
    return [int(p) for p in out.split()]


def kill_all_in(ns: str, sig: int = signal.SIGKILL, timeout: float = 5.0,
                spare: Tuple[int, ...] = ()) -> List[int]:
    """Signal every process in namespace ``ns`` (but ``spare``) and, for SIGKILL, wait until
    they are gone; the pids signalled."""
    deadline = time.monotonic() + timeout
    signalled: List[int] = []
    while True:
        pids = [p for p in pids_in(ns) if p not in spare]
        if not pids:
            return signalled
        for pid in pids:
            try:
                os.kill(pid, sig)
                if pid not in signalled:
                    signalled.append(pid)
            except ProcessLookupError:
                pass
        if sig != signal.SIGKILL:
            return signalled
        if time.monotonic() > deadline:
            raise LabNetworkError("processes %s in %s survived SIGKILL for %.0f s"
                                  % (pids, ns, timeout))
        time.sleep(0.05)


def teardown(namespaces: List[str], spare: Tuple[int, ...] = ()) -> List[str]:
    """Kill every process left in the namespaces and delete them; the problems met (empty when
    all is gone)."""
    problems: List[str] = []
    present = set(existing_namespaces())
    for name in namespaces:
        if name not in present:
            continue
        try:
            kill_all_in(name, spare=spare)
        except LabNetworkError as exc:
            problems.append(str(exc))
        try:
            run("ip", "netns", "del", name)
        except LabNetworkError as exc:
            problems.append(str(exc))
    left = sorted(set(namespaces) & set(existing_namespaces()))
    if left:
        problems.append("namespaces still present: %s" % ", ".join(left))
    return problems


# --- a thread that lives in a namespace -----------------------------------------------------------


def enter(ns: str) -> None:
    """Move the calling thread (only it) into network namespace ``ns``."""
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_fd(fd, ns)
    finally:
        os.close(fd)


def enter_fd(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace open as ``fd``. Threads it starts
    later are born there too."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns(%s): %s" % (what, os.strerror(err)))


def own_namespace_fd() -> int:
    """The process's own network namespace (its main thread's), to come back to."""
    return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class NamespaceWorker:
    """One thread that entered namespace ``ns`` and runs what it is given there, in order.

    Why: a socket belongs to the namespace of the thread that created it, for its whole life.
    The forwarders open and close their listening sockets in the host namespaces over and over
    (they follow that host's xapi), from callbacks that must not block; this thread does it."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._queue: queue.Queue[Optional[Tuple[Callable[[], Any], Dict[str, Any]]]] = \
            queue.Queue()
        started = threading.Event()
        self._error: List[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name="netns-%s" % ns, daemon=True)
        self._thread.start()
        if not started.wait(COMMAND_TIMEOUT):
            raise LabNetworkError("entering namespace %s took over %.0f s" % (ns, COMMAND_TIMEOUT))
        if self._error:
            raise self._error[0]

    def _run(self, started: threading.Event) -> None:
        try:
            enter(self.ns)
        except OSError as exc:
            self._error.append(exc)
            started.set()
            return
        started.set()
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, box = item
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                box["error"] = exc
            box["done"].set()

    def submit(self, fn: Callable[[], Any]) -> Dict[str, Any]:
        """Run ``fn`` in the namespace later; the box gets "value" or "error", then "done"."""
        box: Dict[str, Any] = {"done": threading.Event()}
        self._queue.put((fn, box))
        return box

    def call(self, fn: Callable[[], T], timeout: float = COMMAND_TIMEOUT) -> T:
        box = self.submit(fn)
        if not box["done"].wait(timeout):
            raise LabNetworkError("namespace %s: no answer within %.0f s" % (self.ns, timeout))
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(COMMAND_TIMEOUT)
