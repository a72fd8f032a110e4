"""The fault vocabulary of the scenario format, applied to the world: onset, and heal.

Every kind in simulations.scenario.KINDS has an onset here; a kind the simulator does not know
is rejected when the scenario is read, never skipped.
"""
from typing import Callable, Dict, List, Optional, Tuple

from halizard.core.pool import KEY_ENABLED, KEY_MAINTENANCE_PREFIX
from simulations.executor import SimDaemon
from simulations.scenario import Fault
from simulations.world.network import Link
from simulations.world.scheduler import NS, ns
from simulations.world.world import World
from simulations.xapi.fabric import Failure, Ok, Outcome

OPERATOR_RETRY = 5 * NS
OPERATOR_PATIENCE = 120 * NS


class Operator:
    """An administrator with the CLI on the management network: logs in to whichever host
    answers, follows HOST_IS_SLAVE to the master, and writes the pool's other_config. A newer
    request for a key replaces an older one still retrying (the administrator types the new
    command; the old one is not run again behind it)."""

    def __init__(self, world: World, log: Callable[[str], None]) -> None:
        self.world = world
        self.log = log
        self._requests: Dict[str, int] = {}  # key -> the number of its latest request

    def set_pool_key(self, key: str, value: Optional[str], started: Optional[int] = None,
                     request: Optional[int] = None) -> None:
        world = self.world
        started = world.now if started is None else started
        if request is None:
            request = self._requests.get(key, 0) + 1
            self._requests[key] = request
        elif request != self._requests.get(key):
            return  # replaced by a newer request for the same key
        xapi = world.xapi

        def retry(why: str) -> None:
            if world.now - started > OPERATOR_PATIENCE:
                self.log("operator gave up setting %s: %s" % (key, why))
                return
            world.scheduler.after(OPERATOR_RETRY, self.set_pool_key, key, value, started,
                                  request)

        candidates = [h for h in world.host_names
                      if world.hosts[h].running and world.network.nic_down[h] == 0]
        masters = [h for h in candidates if xapi.role(h) == "master" and xapi.accepts_writes(h)]
        if not masters:
            retry("no pool master answers")
            return
        host = masters[0]

        def logged_in(outcome: Outcome) -> None:
            if not isinstance(outcome, Ok):
                retry("login failed: %r" % (outcome,))
                return
            session = outcome.value

            def got_pools(outcome: Outcome) -> None:
                if not isinstance(outcome, Ok) or not outcome.value:
                    retry("pool.get_all failed: %r" % (outcome,))
                    return
                pool = outcome.value[0]

                def removed(_: Outcome) -> None:
                    if value is None:
                        self.log("operator removed %s" % key)
                        return

                    def added(outcome: Outcome) -> None:
                        if isinstance(outcome, Failure):
                            retry("add_to_other_config failed: %r" % (outcome,))
                        else:
                            self.log("operator set %s=%s" % (key, value))

                    xapi.call(host, "pool.add_to_other_config", [session, pool, key, value], added)

                xapi.call(host, "pool.remove_from_other_config", [session, pool, key], removed)

            xapi.call(host, "pool.get_all", [session], got_pools)

        xapi.call(host, "session.login_with_password",
                  [xapi.username, xapi.password, "1.0", "operator"], logged_in)


class FaultInjector:
    """Applies a scenario's faults to a world. ``daemons`` are the simulated daemons; the
    wire-level pool has none (the daemon under test runs outside it), and faults aimed at a
    daemon are then only noted."""

    def __init__(self, world: World, daemons: Dict[str, SimDaemon], operator: Operator) -> None:
        self.world = world
        self.daemons = daemons
        self.operator = operator
        self._saved: Dict[int, List[Tuple[Link, float, int, int]]] = {}
        # Overlapping operator actions count, like overlapping link faults: HA is back on (a host
        # out of maintenance) when the last of them heals.
        self._operator: Dict[Tuple[str, str], int] = {}

    def schedule(self, faults: Tuple[Fault, ...]) -> None:
        for i, fault in enumerate(faults):
            self.world.scheduler.at(ns(fault.at), self.onset, i, fault)
            if fault.heals_at is not None:
                self.world.scheduler.at(ns(fault.heals_at), self.heal, i, fault)

    # --- onset ---------------------------------------------------------------------------------

    def onset(self, i: int, fault: Fault) -> None:
        world = self.world
        net = world.network
        kind = fault.kind
        target = fault.target
        self.world.notify("fault", i, fault, "onset")
        if kind == "host.crash":
            world.power_off(target, "crash")
        elif kind == "host.power_on":
            world.power_on(target)
        elif kind == "host.reboot":
            world.reset(target, "reboot")
        elif kind == "host.freeze":
            world.freeze(target)
        elif kind == "host.shutdown":
            self._shutdown(target)
        elif kind == "nic.down":
            net.nic_down[target] += 1
            net.carrier_kept[target] = fault.param("carrier", "lost") == "kept"
        elif kind == "link.down":
            a, b = target.split("-")
            for link in self._links(fault, a, b, both=True):
                link.down += 1
        elif kind == "link.oneway":
            a, b = target.split(">")
            for link in self._links(fault, a, b, both=False):
                link.down += 1
        elif kind in ("link.loss", "link.latency"):
            a, b = target.split("-")
            links = self._links(fault, a, b, both=True)
            self._saved[i] = [(link, link.loss, link.latency, link.jitter) for link in links]
            for link in links:
                if kind == "link.loss":
                    link.loss = fault.param("loss", 0.0)
                else:
                    link.latency = ns(fault.param("latency", 0.0))
                    link.jitter = ns(fault.param("jitter", 0.0))
        elif kind == "gw.down":
            for g in self._gateways(target):
                net.gw_down[g] += 1
        elif kind == "gw.block":
            for g in net.gateway_names:
                net.gw_block[(g, target)] = net.gw_block.get((g, target), 0) + 1
        elif kind == "xapi.hang":
            until = None if fault.heals_at is None else ns(fault.heals_at)
            world.xapi.xapi_hang(target, until)
        elif kind == "xapi.restart":
            world.xapi.xapi_restart(target, ns(fault.duration or 30.0))
        elif kind == "daemon.crash":
            if self._daemon(target, fault):
                self.daemons[target].kill(restart=True)
        elif kind == "daemon.stall":
            if self._daemon(target, fault):
                self.daemons[target].stall(ns(fault.duration or 0.0))
        elif kind == "clock.jump":
            world.hosts[target].clock.jump(fault.param("by", 0.0))
        elif kind == "fence.unreachable":
            world.hosts[target].fence_reachable = False
        elif kind == "vm.start_fail":
            world.xapi.fail_next_starts(world.xapi.vm_uuid(target), fault.param("times", 1))
        elif kind == "op.maintenance":
            if self._operator_count(kind, target, +1) == 1:
                self.operator.set_pool_key(KEY_MAINTENANCE_PREFIX + world.hosts[target].uuid,
                                           "true")
        elif kind == "op.ha_disable":
            if self._operator_count(kind, target, +1) == 1:
                self.operator.set_pool_key(KEY_ENABLED, "false")
        else:  # parse_scenario rejects unknown kinds; this is a guard against drift
            raise ValueError("unknown fault kind %r" % kind)

    def heal(self, i: int, fault: Fault) -> None:
        world = self.world
        net = world.network
        kind = fault.kind
        target = fault.target
        self.world.notify("fault", i, fault, "heal")
        if kind in ("host.crash", "host.shutdown"):
            world.power_on(target)
        elif kind == "host.freeze":
            world.thaw(target)
            if target in self.daemons:
                self.daemons[target].thawed()
        elif kind == "nic.down":
            net.nic_down[target] -= 1
        elif kind == "link.down":
            a, b = target.split("-")
            for link in self._links(fault, a, b, both=True):
                link.down -= 1
        elif kind == "link.oneway":
            a, b = target.split(">")
            for link in self._links(fault, a, b, both=False):
                link.down -= 1
        elif kind in ("link.loss", "link.latency"):
            for link, loss, latency, jitter in self._saved.pop(i, []):
                link.loss, link.latency, link.jitter = loss, latency, jitter
        elif kind == "gw.down":
            for g in self._gateways(target):
                net.gw_down[g] -= 1
        elif kind == "gw.block":
            for g in net.gateway_names:
                net.gw_block[(g, target)] -= 1
        elif kind == "fence.unreachable":
            world.hosts[target].fence_reachable = True
        elif kind == "op.maintenance":
            if self._operator_count(kind, target, -1) == 0:
                self.operator.set_pool_key(KEY_MAINTENANCE_PREFIX + world.hosts[target].uuid,
                                           None)
        elif kind == "op.ha_disable":
            if self._operator_count(kind, target, -1) == 0:
                self.operator.set_pool_key(KEY_ENABLED, "true")
        # xapi.hang heals by itself (the model was given the end); daemon.stall likewise.

    # --- helpers ---------------------------------------------------------------------------------

    def _operator_count(self, kind: str, target: str, step: int) -> int:
        count = self._operator.get((kind, target), 0) + step
        self._operator[(kind, target)] = count
        return count

    def _links(self, fault: Fault, a: str, b: str, both: bool) -> List[Link]:
        net = self.world.network
        if b == "gw" or b.startswith("gw"):
            links = []
            for g in self._gateways(b):
                links.append(net.links[(a, g, 0)])
                links.append(net.links[(g, a, 0)])
            return links
        path = fault.param("path")
        index = None if path is None else path - 1
        if index is not None and index >= net.paths:
            return []
        return net.host_links(a, b, index, both)

    def _daemon(self, target: str, fault: Fault) -> bool:
        if target in self.daemons:
            return True
        self.operator.log("%s: no simulated daemon on %s" % (fault.label(), target))
        return False

    def _gateways(self, target: str) -> List[str]:
        names = self.world.network.gateway_names
        if target == "gw":
            return list(names)
        index = int(target[2:]) - 1
        return [names[index]] if index < len(names) else []

    def _shutdown(self, name: str) -> None:
        """`systemctl poweroff` from the shell, in the order of a XenServer host: halizard learns
        at once that the system is going down, hands the master role over and guards the
        guests while xapi stops them cleanly; systemd then stops halizard (which has exited by
        itself once no guest was left), then xapi, and the power goes."""
        world = self.world
        host = world.hosts[name]
        if host.power != "on":
            return
        daemon = self.daemons.get(name)

        def power_off() -> None:
            if host.power == "on":
                world.power_off(name, "shutdown")

        if daemon is None:  # the wire-level pool: no simulated daemon to wait for
            if world.xapi.xapi_state(name) in ("up", "emergency"):
                world.xapi.begin_clean_shutdown(name, power_off)
            else:
                power_off()
            return
        daemon.system_shutdown()
        if world.xapi.xapi_state(name) in ("up", "emergency"):
            world.xapi.begin_clean_shutdown(name, power_off,
                                            guests_stopped=lambda go_on: daemon.request_stop(go_on))
        else:
            daemon.request_stop(power_off)
