"""Safety invariants checked after every event, the fence oracle, liveness and the metrics.

Everything here is judged from the world's ground truth, never from what a daemon believes
(except where the invariant is *about* a belief: I2's "acting", I6's "believes").

    I1  no VM is live on two hosts (a frozen host's domains count as live: they will resume)
    I2  at most one acting master: xapi accepts writes as master AND its daemon, running and
        with a current decision, acts as master
    I3  a VM starts only after its previous copy is certainly dead (min margin is measured here)
    I4  only an acting master issues pool-level xapi actions
    I5  no action is performed on a stale decision, and no decision is made on stale reads
        (issued longer than the read budget before it: the loop reads again after a pause); the
        watchdog is only fed by a host that really had contact within its lease (or has no
        guests to protect)
    I6  no daemon believes its peer fenced while the peer is powered and running guests
    I7  the silence rules (docs/ARCHITECTURE.md section 6): a host starts its fence agent, or
        (without one) believes its peer dead or promotes itself, only once its peer has been
        silent for the configured delay (fence_due for its role, takeover_delay, promote_delay),
        stretched by the fastest clock rate; silence counted from the later of the latest packet
        from the peer its daemon received, the daemon's start, the end of a deafness (nothing
        from the peer and no gateway) or of a pause (freeze, stall) that lasted a lease, and the
        end of HA being off for it
    I8  the checker trusts no fence device: a device that answers "off" leaves its host without
        power (a world check: the daemon confirms with "status", so a lying "off" harms nobody
        here, but the fence oracle and I6 rely on the device's truth)

A fence (self-fence, watchdog reset, fence-agent power-off) is classified by the oracle as
justified, unjustified, or wrong victim, against the tolerances of halizard.core.timing.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from halizard import effects as fx
from halizard.core.config import Config
from halizard.core.evidence import gateway_policy_satisfied
from halizard.core.state import Mode
from halizard.core.timing import TimingBounds, read_budget
from simulations.executor import SimDaemon
from simulations.world.scheduler import NS, seconds
from simulations.world.world import World

MAX_RECORDED = 50


@dataclass(frozen=True)
class Violation:
    invariant: str
    t: float
    host: str
    detail: str


@dataclass(frozen=True)
class FenceRecord:
    t: float
    host: str
    kind: str  # "self-fence" | "watchdog" | "agent"
    by: str
    verdict: str  # "justified" | "unjustified" | "wrong-victim"
    why: str


class Checker:
    """An observer of the world (see World.notify) that checks invariants as events happen."""

    def __init__(self, world: World, config: Config, bounds: TimingBounds,
                 daemons: Dict[str, SimDaemon], protected: Set[str], restart_vms: Set[str]) -> None:
        self.world = world
        self.config = config
        self.bounds = bounds
        self.daemons = daemons
        self.protected = protected
        self.restart_vms = restart_vms
        self.violations: List[Violation] = []
        self.seen: Set[Tuple[str, str]] = set()
        self.fences: List[FenceRecord] = []
        self.margins: List[float] = []
        self.stuck_starts: Set[str] = set()  # VMs excused from liveness: start lost to a hung xapi
        self.isolated_since: Dict[str, Optional[int]] = {h: None for h in world.host_names}
        self.isolation_ended: Dict[str, Tuple[int, int]] = {}  # the last episode: (start, end)
        self.partitioned_since: Optional[int] = None
        self.stalled_since: Dict[str, int] = {}
        self.daemon_down_since: Dict[str, int] = {}
        self.modes: Dict[str, Mode] = {}
        # Hosts whose latest decision claims the master role / believes the peer fenced: I2
        # needs two of the former to be violated, I6 one of the latter, so most events need
        # no further look.
        self.claimants: Set[str] = set()
        self.believers: Set[str] = set()
        self.dirty = True
        self.first_fault: Optional[int] = None
        self.vm_down: Set[str] = set()
        self.went_down: Set[str] = set()
        self.failover: Optional[float] = None
        self.errors: List[str] = []
        # The longest a host may go without a real contact and still feed its watchdog: its
        # lease, stretched by the slowest clock rate the configuration allows.
        self._lease_ns = int((config.lease_timeout / (1.0 - bounds.rho) + 0.001) * NS)
        # I5: the longest a daemon's reads may take before it decides on them (true time).
        self._budget_ns = int((read_budget(config) / (1.0 - bounds.rho) + 1e-6) * NS)
        # I7: from when each host's silence clock may count (ns), and what made it restart;
        # a deafness or a pause counts once it has lasted a whole lease on the slowest clock
        # (then the daemon certainly lost its lease, or saw the hole: evidence.lease_gap).
        self.hearing_from: Dict[str, Tuple[int, str]] = {h: (0, "start") for h in world.host_names}
        self.deaf_since: Dict[str, Optional[int]] = {h: None for h in world.host_names}
        self._whole_lease_ns = int(config.lease_timeout / (1.0 - bounds.rho) * NS) + 1
        self._stalls: Dict[str, Tuple[int, int]] = {}  # host -> (onset, daemon generation)
        self._freezes: Dict[str, int] = {}

    # --- recording --------------------------------------------------------------------------

    def violate(self, invariant: str, host: str, detail: str) -> None:
        key = (invariant, host)
        if key in self.seen or len(self.violations) >= MAX_RECORDED:
            return
        self.seen.add(key)
        self.violations.append(Violation(invariant, seconds(self.world.now), host, detail))

    def _current(self, daemon: SimDaemon) -> Any:
        """The daemon's decision, if it is a current belief: the process runs, is not paused,
        and decided within the longest cycle. A stalled daemon's last decision is not."""
        if not daemon.alive or daemon.decision is None or daemon._paused():
            return None
        host = self.world.hosts[daemon.name]
        now = host.clock.monotonic(self.world.now)
        if now - daemon.decision.at > self.bounds.cycle_max + self.config.probe_interval:
            return None
        return daemon.decision

    # --- observer callbacks (World.notify) ------------------------------------------------------

    def domain_started(self, t: int, host: str, vm: str, others: List[str],
                       migrated: bool) -> None:
        live_elsewhere = [h for h in others if h != host]
        if live_elsewhere:
            self.violate("I1", host, "%s started on %s while live on %s"
                         % (self._vm_name(vm), host, ", ".join(live_elsewhere)))
            self.violate("I3", host, "%s started on %s before its copy on %s was dead"
                         % (self._vm_name(vm), host, ", ".join(live_elsewhere)))
        elif vm in self.world.last_death and not migrated:
            self.margins.append(seconds(t - self.world.last_death[vm]))
        self._vm_liveness(vm)

    def domain_stopped(self, t: int, host: str, vm: str, cause: str) -> None:
        if cause != "migrated":  # a live migration moves a running VM: it never stops
            self._vm_liveness(vm)

    def host_power(self, t: int, host: str, state: str, cause: str) -> None:
        self.dirty = True
        if state == "off":
            self.daemon_down_since.setdefault(host, t)
        for vm in self.world.hosts[host].domains:
            self._vm_liveness(vm)

    def host_frozen(self, t: int, host: str, frozen: bool) -> None:
        self.dirty = True
        if not frozen:
            since = self._freezes.pop(host, None)
            if since is not None:
                self._paused(host, since, t, "a freeze")
        else:
            self._freezes[host] = t
        for vm in sorted(self.world.hosts[host].domains):
            self._vm_liveness(vm)

    def fault(self, t: int, index: int, fault: Any, phase: str) -> None:
        self.dirty = True
        if phase == "onset" and self.first_fault is None:
            self.first_fault = t
        if fault.kind == "daemon.stall" and fault.target in self.daemons:
            daemon = self.daemons[fault.target]
            if phase == "onset":
                self.stalled_since[fault.target] = t
                if daemon.alive:
                    self._stalls[fault.target] = (t, daemon.generation)
            else:
                stall = self._stalls.pop(fault.target, None)
                if stall is not None and stall[1] == daemon.generation:
                    self._paused(fault.target, stall[0], t, "a stall")

    def daemon(self, t: int, host: str, what: str) -> None:
        self.claimants.discard(host)
        self.believers.discard(host)
        if what == "started":
            self.daemon_down_since.pop(host, None)
            self.modes.pop(host, None)
            self.hearing_from[host] = (t, "the daemon's start")
        else:
            self.daemon_down_since.setdefault(host, t)

    def daemon_error(self, t: int, host: str, error: str) -> None:
        self.violate("BUG", host, "the daemon raised %s" % error)

    def decision(self, t: int, host: str, decision: Any) -> None:
        daemon = self.daemons[host]
        if t - daemon.reads_at > self._budget_ns:
            self.violate("I5", host, "decided on reads issued %.2fs before (read budget %.2fs)"
                         % (seconds(t - daemon.reads_at), read_budget(self.config)))
        previous = self.modes.get(host)
        if previous is Mode.DISABLED:  # HA was off for it: the peer's silence proved nothing
            self._hear_from(host, t, "HA off")
        if decision.peer_dead and host not in self.believers and self.config.fence_agent is None:
            self._silence_rule(host, "believes its peer dead", self.config.takeover_delay,
                               "takeover_delay")
        (self.claimants.add if decision.acting_master else self.claimants.discard)(host)
        (self.believers.add if decision.peer_dead else self.believers.discard)(host)
        self.modes[host] = decision.mode
        if decision.mode is Mode.ISOLATED and previous is not Mode.ISOLATED:
            self._classify(host, "self-fence", host)

    def fence(self, t: int, host: str, kind: str, by: str) -> None:
        self._classify(host, kind, by)

    def action(self, t: int, host: str, effect: Any, stale: bool, monotonic: float) -> None:
        if stale:
            return
        daemon = self.daemons[host]
        decision = daemon.decision
        valid_until = getattr(effect, "valid_until", None)
        if valid_until is not None and monotonic > valid_until:
            self.violate("I5", host, "%s performed after its deadline" % type(effect).__name__)
        kind = type(effect)
        if kind is fx.StartFence:
            master = decision is not None and decision.state.role is not None \
                and decision.state.role.is_master
            due = self.config.peer_timeout + (0.0 if master else self.config.fence_delay)
            self._silence_rule(host, "starts its fence agent", due, "peer_timeout" if master
                               else "peer_timeout + fence_delay (a slave: the tie-break)")
        elif kind is fx.XapiCall and effect.method == "pool.emergency_transition_to_master" \
                and self.config.fence_agent is None:
            self._silence_rule(host, "promotes itself", self.config.promote_delay,
                               "promote_delay")
        if kind is fx.XapiCall and fx.pool_action(effect.method):
            # Judged on the role the daemon could know: its xapi's when it read its role this
            # cycle. A role lost between that read and the call (a hand-over committing) cannot
            # be known in time by any daemon, and is harmless: a xapi that is no longer master
            # refuses the call (HOST_IS_SLAVE, or no connection while it restarts). R024.
            master = self.world.xapi.role(host) == "master" or daemon.master_at_read
            if not master or decision is None or not decision.acting_master:
                self.violate("I4", host, "%s issued by a host that is not the acting master"
                             % effect.method)
        if kind is fx.WatchdogControl and effect.op in ("arm", "feed"):
            self._check_feed(host, decision)

    def fence_answer(self, t: int, host: str, action: str, result: str) -> None:
        if action == "off" and result == "off" and self.world.hosts[host].power != "off":
            self.violate("I8", host, "its fence device answered off while it still has power")

    # --- I7: the silence rules ----------------------------------------------------------------

    def _hear_from(self, host: str, t: int, why: str) -> None:
        if t >= self.hearing_from[host][0]:
            self.hearing_from[host] = (t, why)

    def _paused(self, host: str, since: int, until: int, what: str) -> None:
        if until - since >= self._whole_lease_ns:
            self._hear_from(host, until, "the end of %s of %.1fs" % (what, seconds(until - since)))

    def _silence_rule(self, host: str, act: str, delay: float, name: str) -> None:
        """``host`` does ``act``, which the timing rules allow only after ``delay`` seconds of
        its peer's silence on its own clock: at least delay / (1 + rho) true seconds."""
        if self.dirty:
            self._structure()
        daemon = self.daemons[host]
        since, why = self.hearing_from[host]
        if daemon.peer_heard >= since:
            since, why = daemon.peer_heard, "the last packet from its peer"
        silent = self.world.now - since
        if silent * (1.0 + self.bounds.rho) < int(delay * NS) - 1000:
            self.violate("I7", host, "%s after %.2fs of silence (from %s at %.2fs); %s is %.1fs"
                         % (act, seconds(silent), why, seconds(since), name, delay))

    # --- after every event ------------------------------------------------------------------

    def after_event(self) -> None:
        world = self.world
        if self.dirty:
            self._structure()
        if len(self.claimants) < 2 and not self.believers:
            return
        acting = []
        for name, daemon in self.daemons.items():
            decision = self._current(daemon)
            if decision is None:
                continue
            if decision.acting_master and world.hosts[name].running and \
                    world.xapi.accepts_writes(name):
                acting.append(name)
            if decision.peer_dead:
                peer = world.hosts[world.peer_of(name)]
                if peer.power == "on" and peer.domains:
                    self.violate("I6", name, "believes %s fenced (%s) while it runs %d guests"
                                 % (peer.name, decision.state.peer_dead_reason, len(peer.domains)))
        if len(acting) > 1:
            self.violate("I2", acting[0], "two acting masters: %s" % ", ".join(sorted(acting)))

    # --- pieces ---------------------------------------------------------------------------------

    def _vm_name(self, vm: str) -> str:
        return self.world.vm_names.get(vm, vm)

    def _vm_liveness(self, vm: str) -> None:
        """Failover bookkeeping: a restart-policy VM is up when a running host runs it."""
        if vm not in self.restart_vms:
            return
        up = any(self.world.hosts[h].running for h in self.world.vm_hosts.get(vm, ()))
        if up:
            self.vm_down.discard(vm)
            if not self.vm_down and self.went_down and self.failover is None \
                    and self.first_fault is not None:
                self.failover = seconds(self.world.now - self.first_fault)
        else:
            self.vm_down.add(vm)
            if self.first_fault is not None and self.failover is None:
                self.went_down.add(vm)

    def _structure(self) -> None:
        """Track, from the network's structure, which hosts are isolated or partitioned."""
        self.dirty = False
        world = self.world
        net = world.network
        now = world.now
        a, b = world.host_names
        up = world.hosts[a].running and world.hosts[b].running and any(
            net.path_up(a, b, p) for p in range(net.paths))
        if up:
            self.partitioned_since = None
        elif self.partitioned_since is None:
            self.partitioned_since = now
        for h in world.host_names:
            peer = world.peer_of(h)
            sees_peer = world.hosts[peer].running and any(
                net.path_up(h, peer, p) for p in range(net.paths))
            gws = sum(1 for g in net.gateway_names if net.gateway_up_for(h, g))
            sees_gw = gateway_policy_satisfied(self.config.gateway_policy, gws, len(net.gateway_names))
            isolated = not sees_peer and not sees_gw
            # Deaf: nothing from the peer can reach it (not even one way) and no gateway answers.
            deaf = not sees_gw and not (world.hosts[peer].running and any(
                net.nic_up(h, p) and net.nic_up(peer, p) and net.links[(peer, h, p)].down == 0
                and net.links[(peer, h, p)].loss < 1.0 for p in range(net.paths)))
            deaf_since = self.deaf_since[h]
            if deaf and deaf_since is None:
                self.deaf_since[h] = now
            elif not deaf and deaf_since is not None:
                self.deaf_since[h] = None
                if now - deaf_since >= self._whole_lease_ns:
                    self._hear_from(h, now, "the end of its deafness of %.1fs"
                                    % seconds(now - deaf_since))
            if not isolated:
                since = self.isolated_since[h]
                if since is not None:
                    self.isolation_ended[h] = (since, now)
                self.isolated_since[h] = None
            elif self.isolated_since[h] is None:
                self.isolated_since[h] = now

    def _lasted(self, since: Optional[int], tolerance: float) -> bool:
        return since is not None and self.world.now - since >= int(tolerance * NS)

    def _just_isolated(self, host: str) -> bool:
        """An isolation long enough to justify a self-fence that ended so recently that the
        daemon may still be deciding on a probe round that began before it ended (probe rounds
        see no contact that returns after they began)."""
        episode = self.isolation_ended.get(host)
        if episode is None:
            return False
        start, end = episode
        return end - start >= int(self.bounds.isolation_tolerance * NS) and \
            self.world.now - end <= int(self.bounds.skew * NS)

    def _classify(self, host: str, kind: str, by: str) -> None:
        world = self.world
        if self.dirty:
            self._structure()
        h = world.hosts[host]
        b = self.bounds
        frozen = h.frozen_since
        daemon = self.daemons[host]
        stalled = self.stalled_since.get(host) if daemon._paused() and frozen is None else None
        down = self.daemon_down_since.get(host)
        why = ""
        if h.power != "on" and kind == "agent":
            why = "the host had no power"
        elif self._lasted(self.isolated_since[host], b.isolation_tolerance):
            why = "isolated for %.1fs" % seconds(world.now - (self.isolated_since[host] or 0))
        elif self._just_isolated(host):
            start, end = self.isolation_ended[host]
            why = "isolated for %.1fs until %.1fs before (decided on a round begun before contact " \
                  "returned)" % (seconds(end - start), seconds(world.now - end))
        elif self._lasted(frozen, b.freeze_tolerance):
            why = "frozen for %.1fs" % seconds(world.now - (frozen or 0))
        elif self._lasted(stalled, b.freeze_tolerance):
            why = "daemon stalled for %.1fs" % seconds(world.now - (stalled or 0))
        elif kind == "watchdog" and self._lasted(down, b.freeze_tolerance):
            why = "daemon not running for %.1fs" % seconds(world.now - (down or 0))
        elif kind == "agent" and self._lasted(self.partitioned_since,
                                              self.config.peer_timeout - b.cycle_max):
            why = "hosts partitioned for %.1fs: one must go (tie-break)" % seconds(
                world.now - (self.partitioned_since or 0))
        if why:
            verdict = "justified"
        else:
            other = world.peer_of(host)
            verdict = "wrong-victim" if self.isolated_since[other] is not None else "unjustified"
            why = "no fault beyond its tolerance"
        self.fences.append(FenceRecord(seconds(world.now), host, kind, by, verdict, why))

    def _check_feed(self, host: str, decision: Any) -> None:
        world = self.world
        h = world.hosts[host]
        if not h.domains:
            return
        last = world.last_contact.get(host)
        if last is None or world.now - last > self._lease_ns:
            self.violate("I5", host, "watchdog fed %s after the last real contact (lease %.1fs)"
                         % ("never" if last is None else "%.2fs" % seconds(world.now - last),
                            self.config.lease_timeout))

    # --- end of run -----------------------------------------------------------------------------

    def acting_masters(self) -> List[str]:
        """Hosts whose xapi accepts writes as master and whose daemon acts as master."""
        world = self.world
        return [h for h in world.host_names if world.hosts[h].running
                and world.xapi.accepts_writes(h) and self.daemons[h].alive
                and self.daemons[h].decision is not None and self.daemons[h].decision.acting_master]

    def liveness(self, label: str) -> Optional[str]:
        """None if the pool is restored: every restart VM runs exactly once, on a running host,
        and exactly one acting master; otherwise why not. Vacuous without a healthy host."""
        world = self.world
        healthy = [h for h in world.host_names if world.hosts[h].running
                   and self.daemons[h].alive and self.isolated_since[h] is None]
        if not healthy:
            return None
        problems = []
        stuck = world.xapi.stuck_starts()
        for vm in sorted(self.restart_vms):
            hosts = [h for h in world.vm_hosts.get(vm, ()) if world.hosts[h].running]
            if not hosts and vm in stuck:
                # Its start went to a host whose xapi hung, and xapi holds the VM in that
                # start for good: restarting it anywhere else could run it twice once the
                # start completes, so a safe daemon waits (BENCHMARKS.md, finding 4).
                self.stuck_starts.add(vm)
                continue
            if len(hosts) != 1:
                problems.append("%s runs on %d hosts" % (self._vm_name(vm), len(hosts)))
        masters = self.acting_masters()
        if len(masters) != 1:
            problems.append("%d acting masters" % len(masters))
        if problems:
            return "%s: %s" % (label, "; ".join(problems))
        return None
