"""The daemon report both the daemon and `halizard status` read (halizard.core.pool): it
round-trips, and a garbled value is unreadable, never an exception."""
import json

import pytest

from halizard.admin import acknowledges
from halizard.core.pool import REPORT_STALE_AFTER, DaemonReport, daemon_reports, parse_report
from halizard.status import daemon_entry

pytestmark = pytest.mark.runtime

GOOD = DaemonReport("survivor", "peer silent 4.5s, gateway visible", 1000.0, 4.5, 0.2, "0.1.0")


def test_a_report_round_trips():
    assert parse_report(GOOD.encode()) == GOOD
    fresh = DaemonReport("starting", "waiting for first contact", 5.0)
    assert parse_report(fresh.encode()) == fresh  # never seen anything: nulls
    newer = dict(json.loads(GOOD.encode()), extra="from a newer daemon")
    assert parse_report(json.dumps(newer)) == GOOD


@pytest.mark.parametrize("raw", [
    None, 42, "", "normal", "[1, 2]", '{"state": "normal"}', '{"at": 1.0}',
    '{"state": "", "at": 1.0}', '{"state": "normal", "at": "1.0"}',
    '{"state": "normal", "at": true}', '{"state": "normal", "at": NaN}',
    '{"state": "normal", "at": 1.0, "reason": 3}', '{"state": 7, "at": 1.0}',
    '{"state": "normal", "at": 1.0, "peer_seen_ago": -1}',
    '{"state": "normal", "at": 1.0, "gateway_seen_ago": "soon"}',
    '{"state": "normal", "at": 1.0, "version": null}', '{"state": "normal", "at": 1e999}',
])
def test_garbage_is_unreadable(raw):
    assert parse_report(raw) is None
    if raw is not None:
        assert daemon_entry(raw, 0.0)["report"] == "unreadable"


def test_age_and_staleness():
    assert daemon_entry(GOOD.encode(), 1000.0 + REPORT_STALE_AFTER)["report"] == "current"
    stale = daemon_entry(GOOD.encode(), 1000.5 + REPORT_STALE_AFTER)
    assert stale["report"] == "stale" and stale["state"] == "survivor"
    ahead = daemon_entry(GOOD.encode(), 990.0)  # the publisher's clock runs ahead of ours
    assert ahead["age"] == 0.0 and ahead["report"] == "current"
    assert daemon_entry(None, 0.0)["report"] == "absent"


def test_reports_are_found_by_host_uuid():
    other = {"halizard.status.u1": "x", "halizard.statusu2": "y", "HA_X": "1", 3: "z"}
    assert daemon_reports(other) == {"u1": "x"}


def test_an_acknowledgement_is_a_current_report_in_the_new_state():
    disabled = DaemonReport("disabled", "HA is disabled for the pool", 1000.0).encode()
    assert acknowledges(disabled, on=False, now=1001.0)
    assert not acknowledges(disabled, on=True, now=1001.0)
    assert acknowledges(GOOD.encode(), on=True, now=1001.0)
    assert not acknowledges(GOOD.encode(), on=False, now=1001.0)
    assert not acknowledges(disabled, on=False, now=1001.0 + REPORT_STALE_AFTER)
    assert not acknowledges(None, on=True, now=0.0)
    assert not acknowledges("{", on=True, now=0.0)


def test_the_daemons_publisher_writes_what_status_reads():
    """The contract between runtime/publish.py (writer) and parse_report (reader)."""
    import dataclasses

    from halizard import __version__
    from halizard.core.state import Decision, Mode, initial_state
    from halizard.runtime import publish

    state = dataclasses.replace(initial_state(0.0, None), peer_upper=95.5, gateway_upper=99.0)
    decision = Decision(at=100.0, wall=0.0, mode=Mode.SURVIVOR, reason="peer silent 4.5s",
                        actions=(), intents=(), state=state, acting_master=False,
                        peer_dead=False)
    assert parse_report(publish.report_value(decision, 1700000000.0)) == DaemonReport(
        "survivor", "peer silent 4.5s", 1700000000.0, 4.5, 1.0, __version__)
    fresh = decision._replace(state=initial_state(0.0, None), mode=Mode.STARTING)
    assert parse_report(publish.report_value(fresh, 5.0)).peer_seen_ago is None
    # an unchanged report is rewritten well before readers call it stale, retry included
    assert publish.INTERVAL + publish.RETRY + publish.CALL_TIMEOUT * 3 < REPORT_STALE_AFTER
    assert publish.status_key("u1") == "halizard.status.u1"
