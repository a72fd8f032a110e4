"""The watcher's records: deltas from event.from give the same view as fresh reads."""
import time

import pytest
import XenAPI

from halizard.core.pool import PoolParseError, parse_pool
from halizard.core.poolcache import EMPTY, WATCHED, apply_events
from halizard.runtime.transport import transport_for
from simulations.xapi import SimulatedPool

pytestmark = pytest.mark.runtime


def reply(events, token="00000000000000000002,00000000000000000000"):
    return {"events": events, "valid_ref_counts": {}, "token": token}


def event(op, cls, ref, snapshot=None):
    e = {"id": "1", "timestamp": "0.0", "class": cls, "operation": op, "ref": ref}
    if snapshot is not None:
        e["snapshot"] = snapshot
    return e


def test_adds_mods_and_dels_and_a_fresh_start():
    records = apply_events(EMPTY, "", reply([event("add", "vm", "r1", {"n": 1}),
                                             event("add", "host", "h1", {"n": 2}),
                                             event("add", "sr", "s1", {"n": 3})]))
    assert records.table("VM") == {"r1": {"n": 1}} and records.table("host") == {"h1": {"n": 2}}
    later = apply_events(records, records.token, reply([event("mod", "vm", "r1", {"n": 9}),
                                                         event("del", "host", "h1")], "t2"))
    assert later.table("VM") == {"r1": {"n": 9}} and later.table("host") == {}
    assert later.token == "t2" and records.table("VM") == {"r1": {"n": 1}}  # unchanged
    fresh = apply_events(later, "", reply([event("add", "vm", "r2", {"n": 4})], "t3"))
    assert fresh.table("VM") == {"r2": {"n": 4}}  # "" starts from nothing


@pytest.mark.parametrize("garbage", [
    "a string", {"events": []}, {"events": "x", "token": "t"},
    reply(["not a struct"]), reply([event("add", "vm", "r1")]),
    reply([event("renamed", "vm", "r1", {})]), reply([{"class": "vm", "operation": "del"}]),
])
def test_garbage_is_an_error_and_changes_nothing(garbage):
    with pytest.raises(PoolParseError):
        apply_events(EMPTY, "", garbage)


def _event_from(s, token, timeout):
    return getattr(s.xenapi.event, "from")(list(WATCHED), token, timeout)


def _fresh_view(s):
    return parse_pool(s.xenapi.pool.get_all_records(), s.xenapi.host.get_all_records(),
                      s.xenapi.host_metrics.get_all_records(), s.xenapi.VM.get_all_records())


def test_a_view_from_events_equals_a_view_from_reads():
    pool = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=20.0,
                         vms=[{"name": "vm-a", "host": "xs1", "restart": "restart"},
                              {"name": "vm-b", "host": "xs2", "restart": "restart"},
                              {"name": "vm-c", "host": None, "restart": "best-effort"}])
    pool.start()
    try:
        url = pool.url("xs1")
        s = XenAPI.Session(url, transport=transport_for(url, 5.0, 5.0))
        s.xenapi.login_with_password(*pool.credentials)
        records = apply_events(EMPTY, "", _event_from(s, "", 0.0))
        assert records.view(s.xenapi.host_metrics.get_all_records()) == _fresh_view(s)

        vms = {v["name_label"]: r for r, v in s.xenapi.VM.get_all_records().items()}
        hosts = {h["name_label"]: r for r, h in s.xenapi.host.get_all_records().items()}
        s.xenapi.VM.start_on(vms["vm-c"], hosts["xs2"], False, False)
        s.xenapi.pool.add_to_other_config(s.xenapi.pool.get_all()[0], "halizard.maintenance."
                                          + pool.host_uuid("xs2"), "true")
        pool.crash("xs2")
        s.xenapi.host.declare_dead(hosts["xs2"])
        deadline = time.monotonic() + 5.0
        while True:  # coalesced deltas, possibly over several replies
            records = apply_events(records, records.token, _event_from(s, records.token, 0.0))
            metrics = s.xenapi.host_metrics.get_all_records()
            if records.view(metrics) == _fresh_view(s) or time.monotonic() > deadline:
                break
        view = records.view(s.xenapi.host_metrics.get_all_records())
        assert view == _fresh_view(s)
        assert view.vm(pool.vm_uuid("vm-b")).power_state == "Halted"
        assert view.maintenance == frozenset([pool.host_uuid("xs2")])
    finally:
        pool.stop()
