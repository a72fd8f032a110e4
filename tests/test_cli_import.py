"""`halizard import-ha-lizard` on a simulated pool prepared the way HA-Lizard leaves one: its
HA_* keys in the pool's other-config and its XenCenter custom field on the pool and the VMs."""
import json

import pytest

from halizard.core.pool import KEY_DEFAULT_RESTART, KEY_ENABLED, KEY_VM_RESTART
from halizard.ha_lizard import Guest, plan_import
from tests.poolcli import login_args, pool_other_config, run, session, start_pool

pytestmark = pytest.mark.runtime

FLAG = "XenCenter.CustomFields.ha-lizard-enabled"
HA_LIZARD = {  # an HA-Lizard 2.4 pool after `ha-cfg insert`, tuned by its operator
    FLAG: "true", "autopromote_uuid": "none_available",
    "HA_XC_FIELD_NAME": "ha-lizard-enabled", "HA_OP_MODE": "2", "HA_GLOBAL_VM_HA": "0",
    "HA_DISABLED_VAPPS": "()", "HA_MONITOR_DELAY": "15", "HA_MONITOR_SCANRATE": "10",
    "HA_MONITOR_MAX_STARTS": "20", "HA_MONITOR_KILLALL": "1", "HA_XE_TIMEOUT": "10",
    "HA_XAPI_COUNT": "2", "HA_XAPI_DELAY": "10", "HA_MGT_LINK_LOSS_TOLERANCE": "5",
    "HA_SLAVE_VM_STAT": "0", "HA_HOST_SELECT_METHOD": "0", "HA_PROMOTE_SLAVE": "1",
    "HA_SLAVE_HA": "1", "HA_FENCE_ENABLED": "1", "HA_FENCE_METHOD": "ILO",
    "HA_FENCE_ACTION": "stop", "HA_FENCE_FILE_LOC": "/etc/ha-lizard/fence",
    "HA_FENCE_PASSWD": "s3cret-ilo", "HA_FENCE_IPADDRESS": "", "HA_FENCE_QUORUM_REQUIRED": "1",
    "HA_FENCE_USE_IP_HEURISTICS": "1", "HA_FENCE_HEURISTICS_IPS": "8.8.8.8",
    "HA_FENCE_MIN_HOSTS": "2", "HA_FENCE_REBOOT_LONE_HOST": "0", "HA_FENCE_HA_ONFAIL": "1",
    "HA_FENCE_HOST_FORGET": "0", "HA_ENABLE_LOGGING": "1", "HA_ENABLE_ALERTS": "1",
    "HA_MAIL_ON": "1", "HA_MAIL_FROM": "root@localhost", "HA_MAIL_TO": "root@localhost",
    "HA_SMTP_SERVER": "127.0.0.1", "HA_SMTP_PORT": "25", "HA_SMTP_USER": "",
    "HA_SMTP_PASS": "", "HA_DISK_MONITOR": "1", "HA_NEW_IN_2_5": "x",
}
VMS = [{"name": "my web server", "host": "xs1", "other_config": {FLAG: "true"}},
       {"name": "db", "host": "xs2", "other_config": {FLAG: "true"}},
       {"name": "scratch", "host": "xs2", "other_config": {FLAG: "false"}},
       {"name": "odd", "host": None, "other_config": {FLAG: "maybe"}},
       {"name": "new", "host": None}]


@pytest.fixture
def pool():
    p = start_pool(VMS, pool_other_config=HA_LIZARD)
    yield p
    p.stop()


@pytest.fixture
def login(pool, tmp_path):
    return login_args(pool, tmp_path)


def snapshot(pool):
    """Every other_config a run could change: the pool's and each VM's."""
    s = session(pool)
    vms = {r["name_label"]: r["other_config"] for r in s.xenapi.VM.get_all_records().values()
           if not r["is_control_domain"]}
    return pool_other_config(pool), vms


def test_dry_run_prints_the_mapping_and_writes_nothing(pool, login, capsys):
    before = snapshot(pool)
    code, out, err = run(capsys, "import-ha-lizard", "--dry-run", *login)
    assert code == 0, err
    assert snapshot(pool) == before
    assert out.rstrip().endswith("dry run: nothing written")
    assert "switch: HA-Lizard on -> halizard on" in out
    assert "VM 'my web server': ha-lizard-enabled=true -> restart" in out
    assert "VM 'scratch': ha-lizard-enabled=false -> never" in out
    assert "VM 'odd': ha-lizard-enabled='maybe', which HA-Lizard does not start" in out
    assert "HA_FENCE_HA_ONFAIL=1: refused as unsafe" in out
    assert "HA_FENCE_HEURISTICS_IPS=8.8.8.8: not imported as halizard's gateway" in out
    assert "8.8.8.8 is HA-Lizard's default, an Internet address" in out
    assert "after XAPI_COUNT x XAPI_DELAY = 20s" in out
    assert "HA_FENCE_METHOD=ILO: not imported: fence devices are host-local" in out
    assert "HA_NEW_IN_2_5: unknown HA-Lizard settings: not imported" in out
    assert "remove HA_FENCE_PASSWD" in out and "s3cret-ilo" not in out


def test_import_writes_the_equivalent_and_stands_ha_lizard_down_first(pool, login, capsys):
    code, out, err = run(capsys, "import-ha-lizard", *login)
    assert code == 1 and "add --yes" in err and snapshot(pool)[0][FLAG] == "true"
    code, out, err = run(capsys, "import-ha-lizard", "--yes", *login)
    assert code == 0, err
    writes = out[out.index("writes:"):out.index("next:")].splitlines()[1:]
    assert writes[0] == "  pool %s = false (was true)" % FLAG  # HA-Lizard off first
    assert writes[-1] == "  pool %s = true (was unset)" % KEY_ENABLED  # halizard on last
    other, vms = snapshot(pool)
    assert other[FLAG] == "false" and other[KEY_ENABLED] == "true"
    assert other[KEY_DEFAULT_RESTART] == "never"
    assert {n: c.get(KEY_VM_RESTART) for n, c in vms.items()} == {
        "my web server": "restart", "db": "restart", "scratch": "never", "odd": None,
        "new": None}
    assert {k: v for k, v in other.items() if k.startswith("HA_")} == {
        k: v for k, v in HA_LIZARD.items() if k.startswith("HA_")}  # HA-Lizard's own: kept
    listed = {v["name"]: v["restart"] for v in json.loads(
        run(capsys, "vm", "list", "--json", *login)[1])}
    assert listed == {"my web server": "restart", "db": "restart", "scratch": "never",
                      "odd": "never", "new": "never"}
    code, out, _ = run(capsys, "import-ha-lizard", "--yes", *login)  # again: nothing to do
    assert code == 0 and "nothing: the pool already says this" in out


def test_a_pool_without_ha_lizard_is_a_clear_error(tmp_path, capsys):
    pool = start_pool(VMS[:1])
    try:
        code, _, err = run(capsys, "import-ha-lizard", "--dry-run", *login_args(pool, tmp_path))
        assert code == 1 and "no HA-Lizard settings in this pool" in err
    finally:
        pool.stop()


def test_global_protection_becomes_the_default_policy():
    guests = [Guest("r1", "u1", "kept out", {"XenCenter.CustomFields.halizard-restart": "never"}),
              Guest("r2", "u2", "flagged off", {FLAG: "false"})]
    plan = plan_import({FLAG: "true", "HA_GLOBAL_VM_HA": "1", "HA_FENCE_HA_ONFAIL": "0"},
                       guests, native_ha=False)
    assert [(w.key, w.value, w.vm) for w in plan.writes] == [
        (FLAG, "false", None), (KEY_DEFAULT_RESTART, "restart", None), (KEY_ENABLED, "true", None)]
    assert "HA_FENCE_HA_ONFAIL=0: halizard never starts VMs after a failed fence" in plan.mapped
    assert any("'kept out': HA-Lizard protected it (global), but it has halizard's own policy "
               "never, which is kept" in u for u in plan.unmapped)


def test_beside_native_ha_halizard_stays_off_and_vapps_are_not_guessed():
    plan = plan_import({FLAG: "true", "HA_OP_MODE": "1", "HA_DISABLED_VAPPS": "a:b"}, [],
                       native_ha=True)
    assert [(w.key, w.value) for w in plan.writes] == [(FLAG, "false")]
    assert any(u.startswith("switch: HA-Lizard was on, but XenServer's own HA is on too")
               for u in plan.unmapped)
    assert any(u.startswith("HA_OP_MODE=1 (vApps, HA_DISABLED_VAPPS=a:b)") for u in plan.unmapped)


def test_ha_lizard_switched_off_leaves_halizards_switch_alone():
    plan = plan_import({FLAG: "false", "HA_GLOBAL_VM_HA": "0"}, [], native_ha=False)
    assert [(w.key, w.value) for w in plan.writes] == [(KEY_DEFAULT_RESTART, "never")]
    assert "switch: HA-Lizard off -> halizard's switch left as it is (off)" in plan.mapped
    assert plan.next_steps[-1] == "check with `halizard status`, and `halizard enable` when ready"


def test_ha_lizards_mail_settings_become_an_alerts_email_table_for_each_host():
    plan = plan_import({FLAG: "true", "HA_MAIL_ON": "1", "HA_MAIL_FROM": "ha@example.com",
                        "HA_MAIL_TO": "ops@example.com,oncall@example.com",
                        "HA_SMTP_SERVER": "smtp.example.com", "HA_SMTP_PORT": "587",
                        "HA_SMTP_USER": "ha", "HA_SMTP_PASS": "s3cret"}, [], native_ha=False)
    (note,) = [u for u in plan.unmapped if u.startswith("HA_MAIL_ON")]
    assert ('[alerts.email]; server = "smtp.example.com"; port = 587; security = "starttls"; '
            'from = "ha@example.com"; to = ["ops@example.com", "oncall@example.com"]; '
            'username = "ha"; password_file = "/etc/halizard/smtp-password"  # mode 0600') in note
    assert "s3cret" not in repr(plan)
    local = plan_import({FLAG: "true", "HA_MAIL_ON": "1", "HA_SMTP_SERVER": "127.0.0.1"}, [],
                        native_ha=False)
    assert any("dom0 runs no mail server: its mail never left" in u for u in local.unmapped)
