"""`halizard config validate|show|set|unset` against the wire-level simulated pool: pool-wide
values are checked before anything is written, and host-local keys stay in the file."""
import json
import os

import pytest

from halizard.core.pool import KEY_CONFIG_PREFIX
from tests.poolcli import login_args, pool_other_config, run, set_pool_key, start_pool

pytestmark = pytest.mark.runtime

HOST_FILE = 'peer_addresses = ["198.18.0.12", "198.19.0.12"]\ngateway_addresses = ["198.18.0.1"]\n'


@pytest.fixture
def pool():
    p = start_pool([{"name": "web", "host": "xs1", "restart": "restart"}])
    yield p
    p.stop()


@pytest.fixture
def login(pool, tmp_path):
    return login_args(pool, tmp_path)


@pytest.fixture
def absent(tmp_path):
    """No configuration file on this host (a workstation)."""
    return ["--config", str(tmp_path / "absent.toml")]


def config_keys(pool):
    return {k: v for k, v in pool_other_config(pool).items() if k.startswith(KEY_CONFIG_PREFIX)}


def host_file(tmp_path, text=HOST_FILE):
    path = tmp_path / "halizard.toml"
    path.write_text(text)
    os.chmod(str(path), 0o600)
    return ["--config", str(path)]


def test_set_writes_a_safe_value_for_both_hosts(pool, login, absent, capsys):
    code, out, err = run(capsys, "config", "set", "takeover_delay", "15s", *login, *absent)
    assert code == 0, err
    assert out.splitlines()[0] == "takeover_delay = 15s pool-wide (was not set pool-wide)"
    assert "restart them on both hosts" in out
    assert "checked the pool-wide values alone" in err
    assert config_keys(pool) == {"halizard.config.takeover_delay": "15s"}
    code, out, _ = run(capsys, "config", "set", "gateway_policy", "majority", *login, *absent)
    assert code == 0 and config_keys(pool)["halizard.config.gateway_policy"] == "majority"


def test_an_unsafe_timing_is_refused_with_its_numbers_and_nothing_is_written(pool, login,
                                                                              absent, capsys):
    set_pool_key(pool, "halizard.config.takeover_delay", "15s")
    code, out, err = run(capsys, "config", "set", "takeover_delay", "9s", *login, *absent)
    assert code == 1 and out == ""
    assert "takeover_delay: unsafe" in err
    assert "9.000s > (1 + 0.0005) * (1.300s + (4.000s + 5.000s) / (1 - 0.0005)) + 1.000s" in err
    assert "refused: takeover_delay = 9s would be unsafe; nothing written" in err
    assert config_keys(pool) == {"halizard.config.takeover_delay": "15s"}
    # fence_delay is checked as on a host with a fence agent, whatever this host has
    code, _, err = run(capsys, "config", "set", "fence_delay", "5s", *login, *absent)
    assert code == 1 and "fence_delay: too short for a deterministic tie-break" in err
    assert config_keys(pool) == {"halizard.config.takeover_delay": "15s"}


def test_a_value_unsafe_with_this_hosts_file_is_refused(pool, login, tmp_path, capsys):
    # the file sets a pool-wide key of its own: a longer watchdog needs a longer takeover delay
    config = host_file(tmp_path, HOST_FILE + 'watchdog_timeout = "7s"\ntakeover_delay = "20s"\n')
    code, _, err = run(capsys, "config", "set", "takeover_delay", "12.5s", *login, *config)
    assert code == 1
    assert "%s: takeover_delay: unsafe" % config[1] in err
    assert config_keys(pool) == {}
    assert run(capsys, "config", "set", "takeover_delay", "14s", *login, *config)[0] == 0


def test_host_local_secret_and_unknown_keys_are_refused_naming_where_they_belong(
        pool, login, absent, capsys):
    code, _, err = run(capsys, "config", "set", "peer_addresses", "10.0.0.2", *login, *absent)
    assert code == 1 and "peer_addresses is host-local: set it in /etc/halizard/halizard.toml" \
        " on each host" in err
    code, _, err = run(capsys, "config", "set", "fence_options", "x", *login, *absent)
    assert code == 1 and "secrets never go to the pool database" in err
    code, _, err = run(capsys, "config", "set", "takeover_dealy", "15s", *login, *absent)
    assert code == 1 and "unknown key 'takeover_dealy' (did you mean 'takeover_delay'?)" in err
    code, _, err = run(capsys, "config", "set", "takeover_delay", "15", *login, *absent)
    assert code == 1 and "takeover_delay: expected a duration with a unit" in err
    assert config_keys(pool) == {}


def test_unset_is_checked_too(pool, login, absent, capsys):
    set_pool_key(pool, "halizard.config.lease_timeout", "3s")
    set_pool_key(pool, "halizard.config.watchdog_timeout", "4s")
    set_pool_key(pool, "halizard.config.takeover_delay", "10s")
    code, _, err = run(capsys, "config", "unset", "lease_timeout", *login, *absent)
    assert code == 1 and "takeover_delay: unsafe" in err and "nothing written" in err
    assert "halizard.config.lease_timeout" in config_keys(pool)
    code, out, err = run(capsys, "config", "unset", "takeover_delay", *login, *absent)
    assert code == 0, err
    assert out.splitlines()[0] == "takeover_delay unset pool-wide (was 10s)"
    assert "halizard.config.takeover_delay" not in config_keys(pool)


def test_show_gives_each_value_and_its_source(pool, login, tmp_path, capsys):
    config = host_file(tmp_path, HOST_FILE + 'probe_timeout = "250ms"\n')
    set_pool_key(pool, "halizard.config.takeover_delay", "15s")
    code, out, err = run(capsys, "config", "show", "--json", *login, *config)
    shown = json.loads(out)
    assert code == 0 and shown["valid"] and shown["problems"] == [], err
    settings = {s["key"]: s for s in shown["settings"]}
    assert settings["takeover_delay"] == {"key": "takeover_delay", "value": "15s",
                                          "source": "pool", "scope": "pool"}
    assert settings["probe_timeout"]["source"] == "file"
    assert settings["lease_timeout"] == {"key": "lease_timeout", "value": "4s",
                                         "source": "default", "scope": "pool"}
    assert settings["peer_addresses"]["value"] == ["198.18.0.12", "198.19.0.12"]
    code, out, _ = run(capsys, "config", "show", *login, *config)
    assert code == 0 and "takeover_delay          15.000s > 11.2" in out  # probe_timeout 250ms


def test_show_reports_garbage_in_the_pool_and_hides_fence_secrets(pool, login, tmp_path,
                                                                  capsys):
    config = host_file(tmp_path, HOST_FILE + 'fence_agent = "fence_ipmilan"\n'
                       '[fence_options]\nip = "10.1.0.2"\npassword = "hunter2"\n')
    set_pool_key(pool, "halizard.config.promote_delay", "soon")
    code, out, _ = run(capsys, "config", "show", "--json", *login, *config)
    shown = json.loads(out)
    assert code == 1 and not shown["valid"]
    assert shown["problems"] == ["pool: halizard.config.promote_delay: not applied: expected a "
                                 "duration with a unit such as \"500ms\", \"5s\" or \"2m\", got "
                                 "'soon'"]
    assert {s["key"]: s["value"] for s in shown["settings"]}["fence_options"] == ["ip",
                                                                                  "password"]
    assert "hunter2" not in out
    assert "hunter2" not in run(capsys, "config", "show", *login, *config)[1]


def test_validate_refuses_a_readable_file_with_fence_passwords(tmp_path, capsys):
    path = tmp_path / "halizard.toml"
    path.write_text(HOST_FILE + 'takeover_delay = "15s"\nfence_agent = "fence_ipmilan"\n'
                    '[fence_options]\npassword = "hunter2"\n')
    os.chmod(str(path), 0o644)
    code, _, err = run(capsys, "config", "validate", str(path))
    assert code == 1 and "fence_options: the configuration file %s is mode 0644: it holds a " \
                         "secret, so it must be 0600" % path in err
    os.chmod(str(path), 0o600)
    code, out, err = run(capsys, "config", "validate", str(path))
    assert code == 0 and out.startswith("%s: valid\n" % path)
    assert "takeover_delay is pool-wide" in err
    code, _, err = run(capsys, "config", "validate", str(tmp_path / "none.toml"))
    assert code == 1 and "no such file" in err
