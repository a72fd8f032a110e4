"""The real executor's side of a stop (halizard.runtime.executor): a SIGTERM ends the current
sleep, and the clock read that tells the loop to stop already says whether the system is going
down, so the first decision of the stop can keep the guests guarded (R012); afterwards the loop
keeps its cadence. Both were wrong under a real systemd (tests/test_service_systemd.py)."""
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from halizard import effects as fx
from halizard.runtime.executor import Host, RealExecutor

pytestmark = pytest.mark.runtime


def executor(system_state: str) -> RealExecutor:
    """An executor whose only outside world is ``systemctl is-system-running`` answering
    ``system_state``."""
    unused = SimpleNamespace(round=None, list_guests=None, perform=None)
    host = Host(prober=unused, xapi=unused, toolstack=unused, watchdog=unused,
                self_fence=unused, fence=None, carrier=None, store=None, read_role=None,
                journal=None, notifier=None, system_state=("echo", system_state))
    return RealExecutor(host)


@pytest.mark.parametrize("state, going_down", [("stopping", True), ("running", False)])
def test_a_sigterm_during_a_sleep_comes_with_the_system_state(state, going_down):
    ex = executor(state)
    try:
        threading.Timer(0.2, ex.request_stop, (signal.SIGTERM,)).start()
        began = time.monotonic()
        now = ex.perform(fx.Sleep(until=began + 10))
        assert time.monotonic() - began < 3  # woken by the stop, not at the end of the sleep
        assert now.stop_requested and now.shutting_down is going_down
        # Told once: a stop that takes many cycles keeps the cadence.
        began = time.monotonic()
        now = ex.perform(fx.Sleep(until=began + 0.5))
        assert time.monotonic() - began >= 0.45
        assert now.stop_requested and now.shutting_down is going_down
    finally:
        ex.close()


def test_a_stop_asked_before_the_clock_read_is_told_with_the_system_state():
    ex = executor("stopping")
    try:
        ex.request_stop(signal.SIGTERM)
        now = ex.perform(fx.ReadClock())
        assert now.stop_requested and now.shutting_down
    finally:
        ex.close()


def test_sigint_does_not_ask_systemd():
    ex = executor("stopping")
    try:
        ex.request_stop(signal.SIGINT)
        now = ex.perform(fx.ReadClock())
        assert now.stop_requested and not now.shutting_down
    finally:
        ex.close()
