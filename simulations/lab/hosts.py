"""The lab's view of each host: the files its daemon reads, its domain ids, its power story.

Kept apart from the controller so that what the daemon sees of "its" host (pool.conf, the
inventory, the system state, the watchdog device, the domain ids ``xl`` shows) is defined in one
small place.
"""
import os
import threading
from typing import Any, Dict, List, Optional

from simulations.lab.layout import Layout

GUEST_MEMORY_MIB = 2048
GUEST_VCPUS = 2
DOM0 = {"name": "Domain-0", "domid": 0, "memory": 4096, "vcpus": 16, "state": "r-----",
        "uuid": "00000000-0000-0000-0000-000000000000"}


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Readers (the daemon) never see half a file."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def pool_conf_text(is_master: bool, master_address: Optional[str]) -> str:
    """What xapi writes to /etc/xensource/pool.conf."""
    return "master" if is_master else "slave:%s" % (master_address or "")


def inventory_text(host_uuid: str) -> str:
    """The lines of /etc/xensource-inventory the daemon may read (it needs the host UUID)."""
    return ("PRODUCT_BRAND='XCP-ng'\nPRODUCT_VERSION='8.3.0'\nINSTALLATION_UUID='%s'\n"
            "CONTROL_DOMAIN_UUID='00000000-0000-0000-0000-000000000000'\n"
            "MANAGEMENT_INTERFACE='xenbr0'\n" % host_uuid)


class HostFiles:
    """The host-local files of one lab host."""

    def __init__(self, layout: Layout, host: str) -> None:
        self.layout = layout
        self.host = host
        self._pool_conf: Optional[str] = None

    def path(self, suffix: str) -> str:
        return self.layout.host_file(self.host, suffix)

    def write_inventory(self, host_uuid: str) -> None:
        write_atomic(self.path("inventory"), inventory_text(host_uuid))

    def set_system_state(self, state: str) -> None:
        """``running`` normally; ``stopping`` while the whole host shuts down (what
        ``systemctl is-system-running`` prints then)."""
        write_atomic(self.path("system-state"), state + "\n")

    def set_pool_conf(self, text: str) -> bool:
        """Write pool.conf if it changed; whether it did."""
        if text == self._pool_conf:
            return False
        write_atomic(self.path("pool.conf"), text)
        self._pool_conf = text
        return True

    def reset_size(self) -> int:
        """How much the daemon's recording host reset has written (it appends a reason)."""
        try:
            return os.path.getsize(self.path("reset"))
        except FileNotFoundError:
            return 0

    def reset_reasons(self) -> List[str]:
        try:
            with open(self.path("reset")) as handle:
                return [line.rstrip("\n") for line in handle if line.strip()]
        except FileNotFoundError:
            return []


class DomainIds:
    """Xen domain ids of one host's guests, numbered from 1 in start order since the host's
    boot, as Xen does (domain 0 is dom0). A world observer: the world tells it of every start
    and stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: Dict[str, Dict[str, int]] = {}  # host -> vm uuid -> domid
        self._next: Dict[str, int] = {}
        self._started: Dict[str, Dict[str, float]] = {}  # host -> vm uuid -> virtual start (s)

    def domain_started(self, t: int, host: str, vm: str, others: List[str],
                       migrated: bool) -> None:
        with self._lock:
            number = self._next.get(host, 1)
            self._next[host] = number + 1
            self._ids.setdefault(host, {})[vm] = number
            self._started.setdefault(host, {})[vm] = t / 1e9

    def domain_stopped(self, t: int, host: str, vm: str, cause: str) -> None:
        with self._lock:
            self._ids.get(host, {}).pop(vm, None)
            self._started.get(host, {}).pop(vm, None)

    def host_power(self, t: int, host: str, state: str, cause: str) -> None:
        if state == "off":
            with self._lock:
                self._next[host] = 1
                self._ids[host] = {}
                self._started[host] = {}

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: None

    def listing(self, host: str, names: Dict[str, str], now_s: float) -> List[Dict[str, Any]]:
        """The host's domains for ``xl list -v``, dom0 first."""
        out: List[Dict[str, Any]] = [dict(DOM0, time=now_s)]
        with self._lock:
            for vm, domid in self._ids.get(host, {}).items():
                out.append({"name": names.get(vm, vm), "domid": domid, "uuid": vm,
                            "memory": GUEST_MEMORY_MIB, "vcpus": GUEST_VCPUS, "state": "-b----",
                            "time": max(0.0, now_s - self._started[host][vm])})
        return out

    def uuid_of(self, host: str, domid: int) -> Optional[str]:
        with self._lock:
            for vm, number in self._ids.get(host, {}).items():
                if number == domid:
                    return vm
        return None
