"""SimulatedPool: the xapi behaviour model served over real XML-RPC, one endpoint per host.

This is the model's second face. The world (power, boots, freezes, the management network and
the domains really running) and the xapi model are the simulator's own objects, unchanged; here
virtual time follows the real clock (``speed`` times as fast) and each host's xapi answers on a
real socket, so the unmodified ``XenAPI`` package and the daemon's adapter talk to it as to a
pool. The control methods are pinned (tests the project has never seen use them)::

    pool = SimulatedPool(hosts=["xs1", "xs2"], master="xs1",
                         vms=[{"name": "vm-a", "host": "xs1"}, {"name": "vm-b", "host": "xs2"}])
    pool.start(); pool.url("xs1"); pool.credentials
    pool.crash("xs1"); pool.power_on("xs1"); pool.partition(["xs1"], ["xs2"]); pool.heal()
    pool.xapi_hang("xs2"); pool.xapi_restart("xs2", seconds=10); pool.domains("xs1"); pool.stop()

Each host listens on its own loopback address (127.0.0.11, 127.0.0.12, ...) on one common port,
so that ``host.address`` and ``HOST_IS_SLAVE`` carry a plain address, as on a real pool; with
``unix_dir`` also on a Unix socket per host (``unix_path(host)``), which like /var/lib/xcp/xapi
takes root without a password and never answers HOST_IS_SLAVE; with ``tls=(cert, key)`` the
endpoints speak HTTPS, as xapi does on 443 with its self-signed certificate. With
``bind_addresses`` the TCP endpoints listen there instead of on the hosts' addresses: the lab
(simulations/lab) gives the hosts their lab network addresses, which xapi reports (pool.conf,
HOST_IS_SLAVE), and reaches each endpoint on a loopback address through a forwarder.
"""
import os
import secrets
import ssl
import time
import uuid as uuidlib
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from halizard.core.pool import KEY_ENABLED, KEY_VM_RESTART
from simulations.world.clock import HostClock
from simulations.world.network import Link
from simulations.world.scheduler import NS, ns
from simulations.world.world import Host, World
from simulations.xapi.model import HostSpec, VmSpec, XapiParams, XapiPool
from simulations.xapi.realtime import RealTime
from simulations.xapi.server import Endpoint

T = TypeVar("T")
GiB = 1 << 30
HOST_MEMORY = 64 * GiB
DOM0_MEMORY = 4 * GiB
VM_MEMORY = 2 * GiB
USERNAME = "root"


class PoolError(ValueError):
    """A SimulatedPool was given something it cannot build or do."""


def _loopback(index: int) -> str:
    return "127.0.0.%d" % (11 + index)


class SimulatedPool:
    def __init__(self, hosts: Sequence[str], master: str, vms: Sequence[Mapping[str, Any]] = (),
                 *, seed: int = 0, speed: float = 1.0, params: Optional[XapiParams] = None,
                 boot_time: Tuple[float, float] = (55.0, 65.0),
                 addresses: Optional[Mapping[str, str]] = None, port: int = 0,
                 password: Optional[str] = None,
                 host_memory: Union[int, Mapping[str, int]] = HOST_MEMORY,
                 pool_other_config: Optional[Mapping[str, str]] = None,
                 unix_dir: Optional[str] = None,
                 tls: Optional[Tuple[str, str]] = None,
                 bind_addresses: Optional[Mapping[str, str]] = None) -> None:
        if len(set(hosts)) != len(hosts) or not hosts:
            raise PoolError("hosts must be distinct names, got %r" % (list(hosts),))
        if master not in hosts:
            raise PoolError("master %r is not one of the hosts %r" % (master, list(hosts)))
        self.hosts = list(hosts)
        self.master = master
        self.password = password or secrets.token_hex(12)
        self._port = port
        self._addresses = {h: (addresses or {}).get(h) or _loopback(i) for i, h in enumerate(hosts)}
        self._seed = seed
        memory = (dict(host_memory) if isinstance(host_memory, Mapping)
                  else {h: host_memory for h in hosts})
        world_hosts = [Host(h, self._uuid("host", h), self._addresses[h],
                            memory.get(h, HOST_MEMORY),
                            HostClock(drift_ppm=0.0, mono_base=1000.0, wall_offset=time.time()))
                       for h in self.hosts]
        self.world = World(seed, world_hosts, paths=1, gateways=0)
        self.world.boot_time = (ns(boot_time[0]), ns(boot_time[1]))
        specs = [self._vm_spec(i, vm) for i, vm in enumerate(vms)]
        other = {KEY_ENABLED: "true"} if pool_other_config is None else dict(pool_other_config)
        self.model = XapiPool(
            self.world.scheduler, self.world,
            hosts=[HostSpec(h.name, h.uuid, h.address, h.memory, DOM0_MEMORY) for h in world_hosts],
            master=master, vms=specs, pool_other_config=other, params=params or XapiParams(),
            username=USERNAME, password=self.password)
        self.world.xapi = self.model
        self.world.vm_names = {spec.uuid: spec.name for spec in specs}
        for spec in specs:
            if spec.host is not None:
                self.world.create_domain(spec.host, spec.uuid)
        self.clock = RealTime(self.world.scheduler, speed)
        context = None
        if tls is not None:  # (certificate file, key file): HTTPS like xapi's port 443
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls[0], tls[1])
        self._scheme = "http" if context is None else "https"
        bind = dict(bind_addresses or {})
        self._endpoints = {h: Endpoint(h, bind.get(h) or self._addresses[h], port, self._caller(h),
                                       None if unix_dir is None
                                       else os.path.join(unix_dir, "%s.xapi" % h), context)
                           for h in self.hosts}
        self._identity: Dict[str, Tuple[int, int]] = {}
        self._cut: List[Link] = []
        self._started = False
        self.log: List[str] = []  # what the fault injector and its operator did

    # --- construction ---------------------------------------------------------------------------

    def _uuid(self, kind: str, name: str) -> str:
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "halizard-sim/%d/%s/%s"
                                 % (self._seed, kind, name)))

    def _vm_spec(self, index: int, vm: Mapping[str, Any]) -> VmSpec:
        unknown = set(vm) - {"name", "host", "memory", "order", "start_delay", "restart",
                             "other_config", "uuid"}
        if unknown or "name" not in vm:
            raise PoolError("VM %d: needs a name; unknown keys %s" % (index, sorted(unknown)))
        host = vm.get("host")
        if host is not None and host not in self.hosts:
            raise PoolError("VM %r: host %r is not one of %r" % (vm["name"], host, self.hosts))
        other = dict(vm.get("other_config") or {})
        if "restart" in vm:
            other[KEY_VM_RESTART] = str(vm["restart"])
        return VmSpec(str(vm["name"]), str(vm.get("uuid") or self._uuid("vm", str(vm["name"]))),
                      host, int(vm.get("memory", VM_MEMORY)), int(vm.get("order", 0)),
                      ns(float(vm.get("start_delay", 0))), other)

    def _caller(self, host: str) -> Callable[..., None]:
        def call(method: str, params: List[Any], reply: Callable[..., None],
                 transport: str) -> None:
            self.clock.run(self.model.call, host, method, params, reply, transport)
        return call

    # --- life -----------------------------------------------------------------------------------

    def start(self) -> "SimulatedPool":
        """Open the endpoints and let virtual time run."""
        if self._started:
            return self
        self._bind_common_port()
        self.clock.after_catch_up.append(self._sync_endpoints)
        self.clock.run(self._sync_endpoints)
        self.clock.start()
        self._started = True
        return self

    def _bind_common_port(self) -> None:
        """All hosts on one port (as xapi's 80/443 on every host): pick a free one."""
        for _ in range(20):
            first = self._endpoints[self.hosts[0]]
            first.port = self._port
            first.listen()
            try:
                for h in self.hosts[1:]:
                    self._endpoints[h].port = first.port
                    self._endpoints[h].listen()
                return
            except OSError:
                for ep in self._endpoints.values():
                    ep.stop_listening()
                if self._port:
                    raise
        raise PoolError("no common free port for %s" % ", ".join(self._addresses.values()))

    def _sync_endpoints(self) -> None:
        """Called under the model's lock after every advance of time: what each endpoint does
        follows its xapi (see simulations.xapi.server)."""
        for name, ep in self._endpoints.items():
            state = self.model.xapi_state(name)
            identity = self.model.xapi_identity(name)
            if identity != self._identity.get(name):
                if name in self._identity and state != "off":
                    ep.reset_connections()
                self._identity[name] = identity
            listen = state not in ("down", "restarting")
            if listen and not ep.listening:
                ep.listen()
            elif not listen and ep.listening:
                ep.stop_listening()

    def stop(self) -> None:
        self.clock.stop()
        for ep in self._endpoints.values():
            ep.close()
        self._started = False

    def __enter__(self) -> "SimulatedPool":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- addresses ------------------------------------------------------------------------------

    def url(self, host: str) -> str:
        ep = self._endpoint(host)
        return "%s://%s:%d" % (self._scheme, ep.address, ep.port)

    def unix_path(self, host: str) -> str:
        """The host's local socket (like /var/lib/xcp/xapi), if the pool has ``unix_dir``:
        callers there are root, pre-authenticated, and never told HOST_IS_SLAVE."""
        path = self._endpoint(host).unix_path
        if path is None:
            raise PoolError("this pool has no Unix sockets (unix_dir was not given)")
        return path

    def address(self, host: str) -> str:
        return self._endpoint(host).address

    @property
    def port(self) -> int:
        return self._endpoints[self.hosts[0]].port

    @property
    def credentials(self) -> Tuple[str, str]:
        return USERNAME, self.password

    def _endpoint(self, host: str) -> Endpoint:
        try:
            return self._endpoints[host]
        except KeyError:
            raise PoolError("no host %r in this pool (hosts: %s)"
                            % (host, ", ".join(self.hosts))) from None

    @classmethod
    def from_scenario(cls, scenario: Any, **options: Any) -> "SimulatedPool":
        """The pool of a scenario file's [cluster] (simulations.scenario.Scenario), with its
        faults scheduled on the pool's virtual time (see ``schedule``)."""
        vms = [{"name": vm.name, "host": vm.host, "memory": vm.memory, "order": vm.order,
                "start_delay": vm.start_delay, "restart": vm.restart} for vm in scenario.vms]
        options.setdefault("host_memory", dict(scenario.host_memory))
        pool = cls(list(scenario.hosts), scenario.master, vms, **options)
        pool.schedule(scenario.faults)
        return pool

    def schedule(self, faults: Sequence[Any]) -> None:
        """Apply scenario faults at their times (virtual seconds since the pool was built), with
        the simulator's own fault injector; faults aimed at a daemon are only logged, since the
        daemon under test runs outside the pool."""
        from simulations.faults import FaultInjector, Operator

        operator = Operator(self.world, self.log.append)
        self.clock.run(FaultInjector(self.world, {}, operator).schedule, tuple(faults))

    # --- faults ---------------------------------------------------------------------------------

    def crash(self, host: str) -> None:
        """Power gone at once: its domains die, its xapi never answers again until it boots."""
        self._endpoint(host)
        self.clock.run(self.world.power_off, host, "crash")

    def power_on(self, host: str) -> None:
        """Boot (``boot_time`` of virtual time), then xapi starts as after a real boot."""
        self._endpoint(host)
        self.clock.run(self.world.power_on, host)

    def freeze(self, host: str) -> None:
        self.clock.run(self.world.freeze, host)

    def thaw(self, host: str) -> None:
        self.clock.run(self.world.thaw, host)

    def partition(self, side_a: Sequence[str], side_b: Sequence[str]) -> None:
        """Cut the management network between the two groups of hosts (both directions)."""
        for h in list(side_a) + list(side_b):
            self._endpoint(h)

        def cut() -> None:
            for a in side_a:
                for b in side_b:
                    for link in (self.world.network.links[(a, b, 0)],
                                 self.world.network.links[(b, a, 0)]):
                        link.down += 1
                        self._cut.append(link)
        self.clock.run(cut)

    def heal(self) -> None:
        def mend() -> None:
            for link in self._cut:
                link.down -= 1
            self._cut = []
        self.clock.run(mend)

    def xapi_hang(self, host: str, seconds: Optional[float] = None) -> None:
        """xapi accepts calls and answers none (for ``seconds`` of virtual time, or until it
        restarts)."""
        self._endpoint(host)

        def hang() -> None:
            until = None if seconds is None else self.world.now + ns(seconds)
            self.model.xapi_hang(host, until)
        self.clock.run(hang)

    def xapi_restart(self, host: str, seconds: float = 10.0) -> None:
        """A toolstack restart: connections reset, refused for ``seconds``, then start-up."""
        self._endpoint(host)
        self.clock.run(self.model.xapi_restart, host, ns(seconds))

    def fail_next_starts(self, vm: str, times: int, error: Optional[Sequence[str]] = None) -> None:
        self.clock.run(self.model.fail_next_starts, self.vm_uuid(vm), times, error)

    # --- inspection -----------------------------------------------------------------------------

    def set_native_ha(self, on: bool = True) -> None:
        """Switch XenServer's own HA flag in the pool database (halizard must stand down)."""
        self.clock.run(self.model.set_native_ha, on)

    def now(self) -> float:
        """Virtual seconds since the pool was built."""
        return self.clock.run(lambda: self.world.now / NS)

    def domains(self, host: str) -> Set[str]:
        """UUIDs of the VMs really running on ``host`` (the hypervisor's truth, not xapi's)."""
        self._endpoint(host)
        return self.clock.run(lambda: set(self.world.hosts[host].domains))

    def role(self, host: str) -> str:
        return self.clock.run(self.model.role, host)

    def messages(self, host: str) -> List[Dict[str, Any]]:
        """The XenAPI messages in ``host``'s database (message.create), oldest first."""
        self._endpoint(host)
        return self.clock.run(self.model.messages, host)

    def xapi_state(self, host: str) -> str:
        return self.clock.run(self.model.xapi_state, host)

    def host_uuid(self, host: str) -> str:
        return self.model.host_uuid(host)

    def vm_uuid(self, vm: str) -> str:
        try:
            return self.model.vm_uuid(vm)
        except KeyError:
            raise PoolError("no VM named %r in this pool" % vm) from None

    def inspect(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` under the model's lock, with virtual time caught up."""
        return self.clock.run(fn, *args)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Wait (real seconds) until ``predicate()``, evaluated under the model's lock, holds.
        The predicate must not call the pool over the wire: that waits for the same lock."""
        deadline = time.monotonic() + timeout
        while not self.clock.run(predicate):
            if time.monotonic() > deadline:
                raise TimeoutError("%s not reached within %.1f s" % (what or "condition", timeout))
            time.sleep(0.01)
