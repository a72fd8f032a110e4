"""The pool watcher (halizard.core.watch): its bookkeeping, and in the simulator, that a change an
administrator makes reaches both daemons within a cycle or two without full reads."""
from halizard.core.config import load_config
from halizard.core.pool import KEY_ENABLED, KEY_VM_RESTART
from halizard.core.state import Mode, initial_state
from halizard.core.watch import (
    RETRY,
    Watch,
    absorb,
    overdue_after,
    poll,
    retarget,
    started,
    view_of,
    with_metrics,
)
from halizard.effects import GARBAGE, LOCAL, POOL_SESSION, TIMEOUT, CallOutcome, XapiResult
from halizard.toml import loads
from simulations.runner import BUILTIN_CONFIG, Simulation
from simulations.scenario import parse_scenario
from simulations.world.scheduler import NS

CONFIG = load_config(BUILTIN_CONFIG).config
POOL_REF, HOST_REF, METRICS_REF, VM_REF = "OpaqueRef:p", "OpaqueRef:h", "OpaqueRef:m", "OpaqueRef:v"


def _reply(events, token):
    return XapiResult(value={"events": events, "valid_ref_counts": {}, "token": token})


def _add(cls, ref, snapshot):
    return {"id": "1", "timestamp": "0.0", "class": cls, "operation": "add", "ref": ref,
            "snapshot": snapshot}


FULL = [
    _add("pool", POOL_REF, {"master": HOST_REF, "other_config": {KEY_ENABLED: "true"}}),
    _add("host", HOST_REF, {"uuid": "h-1", "name_label": "xs1", "address": "198.18.0.1",
                            "enabled": True, "metrics": METRICS_REF}),
    _add("vm", VM_REF, {"uuid": "v-1", "name_label": "vm-a", "power_state": "Running",
                        "resident_on": HOST_REF, "other_config": {KEY_VM_RESTART: "restart"}}),
]


def _polling(watch, job, now):
    call = poll(watch, now, CONFIG.xapi_timeout)
    assert call is not None and call.method == "event.from"
    assert call.args[1] == watch.records.token and call.timeout > call.args[2]  # a deadline
    return started(watch, job, call.args[1], now)


def test_a_poll_resyncs_then_follows_the_token_and_the_view_needs_metrics():
    watch = _polling(retarget(None, LOCAL, POOL_SESSION), 1, 10.0)
    assert poll(watch, 10.5, CONFIG.xapi_timeout) is None  # one poll at a time
    assert not watch.is_current(10.5, CONFIG)  # nothing synced yet
    watch = absorb(watch, (CallOutcome(7, _reply([], "t9")),), 11.0)  # another job's: ignored
    assert watch.job == 1
    watch = absorb(watch, (CallOutcome(1, _reply(FULL, "t1")),), 11.0)
    assert watch.records.token == "t1" and watch.job is None and watch.is_current(11.0, CONFIG)
    watch = with_metrics(watch, {METRICS_REF: {"live": True, "memory_total": "8"}})
    view = view_of(watch)
    assert view.ha_enabled and view.host("h-1").live and view.vm("v-1").resident_on == "h-1"

    watch = _polling(watch, 2, 12.0)
    assert watch.is_current(12.0 + overdue_after(CONFIG), CONFIG)
    assert not watch.is_current(12.1 + overdue_after(CONFIG), CONFIG)  # the poll is overdue
    quiet = absorb(watch, (CallOutcome(2, _reply([], "t2")),), 42.0)
    assert quiet.records.tables is watch.records.tables and quiet.records.token == "t2"


def test_failures_keep_the_records_forget_the_token_and_back_off():
    watch = absorb(_polling(retarget(None, "198.18.0.1", POOL_SESSION), 1, 0.0),
                   (CallOutcome(1, _reply(FULL, "t1")),), 1.0)
    for n, delay in enumerate(RETRY + RETRY[-1:], start=1):
        watch = absorb(_polling(watch, 10 + n, watch.retry_after),
                       (CallOutcome(10 + n, XapiResult(error=(TIMEOUT,))),), watch.retry_after)
        assert watch.failures == n and watch.error == TIMEOUT and watch.records.token == ""
        assert len(watch.records.table("VM")) == 1  # still the last known pool
        assert poll(watch, watch.retry_after - 0.01, CONFIG.xapi_timeout) is None
        assert watch.retry_after - (watch.retry_after - delay) == delay
    garbage = absorb(_polling(watch, 99, watch.retry_after),
                     (CallOutcome(99, XapiResult(value="<html>")),), watch.retry_after)
    assert garbage.error == GARBAGE and not garbage.is_current(garbage.retry_after, CONFIG)
    again = absorb(_polling(garbage, 100, garbage.retry_after),
                   (CallOutcome(100, _reply(FULL, "t5")),), garbage.retry_after)
    assert again.failures == 0 and again.is_current(again.retry_after, CONFIG)


def test_a_new_target_starts_over_and_keeps_the_metrics():
    watch = with_metrics(Watch(LOCAL, POOL_SESSION), {METRICS_REF: {"live": True}})
    assert retarget(watch, LOCAL, POOL_SESSION) is watch
    moved = retarget(watch, "198.18.0.2", POOL_SESSION)
    assert moved.address == "198.18.0.2" and moved.records.token == "" and moved.metrics


QUIET_THEN_OFF = """
id = "W01"
title = "a quiet pool; the administrator switches HA off"
[cluster]
hosts = ["xs1", "xs2"]
master = "xs1"
vms = [ { name = "vm-a", host = "xs1", restart = "restart" },
        { name = "vm-b", host = "xs2", restart = "restart" } ]
[[fault]]
at = "150s"
kind = "op.ha_disable"
target = "pool"
[sweep]
duration = "170s"
[expect]
liveness_bound = "none"
fenced = []
"""


def test_an_administrators_change_reaches_both_daemons_through_the_watch():
    """Without the watch, the master would see the switch at its next full read (up to two
    minutes in a quiet pool) and the slave at its next read of the pool record."""
    sim = Simulation(parse_scenario(loads(QUIET_THEN_OFF), "W01"), 0, CONFIG)
    xapi = sim.world.xapi
    call = xapi.call
    written, reads, seen = [], [], {}

    def counting(host, method, params, reply, transport="tcp"):
        if method.endswith("other_config") and KEY_ENABLED in params:
            written.append(sim.world.now)
        elif method.endswith("get_all_records") and written:
            reads.append((sim.world.now, host, method))
        call(host, method, params, reply, transport)

    xapi.call = counting
    notify = sim.world.notify

    def watching(method, *args):
        if method == "decision" and args[1].mode is Mode.DISABLED:
            seen.setdefault(args[0], sim.world.now)
        notify(method, *args)

    sim.world.notify = watching
    result = sim.run()
    assert result.passed, (result.violations, result.unmet)
    assert written and set(seen) == {"xs1", "xs2"}
    for host, at in seen.items():
        assert 0 < (at - written[0]) / NS < 2.5, (host, (at - written[0]) / NS)
    before = [r for r in reads if r[0] < max(seen.values())]
    assert not before, before  # no full read brought it: the watch did


def test_a_slave_keeps_the_pools_protected_vms_on_disk_and_reads_them_back():
    sim = Simulation(parse_scenario(loads(QUIET_THEN_OFF), "W01"), 0, CONFIG)
    sim.run()
    xapi = sim.world.xapi
    for host in ("xs1", "xs2"):  # the slave learnt it from its master, through the watch
        saved = sim.world.hosts[host].disk["state"]
        state = initial_state(0.0, saved)
        assert {(v.name, v.host) for v in state.known_vms} == {
            ("vm-a", xapi.host_uuid("xs1")), ("vm-b", xapi.host_uuid("xs2"))}
        assert not state.settings.ha_enabled  # switched off at the end
    assert initial_state(0.0, {"vms": "garbage"}).known_vms == ()
