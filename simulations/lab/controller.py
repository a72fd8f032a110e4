"""The lab controller: one simulated pool, two lab hosts around it, and the faults done to them.

It runs in the lab's own ``ctl`` namespace (only a loopback), daemonized by `up`, and owns:

* one SimulatedPool (hosts xs1 and xs2, master xs1, the protected VMs), its hosts known to xapi
  by their lab addresses; its TCP endpoints listen on the ctl namespace's loopback and its Unix
  sockets (each host's /var/lib/xcp/xapi) in the lab directory;
* in each host namespace a forwarder on the host's lab address, port 80, to that host's
  endpoint: the peer's daemon reaches a host's xapi only across the lab network;
* each host's files (pool.conf kept current from the model, the inventory, the system state)
  and its SimulatedWatchdog (a FIFO), whose reset resets the lab host;
* the control socket (faults, status, and the ``xl`` shims' list and destroy);
* the timestamped domain log (domains.log) and the event log (events.log);
* one real ``halizard daemon`` per host, started in the host namespace and restarted like
  systemd's Restart=always, RestartSec=1, unless the host is down or shutting down.

The model's own host-to-host traffic (a slave's database calls to its master, heartbeats) is
in-process, not on the lab network; so when the lab cuts the management network between the
hosts (a switch port of a host's eth0 goes down) the controller also cuts it in the model
(``pool.partition``) and mends it when both ports are up again (``pool.heal``). The second
heartbeat link (eth1) carries no xapi traffic and is the lab's alone.

Host power: a crash kills every process in the host namespace, takes the host's own interfaces
down (its addresses stop answering) and powers the host off in the world (its domains die with
it). A reset (watchdog, or the daemon's recorded last-resort reset) is a crash followed by a
boot; a boot brings the interfaces up, and once the world says the host has booted the lab gives
it a fresh watchdog device and starts its daemon. Nothing here ever resets the machine.
"""
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from halizard.core.pool import RESTART
from halizard.runtime.watchdog import RecordingReset, SimulatedWatchdog
from simulations.lab import netns
from simulations.lab.config import BOOT_TIME, REPO, write_host_config
from simulations.lab.control import ControlServer
from simulations.lab.daemon import DaemonProcess
from simulations.lab.domainlog import DomainEvent, DomainLog, format_wall
from simulations.lab.forward import Forwarder
from simulations.lab.hosts import DomainIds, HostFiles, pool_conf_text, write_atomic
from simulations.lab.layout import HOSTS, MASTER, XAPI_PORT, Layout, host_address, nic, peer_of
from simulations.world.scheduler import NS
from simulations.xapi.pool import SimulatedPool

TICK = 0.1  # s between the supervisor's looks at processes and files
RESTART_SEC = 1.0  # systemd's RestartSec of halizard.service
SHUTDOWN_PATIENCE = 90.0  # s a planned shutdown waits for the daemon (TimeoutStopSec)
FAULT_KINDS = ("port-down", "port-up", "gateway-down", "gateway-up", "crash", "power-on",
               "stall", "resume", "daemon-kill", "xapi-hang", "xapi-resume", "shutdown")
UNDO = {"port-down": "port-up", "gateway-down": "gateway-up", "crash": "power-on",
        "stall": "resume", "xapi-hang": "xapi-resume"}


class LabError(RuntimeError):
    """A fault or request the lab cannot do (wrong target, wrong state)."""


class Options:
    def __init__(self, vms: int = 4, timings: str = "short", python: str = sys.executable,
                 daemons: bool = True, seed: int = 0) -> None:
        self.vms = vms
        self.timings = timings
        self.python = python
        self.daemons = daemons
        self.seed = seed

    def to_json(self) -> Dict[str, Any]:
        return dict(vars(self))


class LabHost:
    """What the controller knows of one lab host beyond the world's truth."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.name = name
        self.ns = layout.ns(name)
        self.files = HostFiles(layout, name)
        self.state = "up"  # up | booting | stopping | off
        self.daemon: Optional[DaemonProcess] = None
        self.daemon_starts = 0
        self.restart_at: Optional[float] = None
        self.watchdog: Optional[SimulatedWatchdog] = None
        self.watchdog_token = 0  # which device a firing came from (a stopped one is ignored)
        self.ports = {n: True for n in layout.networks}  # switch ports of its NICs
        self.reset_seen = 0
        self.resets: List[Tuple[str, str]] = []  # (wall, reason)
        self.shutdown_deadline: Optional[float] = None
        self.shutdown_go_on: Optional[Callable[[], None]] = None
        self.forwarder: Optional[Forwarder] = None
        self.worker: Optional[netns.NamespaceWorker] = None


class Controller:
    def __init__(self, layout: Layout, options: Options) -> None:
        self.layout = layout
        self.options = options
        self.hosts = {h: LabHost(layout, h) for h in HOSTS}
        self.lock = threading.RLock()
        self.events: queue.Queue[Tuple[Any, ...]] = queue.Queue()
        self.timers: List[Tuple[float, str, str]] = []  # (monotonic due, kind, target)
        self.gateway_up = True
        self.partitioned = False
        self.stopping = threading.Event()
        self.pool: Optional[SimulatedPool] = None
        self.domain_ids = DomainIds()
        self._event_log: IO[str] = open(layout.events_log, "a")
        self._domain_log_file: IO[str] = open(layout.domain_log, "a")
        self._daemon_logs: Dict[str, IO[str]] = {}
        self._wall0 = 0.0
        self._v0 = 0
        self.vm_names: List[str] = []
        self._watchdogs = 0
        self.bind = {h: "127.0.0.%d" % (11 + i) for i, h in enumerate(HOSTS)}
        self.control: Optional[ControlServer] = None

    # --- logging ----------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = "%s %s\n" % (format_wall(time.time()), text)
        self._event_log.write(line)
        self._event_log.flush()

    def _wall_of(self, t_ns: int) -> float:
        return self._wall0 + (t_ns - self._v0) / NS

    # --- start ------------------------------------------------------------------------------------

    def start(self) -> None:
        layout = self.layout
        password = os.urandom(12).hex()
        write_atomic(layout.password_file, password + "\n", 0o600)
        self.vm_names = ["vm-%d" % (i + 1) for i in range(self.options.vms)]
        vms = [{"name": name, "host": HOSTS[i % 2], "restart": RESTART}
               for i, name in enumerate(self.vm_names)]
        pool = SimulatedPool(
            list(HOSTS), MASTER, vms, seed=self.options.seed, password=password,
            boot_time=BOOT_TIME[self.options.timings],
            addresses={h: host_address(h) for h in HOSTS},
            bind_addresses=self.bind,
            unix_dir=layout.dir)
        self.pool = pool
        world = pool.world
        for h in HOSTS:
            lab_host = self.hosts[h]
            lab_host.files.write_inventory(pool.host_uuid(h))
            lab_host.files.set_system_state("running")
            lab_host.files.set_pool_conf(pool_conf_text(*pool.model.pool_conf(h)))
            write_host_config(layout, h, self.options.timings, self.options.python)
            self._daemon_logs[h] = open(layout.host_file(h, "daemon.log"), "a")
        domain_log = DomainLog(self._domain_log_file, self._wall_of, world.vm_names)
        world.observe(domain_log, self.domain_ids)
        world.on_booted.append(lambda host: self.events.put(("booted", host)))
        world.on_power_off.append(lambda host, cause: self.events.put(("powered-off", host, cause)))
        pool.clock.after_catch_up.append(self._follow_model)
        pool.start()

        def first_lines() -> None:
            self._v0 = world.now
            self._wall0 = time.time()
            for h in HOSTS:
                for vm in sorted(world.hosts[h].domains):
                    self.domain_ids.domain_started(world.now, h, vm, [], False)
                    domain_log.write(DomainEvent(self._wall0, h, world.vm_names[vm], "start",
                                                 "initial"))
        pool.inspect(first_lines)
        for h in HOSTS:
            lab_host = self.hosts[h]
            lab_host.worker = netns.NamespaceWorker(lab_host.ns)
            lab_host.forwarder = Forwarder(lab_host.worker, (host_address(h), XAPI_PORT),
                                           (self.bind[h], pool.port))
            lab_host.forwarder.set_listening_now(True)
            self._new_watchdog(lab_host)
        pool.inspect(self._follow_model)
        self.control = ControlServer(layout.control_socket, self.handle, self.note)
        self.note("controller up: pid %d, pool port %d, %d VMs, %s timings"
                  % (os.getpid(), pool.port, len(vms), self.options.timings))
        if self.options.daemons:
            with self.lock:
                for h in HOSTS:
                    self._start_daemon(self.hosts[h])

    def _new_watchdog(self, lab_host: LabHost) -> None:
        path = lab_host.files.path("watchdog")
        if os.path.exists(path):
            os.unlink(path)  # the device of the previous boot
        name = lab_host.name
        self._watchdogs += 1
        token = self._watchdogs

        def fired(reason: str) -> None:
            self.events.put(("reset", name, reason, token))

        lab_host.watchdog = SimulatedWatchdog(path, RecordingReset(on_reset=fired))
        lab_host.watchdog_token = token

    def _follow_model(self) -> None:
        """After every advance of the model (under its lock): pool.conf files and forwarders
        follow each host's xapi. Nothing here may block."""
        pool = self.pool
        if pool is None:
            return
        for h, lab_host in self.hosts.items():
            if lab_host.files.set_pool_conf(pool_conf_text(*pool.model.pool_conf(h))):
                self.note("%s pool.conf: %s" % (h, pool_conf_text(*pool.model.pool_conf(h))))
            if lab_host.forwarder is not None:
                state = pool.model.xapi_state(h)
                lab_host.forwarder.set_listening(state not in ("down", "restarting"))

    # --- daemons ----------------------------------------------------------------------------------

    def daemon_argv(self, host: str) -> List[str]:
        return [self.options.python, "-m", "halizard", "daemon", "--config",
                self.layout.config_file(host)]

    def _start_daemon(self, lab_host: LabHost) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("NOTIFY_SOCKET", None)
        lab_host.daemon = DaemonProcess(lab_host.name, lab_host.ns,
                                        self.daemon_argv(lab_host.name),
                                        self._daemon_logs[lab_host.name], REPO, env)
        lab_host.daemon_starts += 1
        lab_host.restart_at = None
        self.note("%s daemon started: pid %d" % (lab_host.name, lab_host.daemon.pid))

    def _reap(self, lab_host: LabHost) -> None:
        """Notice a daemon's exit; schedule its restart if the host is up (Restart=always)."""
        daemon = lab_host.daemon
        if daemon is None:
            return
        code = daemon.poll()
        if code is None:
            return
        daemon.finish(code)
        lab_host.daemon = None
        self.note("%s daemon pid %d exited: %s" % (lab_host.name, daemon.pid,
                                                   "status %d" % code if code >= 0
                                                   else "signal %d" % -code))
        if lab_host.state == "up" and self.options.daemons:
            lab_host.restart_at = time.monotonic() + RESTART_SEC

    # --- the supervisor -----------------------------------------------------------------------------

    def run(self) -> None:
        """The supervisor loop, until ``stop``."""
        while not self.stopping.is_set():
            try:
                item = self.events.get(timeout=TICK)
            except queue.Empty:
                item = None
            try:
                with self.lock:
                    if item is not None:
                        self._event(item)
                    self._tick()
            except Exception:  # noqa: BLE001 - a lab that keeps going can still be torn down
                self.note("supervisor error:\n%s" % traceback.format_exc())

    def _event(self, item: Tuple[Any, ...]) -> None:
        kind, host = item[0], item[1]
        lab_host = self.hosts[host]
        if kind == "reset":
            if item[3] == lab_host.watchdog_token and lab_host.watchdog is not None:
                self._reset(lab_host, "watchdog", item[2])
        elif kind == "booted":
            self._booted(lab_host)
        elif kind == "powered-off":
            self.note("%s powered off (%s)" % (host, item[2]))
            if lab_host.state in ("up", "stopping"):  # not by the lab's own crash or reset
                self._down(lab_host)

    def _tick(self) -> None:
        now = time.monotonic()
        due = [t for t in self.timers if t[0] <= now]
        self.timers = [t for t in self.timers if t[0] > now]
        for _, kind, target in due:
            self.note("timed: %s %s" % (kind, target))
            try:
                self.fault(kind, target)
            except LabError as exc:  # e.g. resume after the watchdog has reset the host
                self.note("timed %s %s not done: %s" % (kind, target, exc))
        for lab_host in self.hosts.values():
            size = lab_host.files.reset_size()
            if size > lab_host.reset_seen:
                lab_host.reset_seen = size
                reasons = lab_host.files.reset_reasons()
                self._reset(lab_host, "daemon", reasons[-1] if reasons else "?")
                continue
            self._reap(lab_host)
            if lab_host.restart_at is not None and now >= lab_host.restart_at \
                    and lab_host.state == "up" and lab_host.daemon is None:
                self._start_daemon(lab_host)
            if lab_host.state == "stopping" and lab_host.shutdown_go_on is not None and (
                    lab_host.daemon is None or now > (lab_host.shutdown_deadline or now)):
                go_on, lab_host.shutdown_go_on = lab_host.shutdown_go_on, None
                self.note("%s shutdown goes on: %s" % (
                    lab_host.name, "the daemon has exited" if lab_host.daemon is None
                    else "the daemon did not exit within %.0f s" % SHUTDOWN_PATIENCE))
                assert self.pool is not None
                self.pool.inspect(go_on)

    # --- host power -----------------------------------------------------------------------------------

    def _kill_host_processes(self, lab_host: LabHost) -> None:
        if lab_host.daemon is not None:
            lab_host.daemon.kill()
            self.note("%s daemon pid %d killed" % (lab_host.name, lab_host.daemon.pid))
            lab_host.daemon = None
        netns.kill_all_in(lab_host.ns, spare=(os.getpid(),))  # xl shims and anything else the daemon started
        lab_host.restart_at = None

    def _down(self, lab_host: LabHost) -> None:
        """The lab side of a host without power (idempotent): no processes, no watchdog device,
        its own interfaces down so its addresses stop answering."""
        lab_host.state = "off"
        lab_host.shutdown_go_on = None
        self._kill_host_processes(lab_host)
        if lab_host.watchdog is not None:
            lab_host.watchdog.stop()
            lab_host.watchdog = None
        for network in self.layout.networks:
            netns.set_link(lab_host.ns, nic(network), False)

    def crash(self, lab_host: LabHost, cause: str = "crash") -> None:
        assert self.pool is not None
        self._down(lab_host)
        self.pool.inspect(self.pool.world.power_off, lab_host.name, cause)

    def power_on(self, lab_host: LabHost) -> None:
        pool = self.pool
        assert pool is not None
        if pool.inspect(lambda: pool.world.hosts[lab_host.name].power) != "off":
            raise LabError("%s has power already" % lab_host.name)
        lab_host.state = "booting"
        pool.power_on(lab_host.name)

    def _booted(self, lab_host: LabHost) -> None:
        if lab_host.state != "booting":
            return
        # Its addresses answer again once it has booted, not while the firmware runs.
        for network in self.layout.networks:
            netns.set_link(lab_host.ns, nic(network), True)
        lab_host.files.set_system_state("running")
        self._new_watchdog(lab_host)
        lab_host.state = "up"
        self.note("%s booted" % lab_host.name)
        if self.options.daemons:
            self._start_daemon(lab_host)

    def _reset(self, lab_host: LabHost, source: str, reason: str) -> None:
        """A host reset (the watchdog fired, or the daemon's last-resort reset): recorded, then
        a crash and a boot. A host already off is not reset again."""
        if lab_host.state == "off":
            self.note("%s %s reset ignored (host off): %s" % (lab_host.name, source, reason))
            return
        wall = format_wall(time.time())
        lab_host.resets.append((wall, "%s: %s" % (source, reason)))
        with open(self.layout.path("resets.log"), "a") as handle:
            handle.write("%s\t%s\t%s\t%s\n" % (wall, lab_host.name, source, reason))
        self.note("%s RESET by %s: %s" % (lab_host.name, source, reason))
        self.crash(lab_host, "watchdog" if source == "watchdog" else "reset")
        self.power_on(lab_host)

    def shutdown(self, lab_host: LabHost) -> None:
        """A planned shutdown from the shell, in a XenServer host's order: systemd stops
        halizard (SIGTERM; `systemctl is-system-running` says stopping), xapi stops the guests
        cleanly, then, once halizard has exited (or after TimeoutStopSec), xapi stops and the
        power goes (simulations.faults' host.shutdown, with the real daemon)."""
        pool = self.pool
        assert pool is not None
        if lab_host.state != "up":
            raise LabError("%s is %s, not up" % (lab_host.name, lab_host.state))
        lab_host.state = "stopping"
        lab_host.restart_at = None
        lab_host.shutdown_deadline = time.monotonic() + SHUTDOWN_PATIENCE
        lab_host.files.set_system_state("stopping")
        if lab_host.daemon is not None:
            lab_host.daemon.signal(signal.SIGCONT)
            lab_host.daemon.signal(signal.SIGTERM)
        name = lab_host.name
        world = pool.world

        def power_off() -> None:
            if world.hosts[name].power == "on":
                world.power_off(name, "shutdown")

        def gate(go_on: Callable[[], None]) -> None:
            lab_host.shutdown_go_on = go_on

        def begin() -> None:
            if pool.model.xapi_state(name) in ("up", "emergency"):
                pool.model.begin_clean_shutdown(name, power_off, guests_stopped=gate)
            else:  # xapi cannot stop the guests: wait for the daemon, then power off
                gate(power_off)

        pool.inspect(begin)

    # --- faults -----------------------------------------------------------------------------------------

    def _host(self, target: str) -> LabHost:
        name = target.split(":")[0]
        if name not in self.hosts:
            raise LabError("no lab host %r (hosts: %s)" % (name, ", ".join(HOSTS)))
        return self.hosts[name]

    def _network_of(self, target: str) -> int:
        if ":" not in target:
            return 0
        interface = target.split(":", 1)[1]
        for network in self.layout.networks:
            if interface == nic(network):
                return network
        raise LabError("%s has no %s (networks: %s)" % (
            target.split(":")[0], interface, ", ".join(nic(n) for n in self.layout.networks)))

    def fault(self, kind: str, target: str, duration: Optional[float] = None) -> Dict[str, Any]:
        if kind not in FAULT_KINDS:
            raise LabError("unknown fault %r (kinds: %s)" % (kind, ", ".join(FAULT_KINDS)))
        if duration is not None and kind not in UNDO:
            raise LabError("%s cannot take --for (it has no opposite)" % kind)
        pool = self.pool
        assert pool is not None
        with self.lock:
            wall = time.time()
            if kind in ("gateway-down", "gateway-up"):
                if target not in ("gw", "gateway"):
                    raise LabError("the gateway is called gw, not %r" % target)
                self.gateway_up = kind == "gateway-up"
                netns.set_link(self.layout.ns("gw"), "eth0", self.gateway_up)
            elif kind in ("port-down", "port-up"):
                lab_host, network = self._host(target), self._network_of(target)
                lab_host.ports[network] = kind == "port-up"
                netns.set_link(self.layout.ns("sw"), self.layout.port(lab_host.name, network),
                               lab_host.ports[network])
                self._follow_network()
            elif kind == "crash":
                lab_host = self._host(target)
                if lab_host.state == "off":
                    raise LabError("%s is already off" % lab_host.name)
                self.crash(lab_host)
            elif kind == "power-on":
                self.power_on(self._host(target))
            elif kind in ("stall", "resume"):
                lab_host = self._host(target)
                if lab_host.daemon is None or not lab_host.daemon.signal(
                        signal.SIGSTOP if kind == "stall" else signal.SIGCONT):
                    raise LabError("%s has no running daemon" % lab_host.name)
            elif kind == "daemon-kill":  # the process dies; Restart=always brings it back
                lab_host = self._host(target)
                if lab_host.daemon is None or not lab_host.daemon.signal(signal.SIGKILL):
                    raise LabError("%s has no running daemon" % lab_host.name)
            elif kind == "xapi-hang":
                pool.xapi_hang(self._host(target).name)
            elif kind == "xapi-resume":
                name = self._host(target).name
                # Hanging "until now" is the model's way of ending a hang: calls made while it
                # was hung stay unanswered, later ones are answered again.
                pool.inspect(lambda: pool.model.xapi_hang(name, pool.world.now))
            elif kind == "shutdown":
                self.shutdown(self._host(target))
            self.note("fault %s %s%s" % (kind, target, "" if duration is None
                                         else " for %g s" % duration))
            if duration is not None:
                self.timers.append((time.monotonic() + duration, UNDO[kind], target))
        return {"wall": wall}

    def _follow_network(self) -> None:
        """Tell the model whether the management network between the hosts is cut."""
        assert self.pool is not None
        cut = not all(self.hosts[h].ports[0] for h in HOSTS)
        if cut and not self.partitioned:
            self.pool.partition([HOSTS[0]], [HOSTS[1]])
            self.note("model: management network between the hosts cut")
        elif not cut and self.partitioned:
            self.pool.heal()
            self.note("model: management network between the hosts mended")
        self.partitioned = cut

    # --- requests ---------------------------------------------------------------------------------------

    def handle(self, message: Dict[str, Any]) -> Dict[str, Any]:
        cmd = message["cmd"]
        if cmd == "xl-list":
            return {"ok": True, "domains": self.xl_list(str(message["host"]))}
        if cmd == "xl-destroy":
            self.xl_destroy(str(message["host"]), int(message["domid"]))
            return {"ok": True}
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        if cmd == "status":
            return dict(self.status(), ok=True)
        if cmd == "fault":
            duration = message.get("for")
            answer = self.fault(str(message["kind"]), str(message["target"]),
                                None if duration is None else float(duration))
            return dict(answer, ok=True)
        if cmd == "stop":
            self.stopping.set()
            return {"ok": True}
        return {"ok": False, "error": "unknown command %r" % cmd}

    def xl_list(self, host: str) -> List[Dict[str, Any]]:
        pool = self.pool
        assert pool is not None
        if host not in self.hosts:
            raise LabError("no lab host %r" % host)

        def listing() -> List[Dict[str, Any]]:
            if not pool.world.hosts[host].running:
                raise LabError("%s is not running" % host)
            return self.domain_ids.listing(host, pool.world.vm_names, pool.world.now / NS)
        return pool.inspect(listing)

    def xl_destroy(self, host: str, domid: int) -> None:
        pool = self.pool
        assert pool is not None
        if host not in self.hosts:
            raise LabError("no lab host %r" % host)
        if domid == 0:
            raise LabError("cannot destroy domain 0")

        def destroy() -> None:
            uuid = self.domain_ids.uuid_of(host, domid)
            if uuid is None or not pool.world.hosts[host].running:
                raise LabError("invalid domain identifier %d" % domid)
            pool.world.destroy_domain(host, uuid, cause="xl destroy")
            pool.model.on_domain_died(host, uuid)
        pool.inspect(destroy)

    def status(self) -> Dict[str, Any]:
        pool = self.pool
        assert pool is not None
        with self.lock:
            def truth() -> Dict[str, Any]:
                world = pool.world
                return {h: {"power": world.hosts[h].power,
                            "role": pool.model.role(h),
                            "xapi": pool.model.xapi_state(h),
                            "pool_conf": pool_conf_text(*pool.model.pool_conf(h)),
                            "domains": sorted(world.vm_names[v] for v in world.hosts[h].domains)}
                        for h in HOSTS}
            hosts = pool.inspect(truth)
            for h, lab_host in self.hosts.items():
                daemon = lab_host.daemon
                hosts[h].update({
                    "state": lab_host.state,
                    "address": host_address(h),
                    "ports": {nic(n): up for n, up in lab_host.ports.items()},
                    "daemon_pid": None if daemon is None else daemon.pid,
                    "daemon_stalled": bool(daemon is not None and daemon.stopped_by_signal),
                    "daemon_starts": lab_host.daemon_starts,
                    "last_decision": None if daemon is None else daemon.last_decision,
                    "mode": None if daemon is None else daemon.last_mode,
                    "resets": [list(r) for r in lab_host.resets],
                    "watchdog_armed": bool(lab_host.watchdog is not None
                                           and lab_host.watchdog.armed),
                })
            return {"hosts": hosts, "gateway_up": self.gateway_up,
                    "partitioned": self.partitioned, "vms": list(self.vm_names),
                    "protected": list(self.vm_names), "peer": {h: peer_of(h) for h in HOSTS},
                    "timings": self.options.timings, "wall": time.time()}

    # --- stop ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything the controller runs (the network itself is `down`'s)."""
        with self.lock:
            for lab_host in self.hosts.values():
                lab_host.state = "off"
                try:
                    self._kill_host_processes(lab_host)
                except netns.LabNetworkError as exc:
                    self.note("closing %s: %s" % (lab_host.name, exc))
                if lab_host.watchdog is not None:
                    lab_host.watchdog.stop()
                    lab_host.watchdog = None
                if lab_host.forwarder is not None:
                    lab_host.forwarder.stop()
                if lab_host.worker is not None:
                    lab_host.worker.stop()
        if self.control is not None:
            self.control.close()
        if self.pool is not None:
            self.pool.stop()
        self.note("controller stopped")


def main(directory: str) -> int:
    """`python -m simulations.lab controller --dir D`: run inside the lab's ctl namespace."""
    from simulations.lab.layout import Manifest

    manifest = Manifest.load(directory)
    options = Options(**manifest.data["options"])
    controller = Controller(manifest.layout, options)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: controller.stopping.set())
    try:
        controller.start()
    except Exception:
        controller.note("controller failed to start:\n%s" % traceback.format_exc())
        controller.close()
        return 1
    with open(manifest.layout.path("controller.ready"), "w") as handle:
        json.dump({"pid": os.getpid()}, handle)
    controller.run()
    controller.close()
    return 0
