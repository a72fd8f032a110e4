"""The daemon's xapi adapter (halizard.runtime.xapi) against the wire-level simulated pool and
against servers that answer garbage: every call ends in one XapiResult by its deadline."""
import socket
import ssl
import subprocess
import threading
import time

import pytest
import XenAPI

from halizard.core.pool import KEY_ENABLED
from halizard.core.watch import absorb, poll, retarget, started, view_of, with_metrics
from halizard.effects import (
    CONNECTION_REFUSED,
    CONNECTION_RESET,
    GARBAGE,
    LOCAL,
    LOCAL_SESSION,
    POOL_SESSION,
    STALE,
    TIMEOUT,
    UNREACHABLE,
    CallOutcome,
    XapiCall,
)
from halizard.runtime.transport import transport_for, unverified_context
from halizard.runtime.xapi import PoolRoles, XapiAdapter, find_masters
from simulations.xapi import SimulatedPool

pytestmark = pytest.mark.runtime

SPEED = 20.0


@pytest.fixture
def pool():
    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=SPEED, boot_time=(3.0, 4.0),
                      vms=[{"name": "vm-a", "host": "xs1"}, {"name": "vm-b", "host": "xs2"},
                           {"name": "vm-c", "host": None}])
    p.start()
    yield p
    p.stop()


def adapter_on(pool, host, credentials=None):
    return XapiAdapter(pool.url(host), lambda address: "http://%s:%d" % (address, pool.port),
                       credentials or pool.credentials)


def call(method, *args, address=LOCAL, session=POOL_SESSION, timeout=2.0, valid_until=None):
    return XapiCall(method, args, address, session, timeout, valid_until)


def timed(fn, *args):
    began = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - began


def test_reads_and_async_starts_on_the_master(pool):
    xs1 = adapter_on(pool, "xs1")
    vms = xs1.perform(call("VM.get_all_records"))
    assert vms.ok and {v["name_label"] for v in vms.value.values()} >= {"vm-a", "vm-b", "vm-c"}
    vm_c = next(r for r, v in vms.value.items() if v["name_label"] == "vm-c")
    host = next(r for r, h in xs1.perform(call("host.get_all_records")).value.items()
                if h["name_label"] == "xs2")
    task = xs1.perform(call("Async.VM.start_on", vm_c, host, False, False))
    assert task.ok and task.value.startswith("OpaqueRef:")
    pool.wait_until(lambda: pool.vm_uuid("vm-c") in pool.domains("xs2"), 3.0, "vm-c running")
    deadline = time.monotonic() + 3.0
    while xs1.perform(call("task.get_status", task.value)).value != "success":
        assert time.monotonic() < deadline, "task still not done"
        time.sleep(0.01)
    xs1.close()


def test_a_pool_session_on_a_slave_names_the_master_and_a_local_one_works(pool):
    xs2 = adapter_on(pool, "xs2")
    result = xs2.perform(call("VM.get_all_records"))
    assert result.error == ("HOST_IS_SLAVE", pool.address("xs1"))
    assert xs2.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION)).value is False
    remote = adapter_on(pool, "xs1").perform(call("pool.get_all", address=pool.address("xs2")))
    assert remote.code == "HOST_IS_SLAVE"


def test_every_call_ends_by_its_deadline(pool):
    xs1 = adapter_on(pool, "xs1")
    assert xs1.perform(call("pool.get_all")).ok
    pool.xapi_hang("xs1")
    result, took = timed(xs1.perform, call("pool.get_all", timeout=0.4))
    assert result.error == (TIMEOUT,) and took < 1.0
    # the deadline covers the login too: a wrong password costs xapi 5 s (0.25 s here)
    wrong = adapter_on(pool, "xs2", ("root", "wrong"))
    result, took = timed(wrong.perform, call("host.is_in_emergency_mode", session=LOCAL_SESSION,
                                             timeout=0.1))
    assert result.ok is False and took < 0.6


def test_a_crashed_host_times_out_and_a_restarting_one_refuses(pool):
    xs1, xs2 = adapter_on(pool, "xs1"), adapter_on(pool, "xs2")
    assert xs2.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION)).ok
    pool.xapi_restart("xs2", seconds=20)  # 1 s of real time
    pool.wait_until(lambda: pool.xapi_state("xs2") == "restarting", 2.0, "xs2 restarting")
    result = xs2.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION))
    assert result.error[0] in (CONNECTION_REFUSED, CONNECTION_RESET)
    assert xs2.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION)).error == (
        CONNECTION_REFUSED,)
    assert xs1.perform(call("pool.get_all")).ok
    pool.crash("xs1")
    result, took = timed(xs1.perform, call("pool.get_all", timeout=0.3))
    assert result.error == (TIMEOUT,) and took < 0.8


def test_sessions_lost_with_a_restart_are_renewed(pool):
    xs1 = adapter_on(pool, "xs1")
    assert xs1.perform(call("pool.get_all")).ok
    pool.xapi_restart("xs1", seconds=2)
    pool.wait_until(lambda: pool.model.accepts_writes("xs1"), 5.0, "xs1 back")
    first = xs1.perform(call("pool.get_all"))  # the kept-alive connection was reset meanwhile
    if not first.ok:
        assert first.error == (CONNECTION_RESET,)
    assert xs1.perform(call("pool.get_all")).ok


def test_a_stale_call_is_not_sent(pool):
    xs1 = adapter_on(pool, "xs1")
    before = pool._endpoints["xs1"].calls
    result = xs1.perform(call("host.disable", "OpaqueRef:x", valid_until=time.monotonic() - 1))
    assert result.error == (STALE,)
    assert pool._endpoints["xs1"].calls == before


def test_promotion_through_the_adapter(pool):
    pool.crash("xs1")
    xs2 = adapter_on(pool, "xs2")
    result = xs2.perform(call("pool.emergency_transition_to_master", session=LOCAL_SESSION))
    assert result.ok
    pool.wait_until(lambda: pool.model.accepts_writes("xs2"), 5.0, "xs2 master")
    vms = xs2.perform(call("VM.get_all_records"))
    assert vms.ok  # a fresh pool session on the new master


# --- garbage in, clear error out -----------------------------------------------------------------


class Garbage:
    """A server on loopback that reads one request per connection and answers it badly."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        conn.settimeout(5)
        try:
            conn.recv(65536)
            if self.mode == "http500":
                body = b"<html>Xmlrpc.Parse_error</html>"
                conn.sendall(b"HTTP/1.1 500 Internal Error\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
            elif self.mode == "bad-xml":
                body = b"<?xml version='1.0'?><methodResponse><params><param><value><struct>"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            elif self.mode == "no-envelope":
                body = (b"<?xml version='1.0'?><methodResponse><params><param>"
                        b"<value>just a string</value></param></params></methodResponse>")
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            elif self.mode == "reset-mid-reply":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<?xml ")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            elif self.mode == "silent":
                self.stop.wait(10)
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode, code", [
    ("http500", GARBAGE), ("bad-xml", GARBAGE), ("no-envelope", GARBAGE),
    ("reset-mid-reply", CONNECTION_RESET), ("silent", TIMEOUT)])
def test_garbage_replies_become_clear_results_by_the_deadline(mode, code):
    server = Garbage(mode)
    try:
        adapter = XapiAdapter(server.url, lambda address: server.url, ("root", "x"))
        result, took = timed(adapter.perform, call("pool.get_all", timeout=0.5))
        assert result.code == code, result
        assert took < 1.5
    finally:
        server.close()


def test_nothing_listening_is_refused_at_once():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port nobody listens on
    adapter = XapiAdapter("http://127.0.0.1:%d" % port, str, ("root", "x"))
    result, took = timed(adapter.perform, call("pool.get_all", timeout=2.0))
    assert result.error == (CONNECTION_REFUSED,) and took < 1.0


# --- end-to-end flows, one per failure -----------------------------------------------------------


def _wait(predicate, timeout, what):
    """Poll a predicate that calls the pool over the wire (not under its lock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "%s not reached within %.1f s" % (what, timeout)
        time.sleep(0.02)


def _refs(adapter, cls, address=LOCAL):
    records = adapter.perform(call(cls + ".get_all_records", address=address))
    assert records.ok, records
    return {r["name_label"]: ref for ref, r in records.value.items()}


def _task_done(adapter, task):
    _wait(lambda: adapter.perform(call("task.get_status", task)).value != "pending", 5.0,
          "task %s" % task)
    record = adapter.perform(call("task.get_record", task)).value
    adapter.perform(call("task.destroy", task))
    return record


def test_flow_slave_crash_declare_dead_and_restart_on_the_master(pool):
    xs1 = adapter_on(pool, "xs1")
    hosts, vms = _refs(xs1, "host"), _refs(xs1, "VM")
    pool.crash("xs2")
    task = xs1.perform(call("Async.host.declare_dead", hosts["xs2"]))
    assert _task_done(xs1, task.value)["status"] == "success"
    assert xs1.perform(call("VM.get_power_state", vms["vm-b"])).value == "Halted"
    task = xs1.perform(call("Async.VM.start_on", vms["vm-b"], hosts["xs1"], False, False))
    assert _task_done(xs1, task.value)["status"] == "success"
    assert xs1.perform(call("pool.sync_database")).ok
    assert pool.vm_uuid("vm-b") in pool.domains("xs1")


def test_flow_master_crash_promotion_reset_and_restart(pool):
    xs2 = adapter_on(pool, "xs2")
    addresses = (pool.address("xs1"), pool.address("xs2"))
    assert find_masters(xs2, addresses, 0.5) == PoolRoles(
        (pool.address("xs1"),), {pool.address("xs2"): pool.address("xs1")}, {})
    pool.crash("xs1")
    roles = find_masters(xs2, addresses, 0.3)
    assert roles.masters == () and roles.unreachable == {pool.address("xs1"): TIMEOUT}
    assert xs2.perform(call("pool.emergency_transition_to_master", session=LOCAL_SESSION)).ok
    _wait(lambda: xs2.perform(call("pool.get_all", timeout=0.5)).ok, 5.0, "xs2 master")
    assert find_masters(xs2, addresses, 0.3).masters == (pool.address("xs2"),)
    hosts, vms = _refs(xs2, "host"), _refs(xs2, "VM")
    assert xs2.perform(call("VM.get_power_state", vms["vm-a"])).value == "Running"
    result = xs2.perform(call("VM.start_on", vms["vm-a"], hosts["xs2"], False, False))
    assert result.code == "VM_BAD_POWER_STATE"
    assert xs2.perform(call("VM.power_state_reset", vms["vm-a"], timeout=3.0)).ok
    task = xs2.perform(call("Async.VM.start_on", vms["vm-a"], hosts["xs2"], False, False))
    assert _task_done(xs2, task.value)["status"] == "success"
    assert pool.vm_uuid("vm-a") in pool.domains("xs2")


def test_flow_old_master_returns_as_a_slave_or_as_a_second_master(pool):
    xs2 = adapter_on(pool, "xs2")
    addresses = (pool.address("xs1"), pool.address("xs2"))
    pool.partition(["xs1"], ["xs2"])
    assert xs2.perform(call("pool.emergency_transition_to_master", session=LOCAL_SESSION)).ok
    _wait(lambda: xs2.perform(call("pool.get_all", timeout=0.5)).ok, 5.0, "xs2 master")
    roles = find_masters(xs2, addresses, 0.5)
    assert roles.two_masters and set(roles.masters) == set(addresses)
    xs1 = adapter_on(pool, "xs1")
    assert xs1.perform(call("pool.emergency_reset_master", pool.address("xs2"),
                            session=LOCAL_SESSION)).ok
    pool.heal()
    settled = PoolRoles((pool.address("xs2"),), {pool.address("xs1"): pool.address("xs2")}, {})
    # while it looks for its new master, xs1 answers HOST_STILL_BOOTING (emergency mode)
    _wait(lambda: find_masters(xs2, addresses, 0.5) == settled, 5.0, "xs1 a slave of xs2")


# --- this host's own xapi over its Unix socket ---------------------------------------------------


@pytest.fixture
def unix_pool(tmp_path):
    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=SPEED, boot_time=(3.0, 4.0),
                      vms=[{"name": "vm-a", "host": "xs1"}], unix_dir=str(tmp_path))
    p.start()
    yield p
    p.stop()


def local_adapter(pool, host, credentials=("root", "any password")):
    return XapiAdapter("unix:" + pool.unix_path(host),
                       lambda address: "http://%s:%d" % (address, pool.port), credentials)


def test_the_local_socket_is_root_without_password_and_never_host_is_slave(unix_pool):
    xs2 = local_adapter(unix_pool, "xs2")  # a slave: its calls reach the master's database
    vms = xs2.perform(call("VM.get_all_records"))
    assert vms.ok and "vm-a" in {v["name_label"] for v in vms.value.values()}
    assert xs2.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION)).value is False


def test_the_local_socket_when_the_master_is_gone_and_when_xapi_restarts(unix_pool):
    unix_pool.crash("xs1")
    xs2 = local_adapter(unix_pool, "xs2")
    # a pool session is written to the master's database: it hangs; a local one does not
    assert xs2.perform(call("VM.get_all_records", timeout=0.3)).error == (TIMEOUT,)
    assert xs2.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION)).ok
    unix_pool.xapi_restart("xs2", seconds=20)
    unix_pool.wait_until(lambda: unix_pool.xapi_state("xs2") == "restarting", 2.0, "restart")
    fresh = local_adapter(unix_pool, "xs2")
    assert fresh.perform(call("host.is_in_emergency_mode", session=LOCAL_SESSION)).error == (
        CONNECTION_REFUSED,)


# --- HTTPS, as xapi's port 443 with its self-signed certificate ---------------------------------


@pytest.fixture
def tls_pool(tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=xapi-sim"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=SPEED,
                      vms=[{"name": "vm-a", "host": "xs1"}], tls=(cert, key))
    p.start()
    p.cert = cert
    yield p
    p.stop()


def https_adapter(pool, tls):
    return XapiAdapter(pool.url("xs1"), lambda address: "https://%s:%d" % (address, pool.port),
                       pool.credentials, tls=tls)


def test_https_with_the_pool_certificate_pinned_or_unverified(tls_pool):
    assert tls_pool.url("xs1").startswith("https://")
    pinned = ssl.create_default_context(cafile=tls_pool.cert)
    pinned.check_hostname = False  # xapi's certificate names the host, not its address
    assert https_adapter(tls_pool, pinned).perform(call("pool.get_all")).ok
    assert https_adapter(tls_pool, unverified_context()).perform(call("pool.get_all")).ok
    refused = https_adapter(tls_pool, None).perform(call("pool.get_all"))
    assert refused.code == UNREACHABLE and "CERTIFICATE_VERIFY_FAILED" in refused.error[1]


def test_the_binding_drops_ignore_ssl_when_given_a_transport(tls_pool):
    url = tls_pool.url("xs1")
    session = XenAPI.Session(url, transport=transport_for(url, 2.0, 2.0), ignore_ssl=True)
    with pytest.raises(ssl.SSLError):
        session.login_with_password(*tls_pool.credentials)


def test_the_watch_follows_the_pool_over_the_wire(pool):
    """The daemon's watcher (halizard.core.watch) with the adapter: a full resync, then a poll
    that is out while an administrator writes, which answers with that change."""
    adapter = adapter_on(pool, "xs1")
    watch = retarget(None, LOCAL, POOL_SESSION)
    poll_call = poll(watch, time.monotonic(), 0.5)
    watch = started(watch, 1, poll_call.args[1], time.monotonic())
    watch = absorb(watch, (CallOutcome(1, adapter.perform(poll_call)),), time.monotonic())
    assert watch.error == "" and watch.records.token
    watch = with_metrics(watch, adapter.perform(call("host_metrics.get_all_records")).value)
    view = view_of(watch)
    assert view.ha_enabled and view.vm(pool.vm_uuid("vm-a")).running
    assert view.host(pool.host_uuid("xs2")).live

    poll_call = poll(watch, time.monotonic(), 0.5)
    watch = started(watch, 2, poll_call.args[1], time.monotonic())
    answers = []
    poller = threading.Thread(target=lambda: answers.append(adapter.perform(poll_call)))
    poller.start()  # its own thread, so its own session: the daemon's background call
    pool_ref = adapter.perform(call("pool.get_all")).value[0]
    assert adapter.perform(call("pool.remove_from_other_config", pool_ref,
                                KEY_ENABLED)).ok
    poller.join(poll_call.timeout + 1.0)
    assert answers and answers[0].ok, answers
    watch = absorb(watch, (CallOutcome(2, answers[0]),), time.monotonic())
    assert not view_of(watch).ha_enabled  # the change, not the poll's timeout, answered
    assert view_of(watch).vms == view.vms
