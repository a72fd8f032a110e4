"""The simulated two-host world: the ground truth every invariant is checked against.

The world owns what is *really* true: which hosts have power, which are frozen, which guest
domains really run where (kept apart from what any xapi database believes), the network, each
host's watchdog device and fence device (BMC). The xapi behaviour model and the daemons see this
truth only through their own interfaces: the model through the Fabric methods below, the daemons
through the simulated executor.
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from simulations.world.clock import HostClock
from simulations.world.network import Network
from simulations.world.rng import Stream, Streams
from simulations.world.scheduler import NS, Scheduler, Timer

BOOT_TIME = (55 * NS, 65 * NS)
FENCE_LATENCY = (1 * NS, 3 * NS)
GUEST_DESTROY_LATENCY = (50_000_000, 200_000_000)  # xl destroy, per host, 50-200 ms


class Watchdog:
    """A hardware (or hypervisor) watchdog: it keeps counting while the host is frozen, and
    resets the host when not fed in time. Opening the device counts as a feed."""

    __slots__ = ("armed", "deadline", "timeout", "timer")

    def __init__(self) -> None:
        self.armed = False
        self.deadline = 0
        self.timeout = 0
        self.timer: Optional[Timer] = None


class Host:
    def __init__(self, name: str, uuid: str, address: str, memory: int, clock: HostClock) -> None:
        self.name = name
        self.uuid = uuid
        self.address = address
        self.memory = memory
        self.clock = clock
        self.power = "on"  # "on" | "off" | "booting"
        self.frozen_since: Optional[int] = None
        self.domains: Dict[str, int] = {}  # vm uuid -> start time (ns)
        self.domains_version = 0  # bumps whenever a domain starts or stops here
        self.watchdog = Watchdog()
        self.disk: Dict[str, Any] = {}  # what survives a daemon restart or a reboot
        self.fence_reachable = True
        self.boots = 0

    @property
    def running(self) -> bool:
        return self.power == "on" and self.frozen_since is None


class World:
    """Ground truth plus the Fabric the xapi model needs."""

    def __init__(self, seed: int, hosts: List[Host], paths: int, gateways: int) -> None:
        self.scheduler = Scheduler()
        self.streams = Streams(seed)
        self.hosts = {h.name: h for h in hosts}
        self.host_names = [h.name for h in hosts]
        self.network = Network(self.host_names, paths, gateways, self.streams("net.loss"),
                               self.streams("net.latency"))
        self.vm_hosts: Dict[str, Set[str]] = {}  # vm uuid -> hosts with a live domain
        self.last_death: Dict[str, int] = {}
        self.observers: List[Any] = []
        self._handlers: Dict[str, List[Any]] = {}
        self.xapi: Any = None  # simulations.xapi.model.XapiPool, attached by the runner
        self.daemons: Dict[str, Any] = {}  # host name -> simulations.executor.SimDaemon
        self.vm_names: Dict[str, str] = {}  # vm uuid -> name, for messages
        self.last_contact: Dict[str, int] = {}  # host -> last packet from peer/gateway
        self.on_power_off: List[Callable[[str, str], None]] = []
        self.on_booted: List[Callable[[str], None]] = []
        self.boot_time = BOOT_TIME  # power on -> booted, drawn uniformly (ns)

    # --- time ---------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.scheduler.t

    def peer_of(self, name: str) -> str:
        return self.host_names[1] if name == self.host_names[0] else self.host_names[0]

    def notify(self, method: str, *args: Any) -> None:
        handlers = self._handlers.get(method)
        if handlers is None:
            handlers = self._handlers[method] = [getattr(o, method) for o in self.observers]
        now = self.scheduler.t
        for handler in handlers:
            handler(now, *args)

    def observe(self, *observers: Any) -> None:
        """Set the observers notified of every world event (see notify)."""
        self.observers = list(observers)
        self._handlers = {}

    # --- Fabric (for the xapi model) ----------------------------------------------------------

    def host_running(self, host: str) -> bool:
        return self.hosts[host].running

    def connected(self, a: str, b: str) -> bool:
        return (
            self.hosts[a].running
            and self.hosts[b].running
            and self.network.management_connected(a, b)
        )

    def domains(self, host: str) -> Iterable[str]:
        return sorted(self.hosts[host].domains)

    def create_domain(self, host: str, vm_uuid: str, migrated: bool = False) -> None:
        h = self.hosts[host]
        if vm_uuid in h.domains:
            return
        h.domains[vm_uuid] = self.now
        h.domains_version += 1
        hosts = self.vm_hosts.setdefault(vm_uuid, set())
        others = sorted(hosts)
        hosts.add(host)
        self.notify("domain_started", host, vm_uuid, others, migrated)

    def destroy_domain(self, host: str, vm_uuid: str, cause: str = "xapi") -> None:
        h = self.hosts[host]
        if h.domains.pop(vm_uuid, None) is None:
            return
        h.domains_version += 1
        self.vm_hosts[vm_uuid].discard(host)
        if cause != "migrated":  # a live migration is not a death: no restart margin to measure
            self.last_death[vm_uuid] = self.now
        self.notify("domain_stopped", host, vm_uuid, cause)

    def move_domain(self, src: str, dst: str, vm_uuid: str) -> None:
        if vm_uuid not in self.hosts[src].domains:
            return
        self.destroy_domain(src, vm_uuid, cause="migrated")
        self.create_domain(dst, vm_uuid, migrated=True)

    def stream(self, name: str) -> Stream:
        return self.streams(name)

    # --- power --------------------------------------------------------------------------------

    def power_off(self, name: str, cause: str) -> None:
        """Power is gone at once: every domain dies with it (crash, reset, fence, shutdown)."""
        host = self.hosts[name]
        if host.power == "off":
            return
        for vm in sorted(host.domains):
            self.destroy_domain(name, vm, cause=cause)
        host.power = "off"
        host.frozen_since = None
        self._stop_watchdog(host)
        if self.xapi is not None:
            self.xapi.on_host_power_off(name)
        for callback in self.on_power_off:
            callback(name, cause)
        self.notify("host_power", name, "off", cause)

    def power_on(self, name: str, cause: str = "power_on") -> None:
        host = self.hosts[name]
        if host.power != "off":
            return
        host.power = "booting"
        self.notify("host_power", name, "booting", cause)
        boot = self.streams("boot").uniform_ns(*self.boot_time)
        self.scheduler.after(boot, self._booted, name, host.boots + 1)

    def _booted(self, name: str, boot_number: int) -> None:
        host = self.hosts[name]
        if host.power != "booting":
            return
        host.boots = boot_number
        host.power = "on"
        host.clock.reboot(self.now, mono_base=self.streams("clock").uniform(5.0, 30.0))
        self.notify("host_power", name, "on", "booted")
        if self.xapi is not None:
            self.xapi.on_host_boot(name)
        for callback in self.on_booted:
            callback(name)

    def reset(self, name: str, cause: str) -> None:
        """A hard reset: power off and boot again."""
        self.power_off(name, cause)
        self.power_on(name, cause)

    def freeze(self, name: str) -> None:
        host = self.hosts[name]
        if host.power != "on" or host.frozen_since is not None:
            return
        host.frozen_since = self.now
        if self.xapi is not None:
            self.xapi.on_host_freeze(name)
        self.notify("host_frozen", name, True)

    def thaw(self, name: str) -> None:
        host = self.hosts[name]
        if host.frozen_since is None:
            return
        host.frozen_since = None
        if self.xapi is not None:
            self.xapi.on_host_thaw(name)
        self.notify("host_frozen", name, False)

    # --- watchdog device -----------------------------------------------------------------------

    def watchdog_arm(self, name: str, timeout_s: int) -> None:
        host = self.hosts[name]
        wd = host.watchdog
        wd.armed = True
        wd.timeout = host.clock.duration(float(timeout_s))
        self.watchdog_feed(name)

    def watchdog_feed(self, name: str) -> None:
        host = self.hosts[name]
        wd = host.watchdog
        if not wd.armed:
            return
        wd.deadline = self.now + wd.timeout
        if wd.timer is None:
            wd.timer = self.scheduler.at(wd.deadline, self._watchdog_check, name)

    def watchdog_disarm(self, name: str) -> None:
        self._stop_watchdog(self.hosts[name])

    def _stop_watchdog(self, host: Host) -> None:
        wd = host.watchdog
        wd.armed = False
        if wd.timer is not None:
            wd.timer.cancel()
            wd.timer = None

    def _watchdog_check(self, name: str) -> None:
        host = self.hosts[name]
        wd = host.watchdog
        wd.timer = None
        if not wd.armed:
            return
        if self.now < wd.deadline:  # fed since: look again at the new deadline (lazy re-arm)
            wd.timer = self.scheduler.at(wd.deadline, self._watchdog_check, name)
            return
        self.notify("fence", name, "watchdog", name)
        self.reset(name, "watchdog")

    # --- fence devices (BMCs) -----------------------------------------------------------------

    def fence(self, caller: str, target: str, action: str, done: Callable[[str], None]) -> None:
        """Run a fence action from ``caller`` against ``target``'s BMC; ``done(result)`` later.

        The BMC is reached over the caller's management NIC and answers truthfully: "off" only
        once the target really has no power. Every answer is also told to the observers
        (``fence_answer``): the checker trusts no fence device (I8)."""
        latency = self.streams("fence").uniform_ns(*FENCE_LATENCY)
        reachable = (self.hosts[caller].running and self.network.nic_down[caller] == 0
                     and self.hosts[target].fence_reachable)

        def answer(result: str) -> None:
            self.notify("fence_answer", target, action, result)
            done(result)

        def finish() -> None:
            if not reachable:
                answer("unreachable")
                return
            target_host = self.hosts[target]
            if action == "off":
                if target_host.power != "off":
                    self.notify("fence", target, "agent", caller)
                    self.power_off(target, "fenced")
                answer("off")
            elif action == "status":
                answer("off" if target_host.power == "off" else "on")
            else:
                answer("failed")

        self.scheduler.after(latency, finish)
