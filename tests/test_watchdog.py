"""The watchdog driver (halizard.runtime.watchdog) against the simulated device, and the
character-device path with its ioctl faked. Nothing here opens a real watchdog or resets."""
import os
import time

import pytest

from halizard.effects import STALE_WATCHDOG, WatchdogControl
from halizard.runtime.watchdog import (
    WDIOC_SETTIMEOUT,
    RecordingReset,
    SimulatedWatchdog,
    SysrqReset,
    Watchdog,
)

pytestmark = pytest.mark.runtime

FAR = 1e9  # a valid_until that never passes


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def device(tmp_path):
    """(simulated device on a fake clock, its reset recorder, the clock, the device path)."""
    clock = Clock(100.0)
    reset = RecordingReset(clock=clock)
    path = str(tmp_path / "watchdog")
    sim = SimulatedWatchdog(path, reset, clock=clock, tick=0.01)
    yield sim, reset, clock, path
    sim.stop()


def op(kind, timeout=5, valid_until=FAR):
    return WatchdogControl(kind, timeout, valid_until)


def events(sim, n):
    assert sim.wait_for(lambda s: len(s.events) >= n, 2.0), sim.kinds()
    return sim.kinds()


def test_arm_feed_and_the_magic_close_stops_it(device):
    sim, reset, clock, path = device
    wd = Watchdog(path, clock=clock)
    assert wd.perform(op("arm")).ok and wd.armed
    assert events(sim, 1) == ["timeout"]
    assert sim.armed and sim.deadline == 105.0  # opening counts as a feed
    clock.t = 104.0
    assert wd.perform(op("feed")).ok
    assert events(sim, 2) == ["timeout", "feed"] and sim.deadline == 109.0
    clock.t = 108.5
    sim.check()
    assert not sim.fired
    assert wd.perform(op("disarm")).ok and not wd.armed
    assert events(sim, 4) == ["timeout", "feed", "magic", "close"]
    assert sim.events[-1].detail == "magic close: stopped" and not sim.armed
    clock.t = 500.0
    sim.check()
    assert not sim.fired and reset.resets == []


def test_not_fed_in_time_it_fires_and_records_a_reset(device):
    sim, reset, clock, path = device
    wd = Watchdog(path, clock=clock)
    assert wd.perform(op("arm", timeout=3)).ok
    events(sim, 1)
    clock.t = 103.5
    assert reset.wait(2.0)  # the device's own thread noticed
    assert reset.resets == [(103.5, "watchdog: not fed within 3 s")]
    assert sim.fired and sim.kinds() == ["timeout", "fired"]
    wd.perform(op("feed"))  # too late: a reset host takes nothing more
    wd.perform(op("disarm"))
    assert sim.wait_for(lambda s: s.kinds()[-1] == "close", 2.0)
    assert sim.kinds() == ["timeout", "fired", "close"] and len(reset.resets) == 1


def test_a_crashed_daemon_leaves_it_counting_and_a_successor_can_take_over(device):
    sim, reset, clock, path = device
    first = Watchdog(path, clock=clock)
    assert first.perform(op("arm")).ok
    first.close()  # the process died: no magic close
    assert events(sim, 2) == ["timeout", "close"]
    assert sim.events[-1].detail == "closed without magic close: still counting"
    assert sim.armed
    clock.t = 104.0
    successor = Watchdog(path, clock=clock)
    assert successor.perform(op("arm")).ok
    events(sim, 3)
    assert sim.deadline == 109.0
    successor.close()
    events(sim, 4)
    clock.t = 109.5
    assert reset.wait(2.0) and sim.fired


def test_stale_operations_are_refused_and_leave_no_trace(device):
    sim, _, clock, path = device
    wd = Watchdog(path, clock=clock)
    assert wd.perform(op("arm", valid_until=99.0)) == STALE_WATCHDOG
    assert not wd.armed
    assert wd.perform(op("arm", valid_until=100.0)).ok  # exactly at valid_until: still good
    assert wd.perform(op("feed", valid_until=99.9)) == STALE_WATCHDOG
    assert wd.perform(op("disarm", valid_until=99.9)) == STALE_WATCHDOG
    assert wd.perform(op("feed")).ok
    assert events(sim, 2) == ["timeout", "feed"]
    assert wd.armed


def test_feeding_unarmed_disarming_unarmed_and_bad_requests(device):
    _, _, clock, path = device
    wd = Watchdog(path, clock=clock)
    result = wd.perform(op("feed"))
    assert not result.ok and result.detail == "not armed"
    assert wd.perform(op("disarm")).ok  # nothing to stop
    for bad in (0, 2.5, True, 100000):
        result = wd.perform(op("arm", timeout=bad))
        assert not result.ok and "whole seconds" in result.detail
    result = wd.perform(op("pat"))
    assert not result.ok and "unknown" in result.detail


def test_a_timeout_line_split_across_reads(device):
    sim, _, _, path = device
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"T1")
        assert not sim.wait_for(lambda s: bool(s.events), 0.1)
        os.write(fd, b"0\n\0")
        assert events(sim, 2) == ["timeout", "feed"] and sim.timeout == 10
    finally:
        os.close(fd)


def test_devices_that_are_absent_unread_or_not_watchdogs(tmp_path):
    missing = Watchdog(str(tmp_path / "absent")).perform(op("arm"))
    assert not missing.ok and "No such file" in missing.detail
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    unread = Watchdog(fifo).perform(op("arm"))
    assert not unread.ok and "no simulated watchdog is listening" in unread.detail
    regular = tmp_path / "file"
    regular.write_bytes(b"")
    wd = Watchdog(str(regular))
    result = wd.perform(op("arm"))
    assert not result.ok and "not a watchdog device" in result.detail
    assert not wd.armed and regular.read_bytes() == b"V"  # stopped with the magic close


def test_a_character_device_gets_the_ioctl_and_its_answer_is_checked():
    calls = []

    def ioctl(fd, request, buf, mutate):
        calls.append((request, int.from_bytes(bytes(buf), "little"), mutate))
        buf[:] = (chosen).to_bytes(4, "little")
        return 0

    chosen = 5
    wd = Watchdog("/dev/null", ioctl=ioctl)  # a character device that is no watchdog
    assert wd.perform(op("arm", timeout=5)).ok
    assert calls == [(WDIOC_SETTIMEOUT, 5, True)]
    assert wd.perform(op("feed")).ok and wd.perform(op("disarm")).ok
    chosen = 6
    result = wd.perform(op("arm", timeout=5))
    assert not result.ok and "set a 6 s timeout for the 5 s asked" in result.detail
    assert not wd.armed
    # The real ioctl on a device that is not a watchdog fails, and the arm with it.
    real = Watchdog("/dev/null").perform(op("arm"))
    assert not real.ok and not Watchdog("/dev/null").armed


def test_it_fires_on_its_own_in_real_time(tmp_path):
    reset = RecordingReset()
    sim = SimulatedWatchdog(str(tmp_path / "watchdog"), reset, tick=0.02)
    try:
        wd = Watchdog(sim.path)
        assert wd.perform(op("arm", timeout=1)).ok
        for _ in range(2):  # paced feeds, each well inside the timeout
            time.sleep(0.4)
            assert wd.perform(op("feed")).ok
        assert sim.wait_for(lambda s: s.kinds().count("feed") == 2, 1.0)
        last_feed = sim.events[-1].at
        assert reset.wait(3.0)
        fired_at = reset.resets[0][0]
        assert 1.0 <= fired_at - last_feed < 1.3
    finally:
        sim.stop()


def test_host_resets(tmp_path):
    trigger = tmp_path / "sysrq-trigger"
    trigger.write_bytes(b"")
    SysrqReset(str(trigger)).reset("self-fence: guests would not die")
    assert trigger.read_bytes() == b"b"
    stopped = []
    recorder = RecordingReset(on_reset=stopped.append)
    assert not recorder.wait(0)
    recorder.reset("watchdog")
    assert recorder.wait(0) and stopped == ["watchdog"]
    assert [reason for _, reason in recorder.resets] == ["watchdog"]
