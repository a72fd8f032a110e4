"""The simulated pool over the real wire, driven by the unmodified ``XenAPI`` package.

Each test builds a two-host pool (xs1 master) whose virtual time runs 20 times as fast as real
time, so that xapi's 5 s login penalty and 10 s promotion fuse take a fraction of a second.
Every client call has a deadline (halizard.runtime.transport); every wait is on a condition.
"""
import http.client
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client

import pytest
import XenAPI

from halizard.core.pool import KEY_ENABLED
from halizard.runtime.transport import transport_for
from simulations.xapi import PoolError, SimulatedPool
from simulations.xapi.model import XapiParams

pytestmark = pytest.mark.runtime

SPEED = 20.0
GiB = 1 << 30


@pytest.fixture
def pool():
    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=SPEED, boot_time=(3.0, 4.0),
                      vms=[{"name": "vm-a", "host": "xs1", "restart": "restart"},
                           {"name": "vm-b", "host": "xs2"},
                           {"name": "vm-c", "host": None, "order": 2},
                           {"name": "huge", "host": None, "memory": 200 * GiB}])
    p.start()
    yield p
    p.stop()


def session(url, timeout=3.0, path=""):
    return XenAPI.Session(url + path, transport=transport_for(url, timeout, timeout))


def login(pool, host="xs1", timeout=3.0):
    s = session(pool.url(host), timeout)
    s.xenapi.login_with_password(pool.credentials[0], pool.credentials[1], "1.0", "halizard-test")
    return s


def local_login(pool, host, timeout=3.0):
    s = session(pool.url(host), timeout)
    s.slave_local_login_with_password(*pool.credentials)
    return s


def raw(pool, host):
    """Plain XML-RPC, without the binding's envelope handling and re-login."""
    url = pool.url(host)
    return xmlrpc.client.ServerProxy(url, transport=transport_for(url, 3.0, 3.0))


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


def vm_ref(s, name):
    refs = [r for r, v in s.xenapi.VM.get_all_records().items() if v["name_label"] == name]
    assert len(refs) == 1, refs
    return refs[0]


def host_ref(s, name):
    refs = [r for r, h in s.xenapi.host.get_all_records().items() if h["name_label"] == name]
    assert len(refs) == 1, refs
    return refs[0]


def wait_task(s, task, timeout=5.0):
    deadline = time.monotonic() + timeout
    while s.xenapi.task.get_status(task) == "pending":
        assert time.monotonic() < deadline, "task %s still pending" % task
        time.sleep(0.01)
    return s.xenapi.task.get_record(task)


# --- wire and binding ----------------------------------------------------------------------------


def test_login_records_and_logout_with_xapi_types(pool):
    s = login(pool)
    records = s.xenapi.VM.get_all_records()
    vm = next(v for v in records.values() if v["name_label"] == "vm-a")
    assert vm["power_state"] == "Running"
    assert vm["memory_static_max"] == str(2 * GiB)  # 64-bit ints arrive as strings
    assert vm["domid"] != "-1" and isinstance(vm["domid"], str)
    assert vm["is_control_domain"] is False
    assert isinstance(vm["snapshot_time"], xmlrpc.client.DateTime)
    assert vm["uuid"] == pool.vm_uuid("vm-a")
    metrics = s.xenapi.host_metrics.get_all_records()
    assert all(isinstance(m["memory_total"], str) and m["live"] is True for m in metrics.values())
    ref = s._session
    s.xenapi.session.logout()
    assert raw(pool, "xs1").VM.get_all(ref) == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_both_url_forms_work(pool):
    for path in ("", "/"):  # no path: the binding posts to /RPC2; "/": to /
        s = session(pool.url("xs1"), path=path)
        s.xenapi.login_with_password(*pool.credentials)
        assert len(s.xenapi.host.get_all()) == 2
        s.xenapi.session.logout()


def test_login_on_a_slave_names_the_master_even_with_a_wrong_password(pool):
    s = session(pool.url("xs2"))
    assert failure(s.xenapi.login_with_password, "root", "wrong") == [
        "HOST_IS_SLAVE", pool.address("xs1")]
    assert failure(s.xenapi.login_with_password, *pool.credentials) == [
        "HOST_IS_SLAVE", pool.address("xs1")]


def test_wrong_password_costs_five_seconds_and_names_the_user(pool):
    s = session(pool.url("xs1"))
    began = pool.now()
    details = failure(s.xenapi.login_with_password, "root", "wrong")
    assert details[:2] == ["SESSION_AUTHENTICATION_FAILED", "root"]
    assert pool.now() - began >= 5.0


def test_session_lost_with_a_restart_and_the_binding_logs_in_again(pool):
    s = login(pool)
    old = s._session
    pool.xapi_restart("xs1", seconds=2)
    pool.wait_until(lambda: pool.model.accepts_writes("xs1"), 5.0, "xs1 answering again")
    assert len(s.xenapi.VM.get_all()) >= 4  # SESSION_INVALID, re-login, retried call
    assert s._session != old


def test_dispatcher_errors_count_parameters_without_the_session(pool):
    s = login(pool)
    assert failure(s.xenapi.VM.get_record) == ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                                               "VM.get_record", "1", "0"]
    assert failure(s.xenapi.VM.no_such_call) == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_call"]
    assert failure(s.xenapi.VM.get_record, "OpaqueRef:nonsense") == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nonsense"]
    details = failure(s.xenapi.Async.session.logout)
    assert details[0] == "Fault" and "No async mode" in details[1]


def test_async_start_on_is_a_task_and_a_bad_power_state_fails_the_task(pool):
    s = login(pool)
    xs2 = host_ref(s, "xs2")
    task = s.xenapi.Async.VM.start_on(vm_ref(s, "vm-c"), xs2, False, False)
    assert task.startswith("OpaqueRef:")
    record = wait_task(s, task)
    assert record["status"] == "success" and record["result"] == "<value></value>"
    pool.wait_until(lambda: pool.vm_uuid("vm-c") in pool.domains("xs2"), 2.0, "vm-c on xs2")
    s.xenapi.task.destroy(task)
    assert failure(s.xenapi.task.get_record, task) == ["HANDLE_INVALID", "task", task]

    task = s.xenapi.Async.VM.start_on(vm_ref(s, "vm-a"), xs2, False, False)
    record = wait_task(s, task)
    assert record["status"] == "failure"
    assert record["error_info"] == ["VM_BAD_POWER_STATE", vm_ref(s, "vm-a"), "halted", "running"]


def test_start_on_without_memory_names_needed_and_available(pool):
    s = login(pool)
    details = failure(s.xenapi.VM.start_on, vm_ref(s, "huge"), host_ref(s, "xs1"), False, False)
    assert details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert details[1] == str(200 * GiB) and int(details[2]) < 200 * GiB


def test_garbage_gets_http_500_and_an_unknown_path_404(pool):
    conn = http.client.HTTPConnection(pool.address("xs1"), pool.port, timeout=3)
    conn.request("POST", "/", body=b"<methodCall><methodName>VM.get_all</methodName><par",
                 headers={"Content-Type": "text/xml"})
    reply = conn.getresponse()
    assert reply.status == 500 and b"Parse_error" in reply.read()
    conn.request("POST", "/nowhere", body=b"", headers={"Content-Type": "text/xml"})
    reply = conn.getresponse()
    assert reply.status == 404
    reply.read()
    conn.close()


def test_keep_alive_one_connection_for_many_calls(pool):
    s = login(pool)
    before = pool._endpoints["xs1"].calls
    for _ in range(20):
        s.xenapi.pool.get_all()
    assert pool._endpoints["xs1"].calls - before == 20
    # the transport kept one connection open throughout
    assert s._ServerProxy__transport._connection[1].sock is not None


# --- failures ------------------------------------------------------------------------------------


def test_a_hung_xapi_times_out_the_client_and_blocks_no_one_else(pool):
    hung = local_login(pool, "xs2", timeout=0.5)
    pool.xapi_hang("xs2")
    began = time.monotonic()
    with pytest.raises(socket.timeout):
        hung.xenapi.host.is_in_emergency_mode()
    assert time.monotonic() - began < 2.0
    s = login(pool)  # the master still answers at once
    assert len(s.xenapi.VM.get_all()) >= 4


def test_master_crash_slave_hangs_on_the_database_but_answers_local_calls(pool):
    local = local_login(pool, "xs2", timeout=0.5)
    pool.crash("xs1")
    with pytest.raises(socket.timeout):
        local.xenapi.VM.get_all_records()  # a database call: forwarded to a dead master
    fast = session(pool.url("xs2"), timeout=0.5)
    assert failure(fast.xenapi.login_with_password, *pool.credentials) == [
        "HOST_IS_SLAVE", pool.address("xs1")]
    local = local_login(pool, "xs2")
    assert local.xenapi.host.is_in_emergency_mode() is False
    with pytest.raises(socket.timeout):
        session(pool.url("xs1"), timeout=0.3).xenapi.login_with_password(*pool.credentials)


def test_emergency_transition_refuses_during_the_restart_then_serves_as_master(pool):
    master = login(pool)
    task = master.xenapi.Async.pool.sync_database()
    wait_task(master, task)
    old_session = master._session
    pool.crash("xs1")
    local = local_login(pool, "xs2")
    local.xenapi.pool.emergency_transition_to_master()
    pool.wait_until(lambda: not pool._endpoints["xs2"].listening, 2.0, "xs2 restarting")
    with pytest.raises(ConnectionRefusedError):
        session(pool.url("xs2")).xenapi.login_with_password(*pool.credentials)
    pool.wait_until(lambda: pool.model.accepts_writes("xs2"), 5.0, "xs2 master")
    s = login(pool, "xs2")
    assert s.xenapi.pool.get_master(s.xenapi.pool.get_all()[0]) == host_ref(s, "xs2")
    # the old master's session is unknown here, its tasks are gone
    reply = raw(pool, "xs2").VM.get_all(old_session)
    assert reply == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", old_session]}
    assert failure(s.xenapi.task.get_record, task)[0] == "HANDLE_INVALID"
    # what the new master believes about the lost host's VMs, until power_state_reset
    vm_a = vm_ref(s, "vm-a")
    assert s.xenapi.VM.get_power_state(vm_a) == "Running"
    assert s.xenapi.VM.get_resident_on(vm_a) == host_ref(s, "xs1")
    assert failure(s.xenapi.VM.start_on, vm_a, host_ref(s, "xs2"), False, False) == [
        "VM_BAD_POWER_STATE", vm_a, "halted", "running"]
    s.xenapi.VM.power_state_reset(vm_a)  # xs1 does not answer: allowed after the contact timeout
    assert s.xenapi.VM.get_power_state(vm_a) == "Halted"
    s.xenapi.VM.start_on(vm_a, host_ref(s, "xs2"), False, False)
    assert pool.vm_uuid("vm-a") in pool.domains("xs2")


def test_power_state_reset_refused_while_the_owner_answers(pool):
    s = login(pool)
    vm_b = vm_ref(s, "vm-b")
    assert failure(s.xenapi.VM.power_state_reset, vm_b) == ["HOST_IS_LIVE", host_ref(s, "xs2")]
    dom0 = s.xenapi.host.get_record(host_ref(s, "xs1"))["control_domain"]
    assert failure(s.xenapi.VM.power_state_reset, dom0) == ["CANNOT_RESET_CONTROL_DOMAIN", dom0]


def test_old_master_returning_after_a_reboot_becomes_a_slave(pool):
    pool.crash("xs1")
    local = local_login(pool, "xs2")
    local.xenapi.pool.emergency_transition_to_master()
    pool.wait_until(lambda: pool.model.accepts_writes("xs2"), 5.0, "xs2 master")
    pool.power_on("xs1")
    pool.wait_until(lambda: pool.xapi_state("xs1") == "up", 5.0, "xs1 booted")
    assert pool.role("xs1") == "slave"
    s = session(pool.url("xs1"))
    assert failure(s.xenapi.login_with_password, *pool.credentials) == [
        "HOST_IS_SLAVE", pool.address("xs2")]
    assert pool.domains("xs1") == set()


def test_old_master_partitioned_away_stays_master_two_masters(pool):
    pool.partition(["xs1"], ["xs2"])
    local = local_login(pool, "xs2")
    local.xenapi.pool.emergency_transition_to_master()
    pool.wait_until(lambda: pool.model.accepts_writes("xs2"), 5.0, "xs2 master")
    one, two = login(pool, "xs1"), login(pool, "xs2")
    assert one.xenapi.pool.get_master(one.xenapi.pool.get_all()[0]) == host_ref(one, "xs1")
    assert two.xenapi.pool.get_master(two.xenapi.pool.get_all()[0]) == host_ref(two, "xs2")
    pool.heal()
    assert pool.role("xs1") == "master" and pool.role("xs2") == "master"


def test_crashed_host_accepts_nothing_but_never_resets(pool):
    s = login(pool, timeout=0.5)
    pool.crash("xs1")
    began = time.monotonic()
    with pytest.raises(socket.timeout):
        s.xenapi.pool.get_all()
    assert 0.4 < time.monotonic() - began < 2.0


def test_control_api_errors_are_clear():
    with pytest.raises(PoolError, match="master 'xs3'"):
        SimulatedPool(hosts=["xs1", "xs2"], master="xs3")
    with pytest.raises(PoolError, match="host 'xs9'"):
        SimulatedPool(hosts=["xs1", "xs2"], master="xs1", vms=[{"name": "v", "host": "xs9"}])
    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", params=XapiParams())
    with pytest.raises(PoolError, match="no host 'xs7'"):
        p.crash("xs7")
    with pytest.raises(PoolError, match="no VM named"):
        p.vm_uuid("nope")


# --- by hand ------------------------------------------------------------------------------------


class _Lines:
    """A process's output lines, read by a thread so that waiting for one has a deadline."""

    def __init__(self, stream):
        self.queue = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no matching line within %.0f s: %r" % (timeout, self.seen)
            try:
                line = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, "the server exited: %r" % self.seen
            self.seen.append(line)
            if predicate(line):
                return self.seen


BY_HAND = """
id = "by-hand"
title = "A master that crashes after five minutes"
[cluster]
hosts = ["xs1", "xs2"]
master = "xs1"
vms = [ { name = "vm-a", host = "xs1", restart = "restart" },
        { name = "vm-b", host = "xs2", restart = "restart" } ]
[[fault]]
at = "5m"
kind = "host.crash"
target = "xs1"
[expect]
"""


def test_serve_a_scenario_by_hand_and_watch_its_fault(tmp_path):
    scenario = tmp_path / "by-hand.toml"
    scenario.write_text(BY_HAND)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    proc = subprocess.Popen(  # 300 virtual seconds before the crash: 3 s of real time
        [sys.executable, "-m", "simulations.xapi", "serve", "--scenario", str(scenario),
         "--speed", "100", "--password", "by-hand"],
        stdout=subprocess.PIPE, universal_newlines=True, cwd=root)
    try:
        output = _Lines(proc.stdout)
        lines = output.until(lambda line: "credentials" in line, 20)
        url = next(line.split()[1] for line in lines if line.strip().startswith("xs1 "))
        s = XenAPI.Session(url, transport=transport_for(url, 3, 3))
        s.xenapi.login_with_password("root", "by-hand", "1.0", "test")
        names = {v["name_label"] for v in s.xenapi.VM.get_all_records().values()}
        assert {"vm-a", "vm-b"} <= names
        output.until(lambda line: "xs1 power off (crash)" in line, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_a_scenario_file_builds_its_pool():
    from simulations.scenario import load_scenario

    scenario = load_scenario(os.path.join(os.path.dirname(__file__), "..", "simulations",
                                          "scenarios", "H02-master-crash.toml"))
    p = SimulatedPool.from_scenario(scenario)
    assert p.hosts == list(scenario.hosts) and p.master == scenario.master
    assert p.domains("xs1") == {p.vm_uuid(vm.name) for vm in scenario.vms if vm.host == "xs1"}


# --- event.from ----------------------------------------------------------------------------------


def event_from(s, classes, token, timeout):
    return getattr(s.xenapi.event, "from")(classes, token, timeout)  # "from" is a keyword


def test_events_from_the_beginning_are_one_add_per_object(pool):
    s = login(pool)
    reply = event_from(s, ["vm", "host"], "", 1.0)
    adds = {(e["class"], e["ref"]) for e in reply["events"]}
    assert all(e["operation"] == "add" and "snapshot" in e for e in reply["events"])
    assert {("vm", r) for r in s.xenapi.VM.get_all()} | {
        ("host", r) for r in s.xenapi.host.get_all()} == adds
    assert reply["valid_ref_counts"]["vm"] == 6  # an int32: <i4> on the wire, not a string
    assert isinstance(reply["valid_ref_counts"]["vm"], int)
    generation, _ = reply["token"].split(",")
    assert len(reply["token"]) == 41 and int(generation) > 0
    assert s.xenapi.event.get_current_id() == str(int(generation))


def test_events_since_a_token_are_coalesced_deltas(pool):
    s = login(pool)
    token = event_from(s, ["*"], "", 1.0)["token"]
    began = pool.now()
    quiet = event_from(s, ["vm"], token, 2.0)
    assert quiet["events"] == [] and quiet["token"] >= token
    assert pool.now() - began >= 2.0  # it waited the whole timeout
    vm_a = vm_ref(s, "vm-a")
    s.xenapi.VM.add_to_other_config(vm_a, "note", "one")
    s.xenapi.VM.remove_from_other_config(vm_a, "note")
    s.xenapi.VM.add_to_other_config(vm_a, "note", "two")
    reply = event_from(s, ["VM"], quiet["token"], 5.0)
    assert [(e["operation"], e["ref"]) for e in reply["events"]] == [("mod", vm_a)]
    assert reply["events"][0]["snapshot"]["other_config"]["note"] == "two"


def test_a_task_created_and_destroyed_since_the_token_leaves_nothing(pool):
    s = login(pool)
    older = s.xenapi.Async.pool.sync_database()
    wait_task(s, older)
    token = event_from(s, ["task"], "", 1.0)["token"]
    newer = s.xenapi.Async.pool.sync_database()
    wait_task(s, newer)
    s.xenapi.task.destroy(newer)
    s.xenapi.task.destroy(older)
    reply = event_from(s, ["task"], token, 5.0)
    assert [(e["operation"], e["ref"], "snapshot" in e) for e in reply["events"]] == [
        ("del", older, False)]


def test_a_waiting_event_from_returns_at_the_first_change(pool):
    s, writer = login(pool), login(pool)
    vm_b = vm_ref(s, "vm-b")
    token = event_from(s, ["vm/%s" % vm_b], "", 1.0)["token"]
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        event_from(s, ["vm/%s" % vm_b], token, 60.0)))  # 3 s of real time at SPEED
    waiter.start()
    writer.xenapi.VM.add_to_other_config(vm_ref(writer, "vm-a"), "k", "v")  # not subscribed
    writer.xenapi.VM.add_to_other_config(vm_b, "k", "v")
    waiter.join(2.5)
    assert not waiter.is_alive(), "event.from did not return at the change"
    assert [(e["operation"], e["ref"]) for e in result["events"]] == [("mod", vm_b)]


def test_event_from_rejects_bad_tokens_and_subscriptions_and_ends_with_its_session(pool):
    s = login(pool)
    assert failure(event_from, s, ["vm"], "yesterday", 1.0) == [
        "EVENT_FROM_TOKEN_PARSE_FAILURE", "yesterday"]
    assert failure(event_from, s, ["vms"], "", 1.0) == [
        "EVENT_SUBSCRIPTION_PARSE_FAILURE", "vms"]
    assert event_from(s, ["sr"], "", 0.0)["events"] == []  # a class this model holds none of
    ref = s._session
    token = event_from(s, ["vm"], "", 1.0)["token"]
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        reply=getattr(raw(pool, "xs1").event, "from")(ref, ["vm"], token, 60.0)))
    waiter.start()
    pool.wait_until(lambda: pool.model._xapis["xs1"].event_waits, 2.0, "the call waiting")
    raw(pool, "xs1").session.logout(ref)
    waiter.join(2.5)
    assert result["reply"] == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


# --- more of research/xenapi.md 7.6 --------------------------------------------------------------


def test_error_parameter_orders_for_maps_uuids_and_busy_vms(pool):
    s = login(pool)
    pool_ref = s.xenapi.pool.get_all()[0]
    assert s.xenapi.pool.get_other_config(pool_ref)[KEY_ENABLED] == "true"
    assert failure(s.xenapi.pool.add_to_other_config, pool_ref, KEY_ENABLED, "x") == [
        "MAP_DUPLICATE_KEY", "pool", "other_config", pool_ref, KEY_ENABLED]
    s.xenapi.pool.remove_from_other_config(pool_ref, "no-such-key")  # absent: fine
    assert failure(s.xenapi.VM.get_by_uuid, "0000") == ["UUID_INVALID", "VM", "0000"]
    vm_c, xs2 = vm_ref(s, "vm-c"), host_ref(s, "xs2")
    s.xenapi.Async.VM.start_on(vm_c, xs2, False, False)
    details = failure(s.xenapi.VM.start_on, vm_c, xs2, False, False)
    assert details[0] in ("OTHER_OPERATION_IN_PROGRESS", "VM_BAD_POWER_STATE")
    if details[0] == "OTHER_OPERATION_IN_PROGRESS":
        assert details[1:3] == ["VM", vm_c] and details[4].startswith("OpaqueRef:")


def test_hard_shutdown_of_a_vm_on_a_lost_host_cannot_contact_it(pool):
    s = login(pool)
    pool.crash("xs2")
    vm_b = vm_ref(s, "vm-b")
    assert failure(s.xenapi.VM.hard_shutdown, vm_b) == ["CANNOT_CONTACT_HOST", host_ref(s, "xs2")]
    s.xenapi.host.declare_dead(host_ref(s, "xs2"))  # xs2 does not answer: allowed
    assert s.xenapi.VM.get_power_state(vm_b) == "Halted"
    metrics = s.xenapi.host.get_record(host_ref(s, "xs2"))["metrics"]
    assert s.xenapi.host_metrics.get_live(metrics) is True  # declare_dead disables, that is all
    assert failure(s.xenapi.VM.start_on, vm_b, host_ref(s, "xs2"), False, False) == [
        "HOST_DISABLED", host_ref(s, "xs2")]
    s.xenapi.VM.start_on(vm_b, host_ref(s, "xs1"), False, False)
    assert pool.vm_uuid("vm-b") in pool.domains("xs1")


def test_changes_after_the_last_push_are_lost_by_a_promotion_unless_synced(pool):
    s = login(pool)
    pool_ref = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.add_to_other_config(pool_ref, "synced", "yes")
    s.xenapi.pool.sync_database()
    s.xenapi.pool.add_to_other_config(pool_ref, "unsynced", "yes")
    pool.crash("xs1")
    local_login(pool, "xs2").xenapi.pool.emergency_transition_to_master()
    pool.wait_until(lambda: pool.model.accepts_writes("xs2"), 5.0, "xs2 master")
    other = login(pool, "xs2").xenapi.pool.get_other_config(pool_ref)
    assert other.get("synced") == "yes" and "unsynced" not in other


def test_a_promotion_while_the_master_answers_is_undone(pool):
    local_login(pool, "xs2").xenapi.pool.emergency_transition_to_master()
    pool.wait_until(lambda: pool.xapi_state("xs2") == "restarting", 2.0, "xs2 restarting")
    pool.wait_until(lambda: pool.xapi_state("xs2") == "up", 5.0, "xs2 up again")
    assert pool.role("xs2") == "slave" and pool.role("xs1") == "master"
    assert failure(session(pool.url("xs2")).xenapi.login_with_password, *pool.credentials) == [
        "HOST_IS_SLAVE", pool.address("xs1")]


def test_a_slave_started_without_its_master_is_in_emergency_mode_until_it_returns(pool):
    pool.crash("xs1")
    pool.xapi_restart("xs2", seconds=1)
    pool.wait_until(lambda: pool.xapi_state("xs2") == "emergency", 3.0, "xs2 emergency")
    assert failure(session(pool.url("xs2")).xenapi.login_with_password, *pool.credentials) == [
        "HOST_STILL_BOOTING"]
    local = local_login(pool, "xs2")
    assert local.xenapi.host.is_in_emergency_mode() is True
    pool.power_on("xs1")
    pool.wait_until(lambda: pool.xapi_state("xs2") == "up", 10.0, "xs2 joined its master")
    assert pool.role("xs1") == "master"
    assert local_login(pool, "xs2").xenapi.host.is_in_emergency_mode() is False


def test_two_masters_resolved_by_emergency_reset_master(pool):
    pool.partition(["xs1"], ["xs2"])
    local_login(pool, "xs2").xenapi.pool.emergency_transition_to_master()
    pool.wait_until(lambda: pool.model.accepts_writes("xs2"), 5.0, "xs2 master")
    pool.heal()
    local_login(pool, "xs1").xenapi.pool.emergency_reset_master(pool.address("xs2"))
    pool.wait_until(lambda: pool.role("xs1") == "slave" and pool.xapi_state("xs1") == "up",
                    5.0, "xs1 a slave of xs2")
    s = login(pool, "xs2")
    assert s.xenapi.pool.get_master(s.xenapi.pool.get_all()[0]) == host_ref(s, "xs2")
    # the VM the old master ran is not running twice
    assert len([h for h in ("xs1", "xs2") if pool.vm_uuid("vm-a") in pool.domains(h)]) <= 1
