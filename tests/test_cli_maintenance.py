"""`halizard maintenance on|off` against the wire-level simulated pool: the master role is
handed over and the protected VMs are live-migrated, each by a deadline."""
import json
import subprocess

import pytest

from halizard import maintenance
from halizard.core.pool import maintenance_key
from tests.poolcli import (
    login_args,
    pool_other_config,
    run,
    session,
    set_pool_key,
    start_pool,
)

pytestmark = pytest.mark.runtime

GiB = 1 << 30
VMS = [{"name": "my web server", "host": "xs1", "restart": "restart", "order": 1},
       {"name": "db", "host": "xs1", "restart": "best-effort", "order": 0},
       {"name": "scratch", "host": "xs1"},
       {"name": "mail", "host": "xs2", "restart": "restart"}]


@pytest.fixture
def pool():
    p = start_pool(VMS)
    yield p
    p.stop()


def host_record(pool, name, via="xs2"):
    s = session(pool, via)
    return s.xenapi.host.get_record(s.xenapi.host.get_by_uuid(pool.host_uuid(name)))


def test_maintenance_on_the_master_hands_over_and_moves_the_protected_vms(pool, tmp_path,
                                                                           capsys):
    login = login_args(pool, tmp_path, "xs1")  # no --host: the host --xapi names
    code, out, err = run(capsys, "maintenance", "on", "--yes", "--timeout", "60", *login)
    assert code == 0, out + err
    assert pool.role("xs2") == "master" and pool.role("xs1") == "slave"
    assert pool.domains("xs2") == {pool.vm_uuid(n) for n in ("my web server", "db", "mail")}
    assert pool.domains("xs1") == {pool.vm_uuid("scratch")}  # policy never: left, and said so
    assert "left running on xs1 (restart policy never, so not moved): scratch" in err
    lines = out.splitlines()
    assert lines[:3] == ["xs1: in maintenance", "xs1: handing the master role to xs2",
                         "xs2: pool master"]
    assert lines[3].split()[:4] == ["db", "moved", "to", "xs2"]  # start order first
    assert lines[4].split()[:6] == ["my", "web", "server", "moved", "to", "xs2"]
    assert lines[-1] == "xs1 can be rebooted; afterwards: halizard maintenance off --host xs1"
    assert pool_other_config(pool, "xs2")[maintenance_key(pool.host_uuid("xs1"))] == "true"
    assert host_record(pool, "xs1")["enabled"] is False

    login = login_args(pool, tmp_path, "xs2")
    code, out, err = run(capsys, "maintenance", "off", "--host", "xs1", *login)
    assert code == 0, err
    assert out == "xs1: out of maintenance\nxs1: enabled\n"
    assert maintenance_key(pool.host_uuid("xs1")) not in pool_other_config(pool, "xs2")
    assert host_record(pool, "xs1")["enabled"] is True


def test_maintenance_on_a_slave_moves_its_vms_and_keeps_the_master(pool, tmp_path, capsys):
    login = login_args(pool, tmp_path, "xs1")
    code, out, err = run(capsys, "maintenance", "on", "--host", "xs2", "--yes", *login)
    assert code == 0, out + err
    assert "handing" not in out and pool.role("xs1") == "master"
    assert pool.vm_uuid("mail") in pool.domains("xs1") and pool.domains("xs2") == set()


def test_a_vm_that_cannot_move_leaves_maintenance_on_and_says_what_to_do(tmp_path, capsys):
    pool = start_pool(VMS, host_memory={"xs1": 64 * GiB, "xs2": 9 * GiB})  # room for 2 VMs
    try:
        login = login_args(pool, tmp_path, "xs1")
        code, out, err = run(capsys, "maintenance", "on", "--host", "xs1", "--yes", *login)
        assert code == 1
        assert "my web server            NOT MOVED: HOST_NOT_ENOUGH_FREE_MEMORY" in out
        assert "1 protected VM still on xs1: my web server. Maintenance stays on" in err
        assert "run `halizard maintenance on --host xs1` again to retry" in err
        assert pool_other_config(pool, "xs2")[maintenance_key(pool.host_uuid("xs1"))] == "true"
        assert pool.vm_uuid("my web server") in pool.domains("xs1")
    finally:
        pool.stop()


def test_maintenance_refusals_change_nothing(pool, tmp_path, capsys):
    login = login_args(pool, tmp_path, "xs1")
    code, _, err = run(capsys, "maintenance", "on", "--host", "xs1", *login)
    assert code == 1 and "add --yes" in err  # no terminal to ask on
    code, _, err = run(capsys, "maintenance", "on", "--host", "xs9", "--yes", *login)
    assert code == 1 and "no host is named 'xs9'. Hosts: xs1 (127.0.0.11), xs2" in err
    assert not any(k.startswith("halizard.maintenance.") for k in pool_other_config(pool))
    pool.crash("xs2")
    code, _, err = run(capsys, "maintenance", "on", "--host", "xs1", "--yes", *login)
    assert code == 1 and "cannot empty xs1: xs2's xapi does not answer (TIMEOUT)" in err
    assert not any(k.startswith("halizard.maintenance.") for k in pool_other_config(pool))
    assert pool.role("xs1") == "master"


def test_on_its_own_socket_the_default_host_is_the_local_one(tmp_path, capsys, monkeypatch):
    pool = start_pool(VMS, unix_dir=str(tmp_path))
    try:
        inventory = tmp_path / "xensource-inventory"
        inventory.write_text("PRODUCT_BRAND='XCP-ng'\nINSTALLATION_UUID='%s'\n"
                             % pool.host_uuid("xs2"))
        set_pool_key(pool, maintenance_key(pool.host_uuid("xs2")), "true")
        monkeypatch.setattr(maintenance, "INVENTORY", str(inventory))
        local = ["--xapi", "unix:" + pool.unix_path("xs1")]
        code, out, err = run(capsys, "maintenance", "off", *local)
        assert code == 0 and out == "xs2: out of maintenance\n", err
        assert maintenance_key(pool.host_uuid("xs2")) not in pool_other_config(pool)
        monkeypatch.setattr(maintenance, "INVENTORY", str(tmp_path / "none"))
        code, _, err = run(capsys, "maintenance", "off", *local)
        assert code == 1 and "cannot tell which host this is" in err and "give --host" in err
    finally:
        pool.stop()


def test_the_inventory_names_the_local_host():
    assert maintenance.inventory_uuid("A='b'\nINSTALLATION_UUID='1234-ab'\n") == "1234-ab"
    assert maintenance.inventory_uuid("INSTALLATION_UUID=\"x\"") == "x"
    assert maintenance.inventory_uuid("CONTROL_DOMAIN_UUID='y'\n") is None


def test_on_the_master_itself_through_its_socket_without_a_password(tmp_path, capsys,
                                                                    monkeypatch):
    """The usual way: root on the master, no --xapi, no password. The other host is asked over
    HTTPS on 443 as on a real pool; the session on the new master is found through the local
    socket again, never by a login that needs a password."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=xapi-sim"],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    try:
        pool = start_pool(VMS, unix_dir=str(tmp_path), tls=(cert, key), port=443)
    except OSError as exc:
        pytest.skip("port 443 on the loopback addresses is taken: %s" % exc)
    try:
        inventory = tmp_path / "xensource-inventory"
        inventory.write_text("INSTALLATION_UUID='%s'\n" % pool.host_uuid("xs1"))
        monkeypatch.setattr(maintenance, "INVENTORY", str(inventory))
        monkeypatch.setenv("HALIZARD_XAPI", "unix:" + pool.unix_path("xs1"))
        code, out, err = run(capsys, "maintenance", "on", "--yes", "--timeout", "60")
        assert code == 0, out + err
        assert "xs2: pool master" in out and pool.role("xs2") == "master"
        assert pool.domains("xs1") == {pool.vm_uuid("scratch")}
        code, out, err = run(capsys, "status", "--json")
        hosts = {h["name"]: h["xapi"] for h in json.loads(out)["hosts"]}
        assert hosts == {"xs1": "slave", "xs2": "master"}, err
    finally:
        pool.stop()
