"""systemd/halizard.service under a real systemd, booted as PID 1 in private namespaces.

The unit file is only proven by the systemd that runs it: Type=notify with READY=1 after the
first decision, WATCHDOG=1 keep-alives, the STATUS line, Restart=always after a hang, and a
clean stop on SIGTERM. The test boots /lib/systemd/systemd inside
``unshare --fork --pid --mount --uts --ipc --cgroup --net --mount-proc`` with a fresh tmpfs on
/run: the repository's unit goes to /run/systemd/system with a drop-in that runs this checkout,
and the machine's own units, configuration, devices and sysctls stay out of reach (see BOOT).
The simulated pool's xapi, the simulated watchdog device and the other files the daemon uses
live in the test's directory, bind-mounted at /run/halizard-test. The end is a SIGKILL to that
PID 1 (a namespace's init ignores SIGTERM), which takes every process inside with it.
"""
import functools
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional

import pytest
import XenAPI

from halizard.runtime.watchdog import RecordingReset, SimulatedWatchdog
from simulations.onehost import wait_for
from simulations.xapi import SimulatedPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "systemd", "halizard.service")
SYSTEMD = "/lib/systemd/systemd"
INSIDE = "/run/halizard-test"  # the test's directory, as seen inside the namespaces
WATCHDOG_SEC = 3  # the drop-in's WatchdogSec: short, so a hang is noticed quickly
TARGET = "halizard-test.target"
# Targets the unit's default dependencies name (Requires=sysinit.target and the like). Only
# /run/systemd/system is on the unit path, so these empty stand-ins are all there is: nothing
# installed on the machine (PostgreSQL, getty, journald, udev, swap) can be started.
STAND_INS = ("sysinit.target", "basic.target", "shutdown.target", "network-online.target")

pytestmark = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="booting systemd in namespaces needs root"),
    pytest.mark.skipif(not os.access(SYSTEMD, os.X_OK), reason="no %s" % SYSTEMD),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare"),
]

# Run by sh as PID 1 of the new namespaces, then replaced by systemd. $1 is the test's directory;
# stdin is a pty the test reads, which becomes /dev/console (systemd's log and status lines).
# Every mount is private to the new mount namespace (unshare's default propagation).
BOOT = r"""set -eu
dir=$1
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/systemd/system /run/halizard-test
mount --bind "$dir" /run/halizard-test
cp -R "$dir"/units/. /run/systemd/system/
# The manager's configuration is ours (no RuntimeWatchdogSec from the machine: no /dev/watchdog).
mount -t tmpfs -o mode=755 tmpfs /etc/systemd
cp "$dir"/system.conf /etc/systemd/system.conf
# No global sysctl writes (systemd bumps fs.file-max and fs.nr_open as PID 1), no sysrq, and
# /sys read-only.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
  mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
  mount -o remount,bind,ro /proc/sysrq-trigger
fi
mount -o remount,bind,ro /sys
# Peer (127.0.0.2) and gateway (127.0.0.3) answer pings on the namespace's own loopback.
ip link set lo up
# The console: the pty on stdin, held at /run/console while /dev is replaced.
touch /run/console
mount --bind "$(tty)" /run/console
# The cgroup namespace's root (a cgroup the test made): systemd sees only its own subtree.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# A /dev of our own: systemd adds symlinks there, and sees no watchdog or disk of the machine.
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $node
  mknod -m 666 /dev/$1 c $2 $3
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir /dev/shm /dev/pts
touch /dev/console
mount --move /run/console /dev/console
rm /run/console
# container=: systemd skips what only a real boot does (clock, kernel log, coredump pattern);
# no generators; no CAP_SYS_MODULE, so it loads no kernel module.
exec env -i container=halizard-test SYSTEMD_COLORS=0 \
  SYSTEMD_UNIT_PATH=/run/systemd/system \
  SYSTEMD_GENERATOR_PATH=/run/halizard-test/empty \
  SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/halizard-test/empty \
  setpriv --bounding-set -sys_module,-sys_time \
  %(systemd)s --system --unit=%(target)s --log-target=console --log-level=info
"""
LAUNCH = ('echo $$ > "$1" && exec unshare --fork --pid --mount --uts --ipc --cgroup --net '
          '--mount-proc --kill-child sh "$2/boot.sh" "$2"')

# The test's own drop-in: this checkout instead of /usr/bin/halizard, a short WatchdogSec, a
# log file since there is no journald inside, and a record of how each run ended (systemd
# forgets a stopped unit's exit status once it is inactive). ProtectHome=yes would hide the
# interpreter: the test machines' Pythons are pyenv's, under /root (dom0's is /usr/bin/python3);
# read-only still protects what is there. Likewise PrivateTmp=yes hides a checkout (or its
# virtualenv) under /tmp, where CI may clone it: then, and only then, the test turns it off.
DROP_IN = """[Service]
ExecStart=
ExecStart=%(python)s -m halizard daemon --config %(inside)s/halizard.toml
Environment=PYTHONPATH=%(root)s
WatchdogSec=%(watchdog)d
StandardOutput=append:%(inside)s/daemon.log
ExecStopPost=/bin/sh -c 'echo "$$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS" >> %(inside)s/exits'
ProtectHome=read-only
%(private_tmp)s"""
# A core dump of the daemon killed by the watchdog (SIGABRT) would land in its working
# directory, the machine's /: none.
SYSTEM_CONF = "[Manager]\nDefaultLimitCORE=0\n"

# Peer and gateway answer on the namespace's loopback. watchdog_timeout is longer than
# WatchdogSec + RestartSec + a start: systemd's restart of a hung daemon must come before the
# device would reset the host (takeover_delay grows with it, as the timing rules require).
CONFIG = """peer_addresses = ["127.0.0.2"]
gateway_addresses = ["127.0.0.3"]
watchdog_timeout = "10s"
takeover_delay = "20s"
watchdog_device = "%(inside)s/watchdog"
xapi_url = "unix:%(inside)s/xs1.xapi"
xapi_peer_url = "http://{address}:9/"
xapi_password_file = "%(inside)s/xapi-password"
state_file = "%(inside)s/state.json"
inventory_file = "%(inside)s/xensource-inventory"
pool_conf_file = "%(inside)s/pool.conf"
xl_command = "%(inside)s/xl"
host_reset = "record:%(inside)s/reset"
"""
XL = """#!/bin/sh
# xl for the test: Domain-0 and the pool's VMs on xs1; anything else is recorded, not done.
if [ "$1" = list ]; then cat %(inside)s/xl-list; else echo "$*" >> %(inside)s/xl-calls; fi
"""
XL_HEADER = ("Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID"
             "                            Reason-Code\tSecurity Label\n")
XL_LINE = "%-40s %5d %5d %5d     %s  %8.1f %s        -                -\n"


def run(argv: List[str], timeout: float = 30.0) -> str:
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError("%s: exit %d: %s" % (" ".join(argv), done.returncode,
                                                  done.stdout.strip()))
    return done.stdout


def cgroup2_mount() -> str:
    """Where the machine mounts the cgroup v2 hierarchy (/sys/fs/cgroup, or .../unified)."""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    raise AssertionError("no cgroup2 hierarchy mounted: systemd needs one")


def own_cgroup() -> str:
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            if line.startswith("0::"):
                return line[3:].strip()
    raise AssertionError("this process is in no cgroup v2")


def processes_under(cgroup: str) -> List[str]:
    found: List[str] = []
    for dirpath, _, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            with open(os.path.join(dirpath, "cgroup.procs")) as handle:
                found.extend(handle.read().split())
    return found


# Each poll runs systemctl through nsenter (two processes): poll less often than the default.
wait_until = functools.partial(wait_for, interval=0.2)


class InnerSystemd:
    """systemd as PID 1 of new namespaces, its console, and ``systemctl`` inside."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.cgroup = os.path.join(cgroup2_mount() + own_cgroup(),
                                   "halizard-systemd-test-%d" % os.getpid())
        self.console: List[str] = []
        self.pid1 = 0  # PID 1 of the namespaces, as the machine numbers it
        self.pid_ns = ""
        self.net_ns = ""
        self.launcher: Optional[subprocess.Popen[bytes]] = None
        self._master = -1
        self._reader: Optional[threading.Thread] = None

    def boot(self) -> None:
        self._master, slave = pty.openpty()
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()
        os.mkdir(self.cgroup)
        try:
            # setpriv --pdeathsig: if the test process dies, unshare does, and --kill-child
            # then takes PID 1 (and the namespaces) down with it.
            with open(os.path.join(self.workdir, "boot.log"), "w") as log:
                self.launcher = subprocess.Popen(
                    ["setpriv", "--pdeathsig", "KILL", "--", "sh", "-c", LAUNCH, "sh",
                     os.path.join(self.cgroup, "cgroup.procs"), self.workdir],
                    stdin=slave, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(slave)
        wait_until(self._find_pid1, 10, "PID 1 of the namespaces")
        wait_until(lambda: self.systemctl_ok("is-system-running") == "running", 30,
                   "systemd booted to %s" % TARGET)

    def _read_console(self) -> None:
        pending = ""
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: the last holder of the console is gone
                return
            if not data:
                return
            pending += data.decode("utf-8", "replace").replace("\r", "")
            *lines, pending = pending.split("\n")
            self.console.extend(lines)

    def _find_pid1(self) -> bool:
        try:
            with open("/proc/%d/task/%d/children" % (self.launcher.pid,
                                                        self.launcher.pid)) as handle:
                children = handle.read().split()
        except OSError:
            children = []
        if self.launcher.poll() is not None:
            with open(os.path.join(self.workdir, "boot.log")) as handle:
                raise AssertionError("booting failed: %s" % handle.read())
        if not children or os.readlink("/proc/%s/exe" % children[0]) != os.path.realpath(SYSTEMD):
            return False
        self.pid1 = int(children[0])
        self.pid_ns = os.readlink("/proc/%d/ns/pid" % self.pid1)
        self.net_ns = os.readlink("/proc/%d/ns/net" % self.pid1)
        return True

    def inside(self, *argv: str, timeout: float = 30.0) -> str:
        """A command run in the namespaces' mounts and PIDs (systemctl, kill)."""
        return run(["nsenter", "-t", str(self.pid1), "-m", "-p", "--"] + list(argv), timeout)

    def systemctl_ok(self, *argv: str) -> Optional[str]:
        done = subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "-p", "--", "systemctl"]
                              + list(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None

    def show(self, unit: str) -> Dict[str, str]:
        text = self.inside("systemctl", "show", unit, "-p",
                           "MainPID,ActiveState,SubState,StatusText,NRestarts,"
                           "WatchdogTimestampMonotonic")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def kill(self) -> None:
        """SIGKILL to PID 1 (it ignores SIGTERM): the kernel ends every process inside. Safe to
        call again: the PID is checked to still be that namespace's init before each signal."""
        if self.launcher is not None:
            if self.launcher.poll() is None and self._is_pid1():
                os.kill(self.pid1, signal.SIGKILL)
            elif self.launcher.poll() is None:
                self.launcher.kill()  # no PID 1 found: unshare's --kill-child ends it
            self.launcher.wait(10)
            self.launcher = None
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self._master >= 0:
            os.close(self._master)
            self._master = -1

    def _is_pid1(self) -> bool:
        try:
            return self.pid1 > 0 and os.readlink("/proc/%d/ns/pid" % self.pid1) == self.pid_ns
        except OSError:
            return False

    def survivors(self) -> List[str]:
        """Processes left in the test's cgroup or in its PID or network namespace (none, once
        PID 1 is killed: the namespaces are gone with their last process)."""
        left = processes_under(self.cgroup)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                spaces = {os.readlink("/proc/%s/ns/%s" % (pid, kind)) for kind in ("pid", "net")}
            except OSError:
                continue  # gone meanwhile
            if spaces & {self.pid_ns, self.net_ns}:
                left.append(pid)
        return left

    def remove_cgroups(self) -> None:
        """The test's cgroup and those systemd made under it, deepest first."""
        if not os.path.isdir(self.cgroup):
            return
        deadline = time.monotonic() + 5
        for dirpath, _, _ in sorted(os.walk(self.cgroup), key=lambda w: -len(w[0])):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except OSError:  # EBUSY while the last process is being released
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def list_guests(pool: SimulatedPool, workdir: str) -> None:
    """What the fake xl lists: Domain-0 and the guests really running on xs1."""
    lines = [XL_LINE % ("Domain-0", 0, 4096, 2, "r-----", 1.0,
                        "00000000-0000-0000-0000-000000000000")]
    lines += [XL_LINE % ("vm", i + 1, 2048, 1, "-b----", 1.0, uuid)
              for i, uuid in enumerate(sorted(pool.domains("xs1")))]
    write(os.path.join(workdir, "xl-list.new"), XL_HEADER + "".join(lines))
    os.replace(os.path.join(workdir, "xl-list.new"), os.path.join(workdir, "xl-list"))


@pytest.fixture
def workdir(tmp_path) -> Iterator[str]:
    """The test's directory: units, configuration, the fake xl; /run/halizard-test inside."""
    d = str(tmp_path)
    under_tmp = any(p == t or p.startswith(t + "/") for p in (ROOT, sys.executable)
                    for t in ("/tmp", "/var/tmp"))
    values = {"inside": INSIDE, "python": sys.executable, "root": ROOT,
              "private_tmp": "PrivateTmp=no\n" if under_tmp else "",
              "watchdog": WATCHDOG_SEC, "systemd": SYSTEMD, "target": TARGET}
    os.mkdir(os.path.join(d, "empty"))
    units = os.path.join(d, "units")
    os.makedirs(os.path.join(units, "halizard.service.d"))
    shutil.copy(UNIT, os.path.join(units, "halizard.service"))
    write(os.path.join(units, "halizard.service.d", "test.conf"), DROP_IN % values)
    write(os.path.join(units, TARGET), "[Unit]\nDescription=halizard test: nothing else\n"
          "DefaultDependencies=no\n")
    for name in STAND_INS:
        write(os.path.join(units, name), "[Unit]\nDescription=stand-in for %s\n"
              "DefaultDependencies=no\n" % name)
    write(os.path.join(d, "system.conf"), SYSTEM_CONF)
    write(os.path.join(d, "boot.sh"), BOOT % values)
    write(os.path.join(d, "halizard.toml"), CONFIG % values)
    write(os.path.join(d, "xl"), XL % values, 0o755)
    write(os.path.join(d, "pool.conf"), "master")
    yield d


@pytest.fixture
def pool(workdir) -> Iterator[SimulatedPool]:
    p = SimulatedPool(["xs1", "xs2"], "xs1", [{"name": "web", "host": "xs1", "restart": "restart"}],
                      unix_dir=workdir).start()
    try:
        write(os.path.join(workdir, "xapi-password"), p.credentials[1], 0o600)
        write(os.path.join(workdir, "xensource-inventory"),
              "INSTALLATION_UUID='%s'\n" % p.host_uuid("xs1"))
        list_guests(p, workdir)
        yield p
    finally:
        p.stop()


@pytest.fixture
def device(workdir) -> Iterator[SimulatedWatchdog]:
    reset = RecordingReset()
    sim = SimulatedWatchdog(os.path.join(workdir, "watchdog"), reset)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def systemd(workdir, pool, device) -> Iterator[InnerSystemd]:
    inner = InnerSystemd(workdir)
    try:
        inner.boot()
        yield inner
    finally:
        inner.kill()
        # Shown when the test fails: systemd's console, then the daemon's output.
        print("--- console of the inner systemd\n" + "\n".join(inner.console))
        for name in ("boot.log", "daemon.log"):
            path = os.path.join(workdir, name)
            if os.path.exists(path):
                with open(path) as handle:
                    print("--- %s\n%s" % (name, handle.read()))
        left = inner.survivors()
        inner.remove_cgroups()
        assert not left, "processes outlived PID 1: %s" % left


def test_the_unit_under_a_real_systemd(systemd: InnerSystemd, device: SimulatedWatchdog,
                                       pool: SimulatedPool, workdir: str) -> None:
    def show() -> Dict[str, str]:
        return systemd.show("halizard.service")

    # READY: Type=notify, so start returns once the daemon has made its first decision.
    systemd.inside("systemctl", "start", "halizard.service", timeout=60)
    state = show()
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"].startswith("normal: "), state
    first = state["MainPID"]

    # Keep-alives: systemd records WATCHDOG=1 about every second, and the daemon outlives
    # several WatchdogSec.
    pings = set()

    def kept_alive() -> bool:
        now = show()
        assert (now["MainPID"], now["NRestarts"], now["ActiveState"]) == (first, "0", "active"), now
        pings.add(int(now["WatchdogTimestampMonotonic"]))
        return max(pings) - min(pings) > 2 * WATCHDOG_SEC * 1e6
    wait_until(kept_alive, 6 * WATCHDOG_SEC, "keep-alives over two WatchdogSec")
    assert len(pings) > WATCHDOG_SEC, sorted(pings)

    # A hang: systemd's watchdog kills the stopped daemon, Restart=always starts another, READY
    # again; all before the watchdog device would reset the host.
    seen = len(device.events)
    systemd.inside("kill", "-STOP", first)
    hung = time.monotonic()

    def restarted() -> bool:
        now = show()
        return now["NRestarts"] == "1" and now["ActiveState"] == "active" and \
            now["MainPID"] not in ("0", first)
    wait_until(restarted, 10 * WATCHDOG_SEC, "a restart after the hang")
    assert time.monotonic() - hung > WATCHDOG_SEC - 1.5
    assert any("halizard.service: Watchdog timeout" in line for line in systemd.console), \
        systemd.console
    assert show()["StatusText"].startswith("normal: ")
    assert device.wait_for(lambda d: "timeout" in d.kinds()[seen:], 10), device.events[seen:]
    after_hang = device.events[seen:]
    closes = [e for e in after_hang if e.kind == "close"]
    assert closes and "still counting" in closes[0].detail, after_hang  # killed: no magic close
    assert not device.fired and device.armed, after_hang

    # A clean stop: SIGTERM, a planned stop, exit status 0 well within TimeoutStopSec, and the
    # device stopped by the magic close.
    seen = len(device.events)
    began = time.monotonic()
    systemd.inside("systemctl", "stop", "halizard.service", timeout=120)
    took = time.monotonic() - began
    state = show()
    assert state["ActiveState"] == "inactive", state
    assert took < 10, took
    with open(os.path.join(workdir, "exits")) as handle:
        assert handle.read().splitlines() == ["watchdog killed ABRT", "success exited 0"]
    with open(os.path.join(workdir, "daemon.log")) as handle:
        assert handle.read().splitlines()[-1].endswith("stopped")
    assert [e.kind for e in device.events[seen:]][-2:] == ["magic", "close"], device.events[seen:]
    assert not device.armed and not device.fired
    assert not device.reset.resets
    for never in ("reset", "xl-calls"):  # no self-fence, no guest destroyed
        assert not os.path.exists(os.path.join(workdir, never)), never

    # The system going down (shutdown.target, which the unit conflicts with) with a guest still
    # here: the daemon asks systemd, learns it, and guards the guest, the watchdog fed once a
    # cycle, until xapi has stopped it (R012); then it exits.
    systemd.inside("systemctl", "start", "halizard.service", timeout=60)
    systemd.inside("systemctl", "start", "--no-block", "shutdown.target")
    wait_until(lambda: show()["ActiveState"] == "deactivating", 10, "the stop job")
    seen, began = len(device.events), time.monotonic()

    def guarding() -> bool:
        now = show()
        assert now["ActiveState"] == "deactivating", now
        return now["StatusText"].startswith("stopping: ") and \
            device.kinds()[seen:].count("feed") >= 3
    wait_until(guarding, 20, "the guest guarded while the system stops")
    assert time.monotonic() - began > 1.5, device.events[seen:]  # the cadence, not back to back
    assert device.armed
    with open(os.path.join(workdir, "daemon.log")) as handle:
        assert "stop requested; the system is stopping" in handle.read()
    session = XenAPI.Session(pool.url("xs1"))
    session.xenapi.login_with_password(*pool.credentials)
    try:
        session.xenapi.VM.hard_shutdown(session.xenapi.VM.get_by_uuid(pool.vm_uuid("web")))
    finally:
        session.xenapi.session.logout()
    list_guests(pool, workdir)
    wait_until(lambda: show()["ActiveState"] == "inactive", 20, "the exit once no guest is left")
    with open(os.path.join(workdir, "exits")) as handle:
        assert handle.read().splitlines()[-1] == "success exited 0"
    assert [e.kind for e in device.events[seen:]][-2:] == ["magic", "close"], device.events[seen:]
    assert not device.armed and not device.fired and not device.reset.resets

    # The end: SIGKILL to PID 1 ends everything inside, namespaces included.
    systemd.kill()
    assert not systemd.survivors()
