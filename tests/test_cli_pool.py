"""The operator's pool commands against the wire-level simulated pool, with the real XenAPI
client underneath (halizard.admin over halizard.runtime.xapi)."""
import json
import os
import threading
import time

import pytest

from halizard import cli_pool
from halizard.cli import main
from halizard.core.pool import KEY_ENABLED, KEY_VM_RESTART, status_key
from tests.poolcli import (
    login_args,
    pool_other_config,
    publish,
    run,
    session,
    set_pool_key,
    start_pool,
    vm_record,
)

pytestmark = pytest.mark.runtime

VMS = [{"name": "my web server", "host": "xs1", "restart": "restart"},
       {"name": "db", "host": "xs2", "restart": "best-effort"},
       {"name": "dup", "host": None}, {"name": "dup", "host": None, "uuid": "dup-2"},
       {"name": "scratch", "host": "xs2"}]


@pytest.fixture
def pool():
    p = start_pool(VMS)
    yield p
    p.stop()


@pytest.fixture
def login(pool, tmp_path):
    return login_args(pool, tmp_path)


@pytest.fixture
def daemons(pool):
    """Both daemons running and settled, as far as `status` can tell."""
    for host in ("xs1", "xs2"):
        publish(pool, host)


def test_status_is_healthy_then_degraded_when_the_peer_crashes(pool, login, daemons, capsys):
    code, out, _ = run(capsys, "status", "--json", *login)
    report = json.loads(out)
    assert code == 0 and report["health"] == "healthy", report["problems"]
    assert report["master"] == "xs1" and {h["xapi"] for h in report["hosts"]} == {"master",
                                                                                 "slave"}
    web = next(v for v in report["vms"] if v["name"] == "my web server")
    assert web == {"name": "my web server", "uuid": pool.vm_uuid("my web server"),
                   "restart": "restart", "power_state": "Running", "host": "xs1", "order": 0,
                   "start_delay": 0.0}
    pool.crash("xs2")
    code, out, _ = run(capsys, "status", *login)
    assert code == 1 and "host xs2: its xapi does not answer (TIMEOUT)" in out


def test_status_says_unprotected_when_ha_is_off(pool, login, capsys):
    assert run(capsys, "disable", "--yes", *login)[0] == 0
    code, out, _ = run(capsys, "status", *login)
    assert code == 2 and "halizard is switched off" in out


def test_enable_is_refused_beside_native_ha_and_writes_nothing(pool, login, capsys):
    assert run(capsys, "disable", "--yes", *login)[0] == 0
    pool.set_native_ha(True)
    code, _, err = run(capsys, "enable", *login)
    assert code == 1 and "XenServer's own HA is enabled" in err
    s = session(pool)
    assert s.xenapi.pool.get_other_config(s.xenapi.pool.get_all()[0])[KEY_ENABLED] == "false"
    assert run(capsys, "status", *login)[0] == 2


def test_disable_asks_and_without_a_terminal_needs_yes(pool, login, capsys):
    code, _, err = run(capsys, "disable", *login)
    assert code == 1 and "add --yes" in err
    s = session(pool)
    assert s.xenapi.pool.get_other_config(s.xenapi.pool.get_all()[0])[KEY_ENABLED] == "true"
    assert run(capsys, "disable", "--yes", *login)[1] == "halizard is off\n"
    assert run(capsys, "disable", "--yes", *login)[1] == "halizard is off (it already was)\n"
    assert run(capsys, "enable", *login)[1] == "halizard is on\n"


def test_vm_set_takes_names_with_spaces_and_sets_order_and_delay(pool, login, capsys):
    code, out, err = run(capsys, "vm", "set", "my web server", "scratch", "--restart",
                         "best-effort", "--order", "2", "--start-delay", "5", *login)
    assert code == 0, err
    for name in ("my web server", "scratch"):
        record = vm_record(pool, name)
        assert record["other_config"][KEY_VM_RESTART] == "best-effort"
        assert (record["order"], record["start_delay"]) == ("2", "5")
    listed = json.loads(run(capsys, "vm", "list", "--json", *login)[1])
    assert {v["name"]: v["order"] for v in listed}["scratch"] == 2


def test_unknown_and_ambiguous_names_list_candidates_and_change_nothing(pool, login, capsys):
    code, _, err = run(capsys, "vm", "set", "scratch", "my web srever", "dup", "--restart",
                       "never", *login)
    assert code == 1
    assert "no VM is named 'my web srever'; did you mean: 'my web server'" in err
    assert "'dup' names 2 VMs; use a UUID: " in err and "dup-2" in err
    assert KEY_VM_RESTART not in vm_record(pool, "scratch")["other_config"]  # all or nothing
    code, _, err = run(capsys, "vm", "set", "dup-2", "--restart", "restart", *login)
    assert code == 0, err


def test_bad_input_is_a_clear_error(pool, login, capsys, tmp_path):
    assert "nothing to set" in run(capsys, "vm", "set", "db", *login)[2]
    assert "--order must be 0 or more" in run(capsys, "vm", "set", "db", "--order", "-1",
                                              *login)[2]
    loose = tmp_path / "loose"
    loose.write_text(pool.credentials[1])
    os.chmod(str(loose), 0o644)
    code, _, err = run(capsys, "status", "--xapi", pool.url("xs1"), "--password-file",
                       str(loose))
    assert code == 2 and "mode 644 lets others read the password; chmod 600 it" in err
    assert "expected unix:PATH" in run(capsys, "status", "--xapi", "xs1.example")[2]


def test_a_slave_names_its_master_and_the_command_follows(pool, login, capsys):
    argv = list(login)
    argv[1] = pool.url("xs2")
    code, out, err = run(capsys, "vm", "set", "db", "--restart", "never", *argv)
    assert code == 0, err
    assert vm_record(pool, "db")["other_config"][KEY_VM_RESTART] == "never"


# --- daemon states, --watch, --wait -------------------------------------------------------------


def test_status_shows_each_daemon_and_a_missing_stale_or_garbled_report_degrades(pool, login,
                                                                                 capsys):
    publish(pool, "xs1", state="normal", reason="peer visible; all protected VMs running")
    publish(pool, "xs2", state="survivor", reason="peer silent 4.5s, gateway visible")
    code, out, _ = run(capsys, "status", "--json", *login)
    report = json.loads(out)
    daemons = {h["name"]: h["daemon"] for h in report["hosts"]}
    assert daemons["xs1"]["report"] == "current" and daemons["xs1"]["state"] == "normal"
    assert daemons["xs1"]["peer_seen_ago"] == 0.4 and daemons["xs1"]["gateway_seen_ago"] == 0.6
    assert 0.5 < daemons["xs1"]["age"] < 60 and daemons["xs1"]["version"] == "0.1.0"
    assert code == 1 and report["problems"] == [
        "host xs2: daemon survivor: peer silent 4.5s, gateway visible"]

    publish(pool, "xs2", age=400.0)
    code, out, _ = run(capsys, "status", *login)
    assert code == 1
    assert "STALE normal (report 6m40s old" in out
    assert "host xs2: its daemon's last report is stale (6m40s old)" in out

    publish(pool, "xs2", value='{"state": "normal", "at": "yesterday"')
    code, out, _ = run(capsys, "status", *login)
    assert code == 1 and "daemon: unreadable report" in out
    assert "host xs2: its daemon's report is unreadable" in out

    set_pool_key(pool, status_key(pool.host_uuid("xs2")), None)
    code, out, _ = run(capsys, "status", *login)
    assert code == 1 and "daemon: no report (daemon not running?)" in out
    assert json.loads(run(capsys, "status", "--json", *login)[1])["hosts"][1]["daemon"] == {
        "report": "absent", "state": None, "reason": None, "age": None, "peer_seen_ago": None,
        "gateway_seen_ago": None, "version": None}


def test_without_ha_a_missing_report_is_no_extra_problem(pool, login, capsys):
    assert run(capsys, "disable", "--yes", *login)[0] == 0
    code, out, _ = run(capsys, "status", "--json", *login)
    assert code == 2 and json.loads(out)["problems"] == [
        "halizard is switched off for this pool (halizard enable)"]


def test_status_watch_redraws_until_interrupted(pool, login, daemons, capsys, monkeypatch):
    looks = []

    def sleep(seconds):
        looks.append(seconds)
        if len(looks) == 2:
            pool.crash("xs2")  # the third look sees it
        if len(looks) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_pool, "_sleep", sleep)
    code, out, _ = run(capsys, "status", "--watch", "2", *login)
    assert looks == [2.0, 2.0, 2.0]
    assert out.count("pool: healthy") == 2 and out.count("pool: degraded") == 1
    assert code == 1  # the last look's health
    code, out, _ = run(capsys, "status", "--watch", "0", *login)
    assert code == 2


def test_status_watch_json_is_one_document_per_line(pool, login, daemons, capsys, monkeypatch):
    def sleep(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_pool, "_sleep", sleep)
    code, out, _ = run(capsys, "status", "--watch", "1", "--json", *login)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 and json.loads(lines[0])["health"] == "healthy"


def test_enable_wait_times_out_without_daemon_reports(pool, login, capsys):
    assert run(capsys, "disable", "--yes", *login)[0] == 0
    started = time.monotonic()
    code, out, err = run(capsys, "enable", "--wait", "--timeout", "0.6", *login)
    assert code == 1 and out.startswith("halizard is on\n")
    assert "xs1: its daemon did not acknowledge within 0.6s; its report: no report" in err
    assert "the switch is written" in err
    assert time.monotonic() - started < 10
    assert pool_other_config(pool)[KEY_ENABLED] == "true"


def test_disable_wait_returns_once_each_daemon_reports_disabled(pool, login, daemons, capsys):
    result = {}

    def disable():
        result["code"] = main(["disable", "--yes", "--wait", "--timeout", "20"] + login)

    waiter = threading.Thread(target=disable)
    waiter.start()
    pool.wait_until(lambda: pool.model.pool_other_config("xs1").get(KEY_ENABLED)
                    == "false", 10, "the switch written")
    publish(pool, "xs1", state="disabled", reason="HA is disabled for the pool")
    assert waiter.is_alive()  # xs2 has not acknowledged yet
    publish(pool, "xs2", state="disabled", reason="HA is disabled for the pool")
    waiter.join(20)
    out = capsys.readouterr().out
    assert result == {"code": 0}, out
    assert "xs1: acknowledged" in out and "xs2: acknowledged" in out


def test_status_names_unsafe_pool_timing_and_this_hosts_topology_caveat(pool, login, daemons,
                                                                         capsys, tmp_path,
                                                                         monkeypatch):
    one_path = tmp_path / "halizard.toml"
    one_path.write_text('peer_addresses = ["198.18.0.12"]\ngateway_addresses = ["198.18.0.1"]\n')
    monkeypatch.setenv("HALIZARD_CONFIG", str(one_path))
    code, out, _ = run(capsys, "status", "--json", *login)
    report = json.loads(out)
    assert code == 0 and report["problems"] == []  # a caveat, not a fault
    assert len(report["warnings"]) == 1
    assert "peer_addresses: only one heartbeat path and no fence agent" in report["warnings"][0]
    set_pool_key(pool, "halizard.config.takeover_delay", "9s")  # written behind our back
    code, out, _ = run(capsys, "status", *login)
    assert code == 1 and "%s: takeover_delay: unsafe" % one_path in out
    code, out, _ = run(capsys, "status", "--config", str(tmp_path / "none.toml"), *login)
    assert code == 1 and "pool-wide settings (checked as for a host with a fence agent and " \
                         "two paths): takeover_delay: unsafe" in out
