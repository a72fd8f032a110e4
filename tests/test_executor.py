"""The real executor's contract, with every host component replaced by a fake: the same rules
the simulator keeps (stale actions refused before they are performed, results in order), plus
its own (an effect that overruns its deadline ends the daemon; the role files)."""
import os
import time
from typing import Any, List, Optional

import pytest

from halizard import effects as fx
from halizard.core.config import ConfigError
from halizard.runtime.executor import ExecutorError, Host, RealExecutor
from halizard.runtime.localhost import LocalFileError, StateStore, read_pool_role
from halizard.runtime.settings import load_host_config
from halizard.runtime.systemd import Journal, Notifier

pytestmark = pytest.mark.runtime
UUID = "0f3a3c52-3c55-4f6b-9d1b-3a7d2c1e9b10"


class Fake:
    """Stands in for a component: records what it was asked, answers after ``delay``."""

    def __init__(self, answer: Any = None, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: List[Any] = []
        self.armed = False

    def __call__(self, effect: Any) -> Any:
        self.calls.append(effect)
        time.sleep(self.delay)
        return self.answer

    round = list_guests = perform = destroy_guests = __call__


def executor(now: float = 100.0, xapi: Optional[Fake] = None) -> RealExecutor:
    fake = Fake()
    host = Host(prober=fake, xapi=xapi or Fake(fx.XapiResult(value="ok")),  # type: ignore
                toolstack=Fake(fx.GuestList(())), watchdog=Fake(fx.WatchdogResult(True)),
                self_fence=Fake(fx.GuestList(())), fence=None, carrier=None,
                store=StateStore("/nonexistent/state.json"),
                read_role=lambda: fx.PoolRole(UUID, True, None),
                journal=Journal(use_binding=False, stream=open(os.devnull, "w")),
                notifier=Notifier(use_binding=False), monotonic=lambda: now)
    return RealExecutor(host)


def test_stale_actions_are_refused_before_they_are_performed():
    xapi = Fake(fx.XapiResult(value="done"))
    ex = executor(now=100.0, xapi=xapi)
    late = fx.XapiCall("VM.start", ("ref", False, False), valid_until=99.0)
    fresh = fx.XapiCall("VM.start", ("ref", False, False), valid_until=101.0)
    feed = fx.WatchdogControl("feed", 5, 99.0)
    assert ex.perform(fx.Parallel((late, fresh, feed))) == (
        fx.STALE_XAPI, fx.XapiResult(value="done"), fx.STALE_WATCHDOG)
    assert xapi.calls == [fresh]


def test_an_effect_that_overruns_its_deadline_ends_the_daemon():
    ex = executor(xapi=Fake(fx.XapiResult(value=1), delay=3.0))
    ex.host = ex.host._replace(monotonic=time.monotonic)
    with pytest.raises(ExecutorError, match="XapiCall overran its deadline"):
        ex.perform(fx.Parallel((fx.XapiCall("pool.get_all", timeout=0.2),)))
    ex.close()


def test_the_role_comes_from_xapis_files(tmp_path):
    inventory, pool_conf = str(tmp_path / "inventory"), str(tmp_path / "pool.conf")
    with open(inventory, "w") as handle:
        handle.write("PRODUCT_BRAND='XCP-ng'\nINSTALLATION_UUID='%s'\n" % UUID.upper())
    for text, role in (("master\n", fx.PoolRole(UUID, True, None)),
                       ("slave:198.18.0.1", fx.PoolRole(UUID, False, "198.18.0.1"))):
        with open(pool_conf, "w") as handle:
            handle.write(text)
        assert read_pool_role(inventory, pool_conf) == role
    with open(pool_conf, "w") as handle:
        handle.write("slave:")
    with pytest.raises(LocalFileError, match="neither"):
        read_pool_role(inventory, pool_conf)
    with pytest.raises(LocalFileError, match="cannot read"):
        read_pool_role(str(tmp_path / "missing"), pool_conf)


def test_a_missing_role_file_mid_run_keeps_the_last_role_but_not_at_start():
    ex = executor()
    role = ex.perform(fx.ReadPoolRole())
    assert role.is_master

    def gone() -> fx.PoolRole:
        raise LocalFileError("cannot read /etc/xensource/pool.conf: No such file")

    ex.host = ex.host._replace(read_role=gone)
    assert ex.perform(fx.ReadPoolRole()) is role
    fresh = executor()
    fresh.host = fresh.host._replace(read_role=gone)
    with pytest.raises(ExecutorError, match="pool.conf"):
        fresh.perform(fx.ReadPoolRole())


def test_the_state_file_is_replaced_whole(tmp_path):
    store = StateStore(str(tmp_path / "sub" / "state.json"))
    assert store.load() is None
    store.save({"settings": {"enabled": True}, "vms": []})
    assert store.load() == {"settings": {"enabled": True}, "vms": []}
    with open(store.path, "w") as handle:
        handle.write("{half")
    assert store.load() is None  # unreadable: start without the cache, never crash
    assert os.listdir(str(tmp_path / "sub")) == ["state.json"]


def test_runtime_settings_are_checked_with_the_rest(tmp_path):
    path = str(tmp_path / "halizard.toml")
    with open(path, "w") as handle:
        handle.write('peer_addresses = ["198.18.0.2"]\ngateway_addresses = ["198.18.0.254"]\n'
                     'xapi_url = "ftp://x"\nxapi_peer_url = "https://peer/"\n'
                     'host_reset = "reboot"\ninterfaces = "eth0"\n'
                     'xapi_password_file = "%s/pw"\n' % tmp_path)
    with open(str(tmp_path / "pw"), "w") as handle:
        handle.write("secret\n")
    os.chmod(str(tmp_path / "pw"), 0o640)
    with pytest.raises(ConfigError) as caught:
        load_host_config(path)
    keys = [p.key for p in caught.value.problems]
    assert keys == ["xapi_url", "xapi_peer_url", "host_reset", "interfaces",
                    "xapi_password_file"], keys
    os.chmod(str(tmp_path / "pw"), 0o600)
    with open(path, "w") as handle:
        handle.write('peer_addresses = ["198.18.0.2"]\ngateway_addresses = ["198.18.0.254"]\n'
                     'xapi_password_file = "%s/pw"\nxl_command = "/opt/xl --quiet"\n'
                     'xapi_peer_url = "http://{address}:8080/"\n' % tmp_path)
    loaded = load_host_config(path)
    assert loaded.password == "secret"
    assert loaded.runtime.xl_command == ("/opt/xl", "--quiet")
    assert loaded.runtime.peer_url("fd00::2") == "http://[fd00::2]:8080/"
    assert loaded.config.peer_addresses == ("198.18.0.2",)
