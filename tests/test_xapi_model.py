"""The xapi behaviour model against research/xenapi.md §4 and the behaviours §7.6 says to pin.

Every test drives the model in virtual time (the real Scheduler) through a small fake fabric:
power and freeze flags, a set of cut links, and the domains really running on each host.
"""
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest

from simulations.world.rng import Streams
from simulations.world.scheduler import Scheduler, ns, seconds
from simulations.xapi.fabric import Failure, Ok, Outcome, Refused, Reset
from simulations.xapi.model import (
    NULL_REF,
    HostSpec,
    VmSpec,
    XapiParams,
    XapiPool,
)

pytestmark = pytest.mark.runtime

GiB = 1 << 30
USER, PASSWORD = "root", "halizard-sim"
ADDRESS = {"A": "10.0.0.1", "B": "10.0.0.2"}
UUID = {
    "A": "aaaaaaaa-0000-4000-8000-000000000001",
    "B": "bbbbbbbb-0000-4000-8000-000000000002",
    "vm1": "11111111-0000-4000-8000-000000000001",
    "vm2": "22222222-0000-4000-8000-000000000002",
    "vm3": "33333333-0000-4000-8000-000000000003",
    "vm4": "44444444-0000-4000-8000-000000000004",
    "big": "99999999-0000-4000-8000-000000000009",
}
STEP = ns(0.01)


class FakeFabric:
    """Ground truth: power, freezes, cut links, domains."""

    def __init__(self, seed: int, hosts: List[str]) -> None:
        self.streams = Streams(seed)
        self.powered = {h: True for h in hosts}
        self.frozen = {h: False for h in hosts}
        self.cut: Set[Tuple[str, str]] = set()
        self.doms: Dict[str, Set[str]] = {h: set() for h in hosts}

    def host_running(self, host: str) -> bool:
        return self.powered[host] and not self.frozen[host]

    def connected(self, a: str, b: str) -> bool:
        return (self.host_running(a) and self.host_running(b)
                and (min(a, b), max(a, b)) not in self.cut)

    def domains(self, host: str) -> List[str]:
        return sorted(self.doms[host])

    def create_domain(self, host: str, vm_uuid: str) -> None:
        self.doms[host].add(vm_uuid)

    def destroy_domain(self, host: str, vm_uuid: str) -> None:
        self.doms[host].discard(vm_uuid)

    def move_domain(self, src: str, dst: str, vm_uuid: str) -> None:
        self.doms[src].discard(vm_uuid)
        self.doms[dst].add(vm_uuid)

    def stream(self, name: str) -> Any:
        return self.streams(name)


class Box:
    """One call's outcome and the virtual time it arrived."""

    def __init__(self) -> None:
        self.outcome: Optional[Outcome] = None
        self.at: Optional[float] = None


def default_vms() -> List[VmSpec]:
    return [
        VmSpec("vm1", UUID["vm1"], "A", 2 * GiB),
        VmSpec("vm2", UUID["vm2"], "B", 2 * GiB),
        VmSpec("vm3", UUID["vm3"], None, 2 * GiB),
    ]


class Sim:
    """A two-host pool (A master, B slave) with client helpers."""

    def __init__(self, seed: int = 1, vms: Optional[List[VmSpec]] = None,
                 params: Optional[XapiParams] = None) -> None:
        self.clock = Scheduler()
        self.net = FakeFabric(seed, ["A", "B"])
        hosts = [HostSpec(h, UUID[h], ADDRESS[h], 16 * GiB, 1 * GiB) for h in ("A", "B")]
        self.vms = default_vms() if vms is None else vms
        self.pool = XapiPool(self.clock, self.net, hosts, "A", self.vms,
                             pool_other_config={"halizard": "true"},
                             params=params or XapiParams())
        for vm in self.vms:
            if vm.host:
                self.net.create_domain(vm.host, vm.uuid)

    # --- time ---

    @property
    def now(self) -> float:
        return seconds(self.clock.now())

    def run(self, secs: float) -> None:
        self.clock.run_until(self.clock.now() + ns(secs))

    def run_until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        end = self.clock.now() + ns(timeout)
        while not predicate() and self.clock.now() < end:
            self.clock.run_until(min(end, self.clock.now() + STEP))
        return predicate()

    # --- calls ---

    def send(self, host: str, method: str, *params: Any, transport: str = "tcp") -> Box:
        box = Box()

        def reply(outcome: Outcome) -> None:
            assert box.outcome is None, "answered twice"
            box.outcome = outcome
            box.at = self.now

        self.pool.call(host, method, list(params), reply, transport)
        assert box.outcome is None, "answered synchronously"
        return box

    def wait(self, box: Box, timeout: float = 30.0) -> Optional[Outcome]:
        self.run_until(lambda: box.outcome is not None, timeout)
        return box.outcome

    def call(self, host: str, method: str, *params: Any, transport: str = "tcp",
             timeout: float = 30.0) -> Optional[Outcome]:
        return self.wait(self.send(host, method, *params, transport=transport), timeout)

    def ok(self, host: str, method: str, *params: Any, transport: str = "tcp",
           timeout: float = 30.0) -> Any:
        outcome = self.call(host, method, *params, transport=transport, timeout=timeout)
        assert isinstance(outcome, Ok), "%s on %s: %r" % (method, host, outcome)
        return outcome.value

    def fails(self, host: str, method: str, *params: Any, transport: str = "tcp",
              timeout: float = 30.0) -> List[str]:
        outcome = self.call(host, method, *params, transport=transport, timeout=timeout)
        assert isinstance(outcome, Failure), "%s on %s: %r" % (method, host, outcome)
        return outcome.description

    def login(self, host: str) -> str:
        return str(self.ok(host, "session.login_with_password", USER, PASSWORD, "1.0", "test"))

    def local_login(self, host: str) -> str:
        return str(self.ok(host, "session.slave_local_login_with_password", USER, PASSWORD))

    def wait_for_login(self, host: str, timeout: float = 60.0) -> str:
        end = self.now + timeout
        while self.now < end:
            outcome = self.call(host, "session.login_with_password", USER, PASSWORD, timeout=10)
            if isinstance(outcome, Ok):
                return str(outcome.value)
            self.run(0.25)
        raise AssertionError("no login on %s within %ss" % (host, timeout))

    # --- the world ---

    def crash(self, host: str) -> None:
        self.net.powered[host] = False
        self.net.doms[host] = set()
        self.pool.on_host_power_off(host)

    def boot(self, host: str) -> None:
        self.net.powered[host] = True
        self.pool.on_host_boot(host)

    def partition(self) -> None:
        self.net.cut.add(("A", "B"))

    def heal(self) -> None:
        self.net.cut.discard(("A", "B"))

    # --- reading a master's DB ---

    def vm(self, host: str, session: str, name: str) -> Dict[str, Any]:
        return dict(self.ok(host, "VM.get_record", session, self.pool.vm_ref(name)))

    def live(self, host: str, session: str, of: str) -> bool:
        record = self.ok(host, "host.get_record", session, self.pool.host_ref(of))
        return bool(self.ok(host, "host_metrics.get_live", session, record["metrics"]))

    def enabled(self, host: str, session: str, of: str) -> bool:
        return bool(self.ok(host, "host.get_enabled", session, self.pool.host_ref(of)))


def promote(sim: Sim, host: str = "B") -> str:
    """The daemon's recipe: slave-local login, emergency transition, wait, log in as master."""
    local = sim.local_login(host)
    assert sim.ok(host, "pool.emergency_transition_to_master", local) == ""
    session = sim.wait_for_login(host)
    assert sim.pool.accepts_writes(host)
    return session


# --- sessions --------------------------------------------------------------------------------------


def test_login_on_slave_is_host_is_slave_even_with_wrong_password() -> None:
    sim = Sim()
    box = sim.send("B", "session.login_with_password", USER, "wrong", "1.0", "test")
    outcome = sim.wait(box)
    assert isinstance(outcome, Failure)
    assert outcome.description == ["HOST_IS_SLAVE", ADDRESS["A"]]
    assert box.at is not None and box.at < 0.1


def test_failed_login_on_master_costs_five_seconds() -> None:
    sim = Sim()
    box = sim.send("A", "session.login_with_password", USER, "wrong")
    assert sim.wait(box, timeout=4.9) is None
    outcome = sim.wait(box)
    assert isinstance(outcome, Failure)
    assert outcome.description == ["SESSION_AUTHENTICATION_FAILED", USER, "Authentication failure"]
    assert sim.fails("B", "session.slave_local_login_with_password", USER, "wrong")[0] \
        == "SESSION_AUTHENTICATION_FAILED"
    # root over the Unix socket is pre-authenticated
    assert sim.ok("A", "session.login_with_password", USER, "wrong", transport="unix")


def test_sessions_die_with_logout_and_are_host_local_when_slave_local() -> None:
    sim = Sim()
    session = sim.login("A")
    local = sim.local_login("B")
    assert sim.ok("B", "pool.get_all", local) == sim.ok("A", "pool.get_all", session)
    assert sim.fails("A", "pool.get_all", local) == ["SESSION_INVALID", local]
    # a DB session used on a slave over TCP
    assert sim.fails("B", "pool.get_all", session) == ["HOST_IS_SLAVE", ADDRESS["A"]]
    assert sim.ok("A", "session.logout", session) == ""
    assert sim.fails("A", "pool.get_all", session) == ["SESSION_INVALID", session]
    assert sim.ok("B", "session.local_logout", local) == ""
    assert sim.fails("B", "pool.get_all", local)[0] in ("SESSION_INVALID", "HOST_IS_SLAVE")


def test_dispatcher_errors() -> None:
    sim = Sim()
    session = sim.login("A")
    assert sim.fails("A", "VM.frobnicate", session) == ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]
    assert sim.fails("A", "VM.get_record", session, "x", "y") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "2"]
    assert sim.fails("A", "VM.get_all", "OpaqueRef:nope") == ["SESSION_INVALID", "OpaqueRef:nope"]
    assert sim.fails("A", "VM.get_record", session, "OpaqueRef:nope") == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert sim.fails("A", "host.get_by_uuid", session, "nope") == ["UUID_INVALID", "host", "nope"]
    assert sim.ok("A", "VM.get_by_uuid", session, UUID["vm1"]) == sim.pool.vm_ref("vm1")
    assert sim.fails("A", "Async.VM.get_record", session, "x")[0] == "Fault"
    assert sim.ok("A", "host.disable", session, sim.pool.host_ref("B"), True) == ""


def test_records_use_wire_types_and_get_all_records_is_cached() -> None:
    sim = Sim(vms=[VmSpec("vm1", UUID["vm1"], "A", 4 * GiB, order=2, start_delay=ns(30))])
    session = sim.login("A")
    records = sim.ok("A", "VM.get_all_records", session)
    vm1 = records[sim.pool.vm_ref("vm1")]
    assert (vm1["memory_static_max"], vm1["order"], vm1["start_delay"]) == (str(4 * GiB), "2", "30")
    assert vm1["power_state"] == "Running" and vm1["resident_on"] == sim.pool.host_ref("A")
    assert vm1["is_control_domain"] is False
    dom0s = [r for r in records.values() if r["is_control_domain"]]
    assert len(dom0s) == 2
    host = sim.ok("A", "host.get_record", session, sim.pool.host_ref("A"))
    assert host["address"] == ADDRESS["A"] and sim.pool.vm_ref("vm1") in host["resident_VMs"]
    pools = sim.ok("A", "pool.get_all_records", session)
    assert sim.ok("A", "VM.get_all_records", session) is records
    sim.ok("A", "VM.add_to_other_config", session, sim.pool.vm_ref("vm1"), "k", "v")
    assert sim.ok("A", "VM.get_all_records", session) is not records
    assert sim.ok("A", "pool.get_all_records", session) is pools
    assert records[sim.pool.vm_ref("vm1")]["other_config"] == {}  # old snapshots stay valid


def test_add_to_other_config_duplicate_key() -> None:
    sim = Sim()
    session = sim.login("A")
    pool = sim.ok("A", "pool.get_all", session)[0]
    assert sim.ok("A", "pool.add_to_other_config", session, pool, "epoch", "1") == ""
    assert sim.fails("A", "pool.add_to_other_config", session, pool, "epoch", "2") == [
        "MAP_DUPLICATE_KEY", "pool", "other_config", pool, "epoch"]
    assert sim.ok("A", "pool.remove_from_other_config", session, pool, "absent") == ""
    assert sim.ok("A", "pool.get_other_config", session, pool) == {
        "halizard": "true", "epoch": "1"}
    vm = sim.pool.vm_ref("vm1")
    sim.ok("A", "VM.add_to_other_config", session, vm, "k", "v")
    assert sim.fails("A", "VM.add_to_other_config", session, vm, "k", "w") == [
        "MAP_DUPLICATE_KEY", "VM", "other_config", vm, "k"]


# --- the master's loss and emergency transition ----------------------------------------------------


def test_master_crash_slave_hangs_then_emergency_transition() -> None:
    sim = Sim()
    old_master_session = sim.login("A")
    before = sim.local_login("B")
    assert len(sim.ok("B", "VM.get_all", before)) == 5  # forwarded to the master
    sim.crash("A")

    hung = sim.send("B", "VM.get_all_records", before)
    assert sim.wait(hung, timeout=120) is None
    assert sim.call("B", "Async.VM.start", before, sim.pool.vm_ref("vm3"), False, False,
                    timeout=10) is None
    sent = sim.now
    box = sim.send("B", "session.login_with_password", USER, PASSWORD)
    outcome = sim.wait(box)
    assert isinstance(outcome, Failure) and box.at is not None and box.at - sent < 0.1
    assert outcome.description == ["HOST_IS_SLAVE", ADDRESS["A"]]
    local = sim.local_login("B")
    assert sim.ok("B", "host.is_in_emergency_mode", local) is False
    assert sim.pool.xapi_state("B") == "up"

    assert sim.ok("B", "pool.emergency_transition_to_master", local) == ""
    transition = sim.now
    assert sim.pool.pool_conf("B") == (True, None)
    seen: List[Tuple[float, str]] = []
    session = None
    while session is None:
        outcome = sim.call("B", "session.login_with_password", USER, PASSWORD)
        seen.append((sim.now - transition, type(outcome).__name__))
        if isinstance(outcome, Ok):
            session = outcome.value
        sim.run(0.2)
        assert sim.now - transition < 60
    refused = [t for t, kind in seen if kind == "Refused"]
    assert refused and min(refused) >= 9.0
    assert all(kind == "Failure" for t, kind in seen if t < 9.0)  # HOST_IS_SLAVE until the fuse
    assert isinstance(hung.outcome, Reset)
    assert sim.fails("B", "pool.get_all", local) == ["SESSION_INVALID", local]
    assert sim.fails("B", "pool.get_all", old_master_session)[0] == "SESSION_INVALID"
    pool = sim.ok("B", "pool.get_all", session)[0]
    assert sim.ok("B", "pool.get_master", session, pool) == sim.pool.host_ref("B")
    assert sim.pool.role("B") == "master" and sim.pool.accepts_writes("B")


def test_new_master_view_of_the_lost_host() -> None:
    sim = Sim()
    sim.crash("A")
    session = promote(sim)
    promoted = sim.now
    vm1 = sim.pool.vm_ref("vm1")
    host_a = sim.pool.host_ref("A")
    assert sim.live("B", session, "A") is True
    assert (sim.vm("B", session, "vm1")["power_state"], sim.vm("B", session, "vm1")["resident_on"]) \
        == ("Running", host_a)
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "A")
    assert sim.fails("B", "VM.start_on", session, vm1, sim.pool.host_ref("B"), False, False) == [
        "VM_BAD_POWER_STATE", vm1, "halted", "running"]
    assert sim.fails("B", "VM.hard_shutdown", session, vm1) == ["CANNOT_CONTACT_HOST", host_a]

    box = sim.send("B", "VM.power_state_reset", session, vm1)
    assert isinstance(sim.wait(box), Ok) and box.at is not None
    assert box.at - promoted >= 3.0  # the connection attempt to the dead host timed out
    record = sim.vm("B", session, "vm1")
    assert (record["power_state"], record["resident_on"], record["domid"]) == (
        "Halted", NULL_REF, "-1")
    assert sim.ok("B", "VM.start_on", session, vm1, sim.pool.host_ref("B"), False, False) == ""
    assert UUID["vm1"] in sim.net.doms["B"]
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "B")
    assert sim.pool.vm_records("B")["vm2"] == ("Running", "B")

    # the 600 s liveness timer started with the new master
    sim.run(590 - (sim.now - promoted))
    assert sim.live("B", session, "A") is True
    sim.run(45)
    assert sim.live("B", session, "A") is False


def test_power_state_reset_refused_while_the_peer_answers() -> None:
    sim = Sim()
    session = sim.login("A")
    vm1, vm2 = sim.pool.vm_ref("vm1"), sim.pool.vm_ref("vm2")
    host_b = sim.pool.host_ref("B")
    assert sim.fails("A", "VM.power_state_reset", session, vm2) == ["HOST_IS_LIVE", host_b]
    assert sim.fails("A", "VM.power_state_reset", session, vm1) == ["DOMAIN_EXISTS", vm1]
    dom0 = sim.ok("A", "host.get_record", session, host_b)["control_domain"]
    assert sim.fails("A", "VM.power_state_reset", session, dom0) == [
        "CANNOT_RESET_CONTROL_DOMAIN", dom0]
    assert sim.fails("A", "host.declare_dead", session, host_b) == ["HOST_IS_LIVE", host_b]

    # B promoted behind a partition, then the partition heals: B answers, as a master
    sim.partition()
    promote(sim, "B")
    sim.heal()
    assert sim.pool.accepts_writes("A") and sim.pool.accepts_writes("B")
    assert sim.fails("A", "VM.power_state_reset", session, vm2) == ["HOST_IS_LIVE", host_b]

    # B's xapi refusing connections counts as dead: allowed at once
    sim.pool.xapi_restart("B", ns(30))
    box = sim.send("A", "VM.power_state_reset", session, vm2)
    start = sim.now
    assert isinstance(sim.wait(box), Ok) and box.at is not None and box.at - start < 0.1
    assert sim.vm("A", session, "vm2")["power_state"] == "Halted"


def test_declare_dead_resets_the_hosts_vms_and_disables_it() -> None:
    sim = Sim(vms=default_vms() + [VmSpec("vm4", UUID["vm4"], "B", GiB)])
    session = sim.login("A")
    host_b = sim.pool.host_ref("B")
    sim.crash("B")
    box = sim.send("A", "Async.host.declare_dead", session, host_b)
    task = sim.wait(box)
    assert isinstance(task, Ok)
    assert sim.ok("A", "task.get_status", session, task.value) == "pending"
    sim.run(4)
    assert sim.ok("A", "task.get_status", session, task.value) == "success"
    assert sim.ok("A", "task.get_result", session, task.value) == "<value></value>"
    for name in ("vm2", "vm4"):
        assert sim.pool.vm_records("A")[name] == ("Halted", None)
    assert sim.pool.vm_records("A")["vm1"] == ("Running", "A")
    assert sim.enabled("A", session, "B") is False
    assert sim.live("A", session, "B") is True  # declare_dead does not touch live


# --- stale backups -------------------------------------------------------------------------------


def _migrate_then_lose_master(sync: bool) -> Tuple[Sim, str]:
    sim = Sim()
    session = sim.login("A")
    pool = sim.ok("A", "pool.get_all", session)[0]
    sim.ok("A", "pool.add_to_other_config", session, pool, "epoch", "7")
    sim.ok("A", "VM.pool_migrate", session, sim.pool.vm_ref("vm1"), sim.pool.host_ref("B"), {})
    assert sim.net.doms["B"] == {UUID["vm1"], UUID["vm2"]}
    if sync:
        assert sim.ok("A", "pool.sync_database", session) == ""
    sim.run(10)
    sim.crash("A")
    return sim, promote(sim)


def test_stale_backup_loses_changes_and_kills_a_migrated_domain() -> None:
    sim, session = _migrate_then_lose_master(sync=False)
    pool = sim.ok("B", "pool.get_all", session)[0]
    assert "epoch" not in sim.ok("B", "pool.get_other_config", session, pool)
    assert UUID["vm1"] not in sim.net.doms["B"]  # "terminating to avoid data corruption"
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "A")


def test_sync_database_prevents_the_stale_backup_hazards() -> None:
    sim, session = _migrate_then_lose_master(sync=True)
    pool = sim.ok("B", "pool.get_all", session)[0]
    assert sim.ok("B", "pool.get_other_config", session, pool)["epoch"] == "7"
    assert UUID["vm1"] in sim.net.doms["B"]
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "B")


def test_periodic_push_refreshes_the_backup() -> None:
    sim = Sim()
    session = sim.login("A")
    pool = sim.ok("A", "pool.get_all", session)[0]
    sim.ok("A", "pool.add_to_other_config", session, pool, "epoch", "7")
    sim.run(300)
    sim.crash("A")
    session = promote(sim)
    assert sim.ok("B", "pool.get_other_config", session, pool)["epoch"] == "7"


# --- two masters and rejoining -------------------------------------------------------------------


def test_emergency_transition_while_the_old_master_is_reachable_demotes_back() -> None:
    sim = Sim()
    local = sim.local_login("B")
    assert sim.ok("B", "pool.emergency_transition_to_master", local) == ""
    sim.run(12)
    assert sim.run_until(lambda: sim.pool.xapi_state("B") == "up", timeout=30)
    assert sim.pool.pool_conf("B") == (False, ADDRESS["A"])
    assert sim.pool.role("B") == "slave" and not sim.pool.accepts_writes("B")
    assert sim.pool.accepts_writes("A")
    assert sim.fails("B", "session.login_with_password", USER, PASSWORD) == [
        "HOST_IS_SLAVE", ADDRESS["A"]]
    assert sim.net.doms["B"] == {UUID["vm2"]}


def test_emergency_transition_on_an_existing_master_restarts_it() -> None:
    sim = Sim()
    session = sim.login("A")
    local = sim.local_login("A")
    assert sim.ok("A", "pool.emergency_transition_to_master", local) == ""
    assert sim.ok("A", "pool.get_all", session)  # still serving during the fuse
    assert sim.run_until(lambda: sim.pool.xapi_state("A") == "restarting", timeout=11)
    new = sim.wait_for_login("A")
    assert sim.fails("A", "pool.get_all", session) == ["SESSION_INVALID", session]
    assert sim.pool.role("A") == "master" and sim.ok("A", "pool.get_all", new)


def test_old_master_returns_after_reboot_demotes_itself_and_joins() -> None:
    sim = Sim()
    sim.crash("A")
    session = promote(sim)
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "A")
    sim.boot("A")
    assert sim.run_until(lambda: sim.pool.pool_conf("A") == (False, ADDRESS["B"]), timeout=30)
    assert sim.run_until(lambda: sim.pool.xapi_state("A") == "up", timeout=30)
    assert sim.pool.role("A") == "slave"
    assert sim.pool.vm_records("B")["vm1"] == ("Halted", None)  # reset by A's resync
    assert sim.enabled("B", session, "A") is False
    assert sim.live("B", session, "A") is True
    sim.run(5)
    assert sim.enabled("B", session, "A") is True
    assert sim.fails("A", "session.login_with_password", USER, PASSWORD) == [
        "HOST_IS_SLAVE", ADDRESS["B"]]


def test_two_masters_after_a_partition_resolved_by_emergency_reset_master() -> None:
    sim = Sim(vms=default_vms() + [VmSpec("vm4", UUID["vm4"], "A", GiB)])
    a_session = sim.login("A")
    sim.partition()
    b_session = promote(sim, "B")
    for name in ("vm1", "vm4"):
        assert sim.ok("B", "VM.power_state_reset", b_session, sim.pool.vm_ref(name)) == ""
    assert sim.ok("B", "VM.start_on", b_session, sim.pool.vm_ref("vm1"), sim.pool.host_ref("B"),
                  False, False) == ""
    assert UUID["vm1"] in sim.net.doms["A"] and UUID["vm1"] in sim.net.doms["B"]  # split brain

    sim.heal()
    pool = sim.ok("A", "pool.get_all", a_session)[0]
    assert sim.ok("A", "pool.get_master", a_session, pool) == sim.pool.host_ref("A")
    assert sim.ok("B", "pool.get_master", b_session, pool) == sim.pool.host_ref("B")
    assert sim.pool.accepts_writes("A") and sim.pool.accepts_writes("B")

    local = sim.local_login("A")
    assert sim.ok("A", "pool.emergency_reset_master", local, ADDRESS["B"]) == ""
    assert sim.pool.pool_conf("A") == (False, ADDRESS["B"])
    assert sim.run_until(lambda: sim.pool.xapi_state("A") == "up"
                         and sim.pool.role("A") == "slave", timeout=30)
    assert not sim.pool.accepts_writes("A")
    assert UUID["vm1"] not in sim.net.doms["A"]  # the duplicate is killed on join
    assert UUID["vm1"] in sim.net.doms["B"]
    assert UUID["vm4"] in sim.net.doms["A"]  # reset but not restarted: adopted
    assert sim.pool.vm_records("B")["vm4"] == ("Running", "A")
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "B")
    # already a slave of that address: a no-op (no restart)
    local = sim.local_login("A")
    assert sim.ok("A", "pool.emergency_reset_master", local, ADDRESS["B"]) == ""
    sim.run(15)
    assert sim.ok("A", "host.is_in_emergency_mode", local) is False


def test_slave_restarted_while_the_master_is_down_enters_emergency_mode() -> None:
    sim = Sim()
    sim.crash("A")
    sim.pool.xapi_restart("B", ns(2))
    sim.run(3)
    assert sim.pool.xapi_state("B") == "emergency"
    assert sim.fails("B", "session.login_with_password", USER, PASSWORD) == ["HOST_STILL_BOOTING"]
    local = sim.local_login("B")
    assert sim.ok("B", "host.is_in_emergency_mode", local) is True
    assert sim.fails("B", "VM.get_all", local) == ["HOST_STILL_BOOTING"]

    sim.boot("A")
    assert sim.run_until(lambda: sim.pool.xapi_state("B") == "up", timeout=30)
    assert sim.pool.role("B") == "slave" and sim.pool.role("A") == "master"
    local = sim.local_login("B")
    assert sim.ok("B", "host.is_in_emergency_mode", local) is False
    assert sim.fails("B", "session.login_with_password", USER, PASSWORD) == [
        "HOST_IS_SLAVE", ADDRESS["A"]]
    session = sim.login("A")
    assert sim.pool.vm_records("A")["vm1"] == ("Halted", None)  # A rebooted: its domain is gone
    assert sim.pool.vm_records("A")["vm2"] == ("Running", "B")
    assert sim.live("A", session, "B") is True


def test_unix_login_on_an_orphaned_slave_hangs() -> None:
    sim = Sim()
    sim.crash("A")
    assert sim.call("B", "session.login_with_password", USER, PASSWORD, transport="unix",
                    timeout=60) is None
    assert sim.ok("B", "session.slave_local_login_with_password", USER, PASSWORD,
                  transport="unix")


def test_designate_new_master_swaps_roles() -> None:
    sim = Sim()
    session = sim.login("A")
    pool = sim.ok("A", "pool.get_all", session)[0]
    sim.ok("A", "pool.add_to_other_config", session, pool, "epoch", "3")
    assert sim.ok("A", "pool.designate_new_master", session, sim.pool.host_ref("B")) == ""
    new = sim.wait_for_login("B")
    assert sim.pool.pool_conf("B") == (True, None)
    assert sim.pool.pool_conf("A") == (False, ADDRESS["B"])
    assert sim.run_until(lambda: sim.pool.xapi_state("A") == "up", timeout=30)
    assert sim.ok("B", "pool.get_master", new, pool) == sim.pool.host_ref("B")
    assert sim.ok("B", "pool.get_other_config", new, pool)["epoch"] == "3"
    assert sim.fails("A", "session.login_with_password", USER, PASSWORD) == [
        "HOST_IS_SLAVE", ADDRESS["B"]]
    assert sim.fails("A", "pool.get_all", session) == ["SESSION_INVALID", session]
    assert sim.pool.vm_records("B")["vm1"] == ("Running", "A")
    assert sim.net.doms == {"A": {UUID["vm1"]}, "B": {UUID["vm2"]}}

    sim.partition()
    assert sim.fails("B", "pool.designate_new_master", new, sim.pool.host_ref("A")) == [
        "CANNOT_CONTACT_HOST", sim.pool.host_ref("A")]


# --- VM lifecycle --------------------------------------------------------------------------------


def test_start_on_checks_in_order() -> None:
    vms = default_vms() + [VmSpec("big", UUID["big"], None, 14 * GiB),
                           VmSpec("vm4", UUID["vm4"], None, 12 * GiB)]
    sim = Sim(vms=vms)
    session = sim.login("A")
    host_b = sim.pool.host_ref("B")
    vm1, vm3, big, vm4 = (sim.pool.vm_ref(n) for n in ("vm1", "vm3", "big", "vm4"))

    def start_on(vm: str) -> List[str]:
        return sim.fails("A", "VM.start_on", session, vm, host_b, False, False)

    assert start_on(vm1) == ["VM_BAD_POWER_STATE", vm1, "halted", "running"]
    # B: 16 GiB - 1 GiB dom0 - 2 GiB vm2 = 13 GiB free
    assert start_on(big) == ["HOST_NOT_ENOUGH_FREE_MEMORY", str(14 * GiB), str(13 * GiB)]
    first = sim.wait(sim.send("A", "Async.VM.start_on", session, vm3, host_b, False, False))
    assert isinstance(first, Ok)
    assert start_on(vm3) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm3, "start_on", first.value]
    # the start in flight already holds its memory: 13 - 2 = 11 GiB
    assert start_on(vm4) == ["HOST_NOT_ENOUGH_FREE_MEMORY", str(12 * GiB), str(11 * GiB)]
    sim.run(3)
    assert sim.ok("A", "task.get_status", session, first.value) == "success"

    sim.ok("A", "host.disable", session, host_b)
    assert start_on(big) == ["HOST_DISABLED", host_b]  # before the memory check
    sim.ok("A", "host.enable", session, host_b)

    assert sim.ok("A", "VM.hard_shutdown", session, vm1) == ""
    sim.partition()
    assert start_on(vm4) == ["HOST_NOT_ENOUGH_FREE_MEMORY", str(12 * GiB), str(11 * GiB)]
    assert start_on(vm1) == ["CANNOT_CONTACT_HOST", host_b]  # after the memory check
    sim.heal()

    sim.pool.fail_next_starts(UUID["vm1"], 1)
    assert start_on(vm1) == ["SR_BACKEND_FAILURE_46", "", "The VDI is not available"]
    assert sim.ok("A", "VM.start_on", session, vm1, host_b, False, False) == ""
    assert sim.net.doms["B"] == {UUID["vm1"], UUID["vm2"], UUID["vm3"]}

    done: List[str] = []
    sim.pool.begin_clean_shutdown("B", lambda: done.append("B"))
    assert sim.run_until(lambda: bool(done), timeout=10)
    assert sim.enabled("A", session, "B") is False
    assert start_on(vm4) == ["HOST_NOT_LIVE"]  # before HOST_DISABLED


def test_vm_start_places_on_the_host_with_most_free_memory() -> None:
    vms = [VmSpec("vm1", UUID["vm1"], "A", 6 * GiB), VmSpec("vm2", UUID["vm2"], "B", 2 * GiB),
           VmSpec("vm3", UUID["vm3"], None, 2 * GiB), VmSpec("big", UUID["big"], None, 15 * GiB)]
    sim = Sim(vms=vms)
    session = sim.login("A")
    assert sim.ok("A", "VM.start", session, sim.pool.vm_ref("vm3"), False, False) == ""
    assert sim.pool.vm_records("A")["vm3"] == ("Running", "B")
    assert sim.fails("A", "VM.start", session, sim.pool.vm_ref("big"), False, False) == [
        "NO_HOSTS_AVAILABLE"]


def test_async_start_task_lifecycle() -> None:
    vms = default_vms() + [VmSpec("vm4", UUID["vm4"], None, GiB, start_delay=ns(30))]
    sim = Sim(vms=vms)
    session = sim.login("A")
    vm1, vm4 = sim.pool.vm_ref("vm1"), sim.pool.vm_ref("vm4")
    host_b = sim.pool.host_ref("B")

    task = sim.ok("A", "Async.VM.start_on", session, vm4, host_b, False, False)
    assert task.startswith("OpaqueRef:")
    record = sim.ok("A", "task.get_record", session, task)
    assert (record["status"], record["name_label"]) == ("pending", "Async.VM.start_on")
    assert sim.run_until(lambda: UUID["vm4"] in sim.net.doms["B"], timeout=3)
    assert sim.vm("A", session, "vm4")["current_operations"] == {task: "start_on"}
    sim.run(25)  # start_delay blocks the task after the domain runs
    assert sim.ok("A", "task.get_status", session, task) == "pending"
    sim.run(6)
    assert sim.ok("A", "task.get_status", session, task) == "success"
    assert sim.ok("A", "task.get_result", session, task) == "<value></value>"
    assert sim.vm("A", session, "vm4")["current_operations"] == {}

    failed = sim.ok("A", "Async.VM.start_on", session, vm1, host_b, False, False)
    sim.run(0.1)
    assert sim.ok("A", "task.get_status", session, failed) == "failure"
    assert sim.ok("A", "task.get_error_info", session, failed) == [
        "VM_BAD_POWER_STATE", vm1, "halted", "running"]
    assert sim.ok("A", "task.destroy", session, failed) == ""
    assert sim.fails("A", "task.get_record", session, failed) == ["HANDLE_INVALID", "task", failed]

    # Async through a slave with a local session: the task lives in the master's DB
    local = sim.local_login("B")
    shutdown = sim.ok("B", "Async.VM.hard_shutdown", local, vm4)
    sim.run(2)
    assert sim.ok("A", "task.get_status", session, shutdown) == "success"
    assert UUID["vm4"] not in sim.net.doms["B"]


def test_hard_shutdown_and_pool_migrate() -> None:
    sim = Sim()
    session = sim.login("A")
    vm1, vm3 = sim.pool.vm_ref("vm1"), sim.pool.vm_ref("vm3")
    assert sim.fails("A", "VM.hard_shutdown", session, vm3) == [
        "VM_BAD_POWER_STATE", vm3, "paused, suspended, running", "halted"]
    task = sim.ok("A", "Async.VM.pool_migrate", session, vm1, sim.pool.host_ref("B"), {})
    sim.run(0.5)
    assert list(sim.vm("A", session, "vm1")["current_operations"].values()) == ["pool_migrate"]
    sim.run(5)
    assert sim.ok("A", "task.get_status", session, task) == "success"
    assert sim.net.doms == {"A": set(), "B": {UUID["vm1"], UUID["vm2"]}}
    assert sim.pool.vm_records("A")["vm1"] == ("Running", "B")
    assert sim.ok("A", "VM.hard_shutdown", session, vm1) == ""
    assert sim.net.doms["B"] == {UUID["vm2"]}
    assert sim.pool.vm_records("A")["vm1"] == ("Halted", None)


def test_a_start_fails_when_the_target_dies_first() -> None:
    sim = Sim()
    session = sim.login("A")
    box = sim.send("A", "VM.start_on", session, sim.pool.vm_ref("vm3"), sim.pool.host_ref("B"),
                   False, False)
    sim.run(0.5)
    sim.crash("B")
    outcome = sim.wait(box)
    assert isinstance(outcome, Failure) and outcome.description[0] == "INTERNAL_ERROR"
    assert sim.vm("A", session, "vm3")["current_operations"] == {}
    assert sim.net.doms["B"] == set()


# --- liveness ------------------------------------------------------------------------------------


def test_a_crashed_slave_stays_live_for_600_seconds() -> None:
    sim = Sim()
    session = sim.login("A")
    sim.run(40)
    crashed = sim.now
    sim.crash("B")
    sim.run(595 - (sim.now - crashed))
    assert sim.live("A", session, "B") is True
    sim.run(40)
    assert sim.live("A", session, "B") is False
    assert sim.fails("A", "VM.hard_shutdown", session, sim.pool.vm_ref("vm2")) == [
        "HOST_OFFLINE", sim.pool.host_ref("B")]
    assert sim.pool.vm_records("A")["vm2"] == ("Running", "B")  # nothing resets it by itself


def test_clean_shutdown_sets_live_false_at_once() -> None:
    sim = Sim()
    session = sim.login("A")
    done: List[float] = []
    sim.pool.begin_clean_shutdown("B", lambda: done.append(sim.now))
    sim.run(0.1)
    assert sim.enabled("A", session, "B") is False
    assert sim.run_until(lambda: bool(done), timeout=10)
    assert 2.0 <= done[0] <= 5.5
    assert sim.net.doms["B"] == set()
    assert sim.pool.vm_records("A")["vm2"] == ("Halted", None)
    assert sim.live("A", session, "B") is False
    assert sim.pool.xapi_state("B") == "down"
    sim.crash("B")
    sim.run(120)
    assert sim.live("A", session, "B") is False  # heartbeats ignored until hello
    sim.boot("B")
    sim.run(10)
    assert sim.live("A", session, "B") is True and sim.enabled("A", session, "B") is True


def test_domain_deaths_reach_the_db_now_or_after_the_master_returns() -> None:
    sim = Sim()
    session = sim.login("A")
    sim.net.destroy_domain("B", UUID["vm2"])
    sim.pool.on_domain_died("B", UUID["vm2"])
    assert sim.pool.vm_records("A")["vm2"] == ("Halted", None)
    sim.ok("A", "VM.start_on", session, sim.pool.vm_ref("vm2"), sim.pool.host_ref("B"), False,
           False)
    sim.partition()
    sim.net.destroy_domain("B", UUID["vm2"])
    sim.pool.on_domain_died("B", UUID["vm2"])
    assert sim.pool.vm_records("A")["vm2"] == ("Running", "B")
    sim.heal()
    sim.run(31)
    assert sim.pool.vm_records("A")["vm2"] == ("Halted", None)


# --- faults --------------------------------------------------------------------------------------


def test_hung_xapi_never_answers_until_restarted() -> None:
    sim = Sim()
    session = sim.login("A")
    sim.pool.xapi_hang("A", sim.clock.now() + ns(20))
    assert sim.pool.xapi_state("A") == "hung" and not sim.pool.accepts_writes("A")
    hung = sim.send("A", "pool.get_all", session)
    local = sim.local_login("B")
    assert sim.call("B", "pool.get_all", local, timeout=10) is None  # its master hangs
    sim.run(15)
    assert hung.outcome is None
    assert sim.ok("A", "pool.get_all", session)  # a new call after the hang
    assert hung.outcome is None
    sim.pool.xapi_restart("A", ns(2))
    sim.run(0.001)
    assert isinstance(hung.outcome, Reset)
    assert isinstance(sim.call("A", "pool.get_all", session), Refused)
    sim.wait_for_login("A")


def test_frozen_host_answers_after_the_thaw() -> None:
    sim = Sim()
    session = sim.login("A")
    sim.net.frozen["A"] = True
    sim.pool.on_host_freeze("A")
    box = sim.send("A", "pool.get_all", session)
    sim.run(40)
    assert box.outcome is None
    sim.net.frozen["A"] = False
    sim.pool.on_host_thaw("A")
    sim.run(0.001)
    assert isinstance(box.outcome, Ok)


def test_host_enable_before_start_up_completes() -> None:
    sim = Sim()
    session = sim.login("A")
    sim.pool.xapi_restart("B", ns(1))
    sim.run(1.2)
    assert sim.fails("A", "host.enable", session, sim.pool.host_ref("B")) == [
        "HOST_STILL_BOOTING"]
    assert sim.enabled("A", session, "B") is False
    sim.run(3)
    assert sim.enabled("A", session, "B") is True


# --- determinism ---------------------------------------------------------------------------------


def _scripted_run(seed: int) -> List[Tuple[float, str]]:
    sim = Sim(seed=seed)
    trace: List[Tuple[float, str]] = []

    def note(outcome: Optional[Outcome]) -> None:
        trace.append((sim.now, repr(outcome)))

    session = sim.login("A")
    note(sim.call("A", "VM.get_all", session))
    note(sim.call("A", "Async.VM.start_on", session, sim.pool.vm_ref("vm3"),
                  sim.pool.host_ref("B"), False, False))
    sim.run(5)
    sim.crash("A")
    note(Ok(promote(sim)))
    note(sim.call("B", "VM.power_state_reset", sim.wait_for_login("B"), sim.pool.vm_ref("vm1")))
    trace.append((sim.now, repr(sorted(sim.pool.vm_records("B").items()))))
    return trace


def test_identical_runs_give_identical_results() -> None:
    assert _scripted_run(7) == _scripted_run(7)
    assert _scripted_run(7) != _scripted_run(8)
