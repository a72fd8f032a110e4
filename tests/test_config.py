import pytest

from halizard.core.config import ConfigError, config_to_table, load_config
from halizard.core.timing import bounds, check_timing, explain
from halizard.core.units import UnitError, format_duration, parse_duration, parse_size

BASE = {"peer_addresses": ["198.18.0.12"], "gateway_addresses": ["198.18.0.1"]}

pytestmark = pytest.mark.runtime


def load(**overrides):
    table = dict(BASE)
    table.update(overrides)
    return load_config(table, source="/etc/halizard/halizard.toml")


def test_defaults_are_valid_and_name_no_real_address():
    loaded = load()
    assert loaded.config.takeover_delay == 12.0
    import dataclasses

    from halizard.core.config import Config
    for f in dataclasses.fields(Config):
        default = f.default
        assert "8.8" not in str(default)
    with pytest.raises(ConfigError) as exc:
        load_config({}, source="x.toml")
    text = str(exc.value)
    assert "x.toml: peer_addresses: required" in text
    assert "x.toml: gateway_addresses: required" in text


def test_errors_name_the_key_and_the_file():
    with pytest.raises(ConfigError) as exc:
        load(peer_timout="3s", probe_interval=1, gateway_policy="some")
    text = str(exc.value)
    assert "/etc/halizard/halizard.toml: peer_timout: unknown key (did you mean 'peer_timeout'?)" in text
    assert "/etc/halizard/halizard.toml: probe_interval: expected a duration with a unit" in text
    assert "gateway_policy: must be one of any, all, majority" in text


def test_names_are_refused_as_addresses():
    with pytest.raises(ConfigError) as exc:
        load(gateway_addresses=["gateway.example"])
    assert "gateway_addresses: 'gateway.example' is not an IP address" in str(exc.value)


def test_unsafe_takeover_delay_is_refused_with_the_inequality_and_numbers():
    with pytest.raises(ConfigError) as exc:
        load(takeover_delay="11300ms")
    text = str(exc.value)
    assert "takeover_delay: unsafe" in text
    assert "11.300s > (1 + 0.0005) * (1.300s + (4.000s + 5.000s) / (1 - 0.0005)) + 1.000s = 11.310s" in text


def test_longer_watchdog_needs_longer_takeover():
    with pytest.raises(ConfigError):
        load(watchdog_timeout="8s")
    assert load(watchdog_timeout="8s", takeover_delay="16s").config.watchdog_timeout == 8.0


def test_watchdog_timeout_must_be_whole_seconds():
    with pytest.raises(ConfigError) as exc:
        load(watchdog_timeout="5500ms", takeover_delay="20s")
    assert "whole seconds" in str(exc.value)


def test_n01_warning_without_second_path_or_fence_agent():
    warnings = load().warnings
    assert len(warnings) == 1 and warnings[0].key == "peer_addresses"
    assert "N01" in warnings[0].message
    assert not load(peer_addresses=["198.18.0.12", "198.18.1.12"]).warnings
    assert not load(fence_agent="fence_ipmilan").warnings


def test_peer_timeout_must_come_before_promotion():
    with pytest.raises(ConfigError) as exc:
        load(peer_timeout="9s")
    assert "peer_timeout: must be shorter than promote_delay" in str(exc.value)


def test_fence_delay_must_let_the_master_fence_first():
    with pytest.raises(ConfigError) as exc:
        load(fence_agent="fence_ipmilan", fence_delay="5s")
    assert "fence_delay: too short for a deterministic tie-break" in str(exc.value)


def test_round_trip_through_a_table():
    config = load(fence_agent="fence_ipmilan", fence_options={"ip": "198.18.5.5"}).config
    again = load_config(config_to_table(config)).config
    assert again == config


def test_explain_lists_every_rule_with_numbers():
    text = explain(load().config)
    assert "takeover_delay          12.000s > 11.310s required" in text
    assert "isolation never fenced" in text


def test_tolerances_follow_the_configuration():
    b = bounds(load().config)
    assert b.cycle_max == 1.0
    # the lease (4 s) less the lead of the round that decides at its expiry (0.3 s) on the
    # fastest clock, less one cycle (1 s) on the slowest; the watchdog (5 s) less a cycle and
    # the reads of one round (0.5 s); the fence agent's peer_timeout (4 s) like the lease
    assert abs(b.isolation_tolerance - (3.7 / 1.0005 - 1.0 / 0.9995)) < 1e-9
    assert abs(b.freeze_tolerance - (5.0 / 1.0005 - 1.5 / 0.9995)) < 1e-9
    assert abs(b.fence_tolerance - b.isolation_tolerance) < 1e-9
    assert check_timing(load().config)[0][0] == "warning"


@pytest.mark.parametrize("text,seconds", [("250ms", 0.25), ("40s", 40.0), ("5m", 300.0),
                                          ("1.5s", 1.5), ("2h", 7200.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5", 5, "5 sec", "", "-1s", True])
def test_bad_durations(bad):
    with pytest.raises(UnitError):
        parse_duration(bad)


def test_sizes_and_formatting():
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("512MiB") == 512 << 20
    with pytest.raises(UnitError):
        parse_size("4G")
    assert format_duration(0.25) == "250ms"
    assert format_duration(13.0) == "13s"
    assert format_duration(600.0) == "10m"


def test_a_fence_agents_options_never_show_in_a_repr():
    from halizard.core.config import FenceAgent

    agent = FenceAgent("fence_ipmilan", (("ip", "198.18.0.9"), ("password", "s3cret")))
    assert "s3cret" not in repr(agent) and "password" in repr(agent)
    assert "s3cret" not in repr(agent.__class__("x", agent.options))


# --- pool-wide settings ---------------------------------------------------------------------


def test_every_key_lives_either_in_the_pool_or_on_the_host():
    from halizard.core.config import _KNOWN, HOST_LOCAL_KEYS, POOL_WIDE_KEYS

    assert set(POOL_WIDE_KEYS) | set(HOST_LOCAL_KEYS) == set(_KNOWN)
    assert not set(POOL_WIDE_KEYS) & set(HOST_LOCAL_KEYS)
    assert {"takeover_delay", "lease_timeout", "gateway_policy", "probe_count"} <= set(
        POOL_WIDE_KEYS)
    assert "fence_options" in HOST_LOCAL_KEYS  # secrets never go to the pool database
    assert {"xapi_url", "interfaces", "xapi_password_file"} <= set(HOST_LOCAL_KEYS)


def test_pool_values_overlay_the_file_and_garbage_is_not_applied():
    from halizard.core.config import merge_pool_settings

    table = dict(BASE, takeover_delay="20s", lease_timeout="4s")
    pool = {"halizard.config.takeover_delay": "15s", "halizard.config.probe_count": " 4 ",
            "halizard.config.max_drift_ppm": "250", "halizard.config.gateway_policy": "all",
            "halizard.config.lease_timeout": "4", "halizard.config.peer_addresses": "10.0.0.9",
            "halizard.config.takover_delay": "9s", "halizard.config.fence_options": "x",
            "XenCenter.CustomFields.halizard-enabled": "true"}
    merged, problems = merge_pool_settings(table, pool)
    assert merged == dict(BASE, takeover_delay="15s", lease_timeout="4s", probe_count=4,
                          max_drift_ppm=250, gateway_policy="all")
    rendered = [p.render("pool") for p in problems]
    assert rendered == [
        "pool: halizard.config.fence_options: not applied: fence_options is host-local and "
        "holds secrets: set it in /etc/halizard/halizard.toml on each host (mode 0600); "
        "secrets never go to the pool database",
        "pool: halizard.config.lease_timeout: not applied: expected a duration with a unit "
        "such as \"500ms\", \"5s\" or \"2m\", got '4'",
        "pool: halizard.config.peer_addresses: not applied: peer_addresses is host-local: set "
        "it in /etc/halizard/halizard.toml on each host (each host has its own)",
        "pool: halizard.config.takover_delay: not applied: unknown key 'takover_delay' (did "
        "you mean 'takeover_delay'?)"]
    assert load_config(merged).config.takeover_delay == 15.0


def test_pool_setting_values_are_checked_one_by_one():
    from halizard.core.config import parse_pool_setting

    assert parse_pool_setting("promote_delay", "7500ms") == "7500ms"
    assert parse_pool_setting("max_drift_ppm", "12.5") == 12.5
    for key, text in (("probe_count", "-1"), ("probe_count", "3.5"), ("max_drift_ppm", "nan"),
                      ("gateway_policy", "some"), ("takeover_delay", "15"),
                      ("takeover_delay", 15), ("peer_addresses", "10.0.0.1")):
        with pytest.raises(ValueError):
            parse_pool_setting(key, text)
