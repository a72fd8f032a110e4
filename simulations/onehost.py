"""One real `halizard daemon` on a real network, beside the wire-level simulated xapi.

The smallest rig that runs the daemon process as on a host: a network namespace for the host
(xs1, the pool master, with protected VMs), a second namespace at the other end of a veth that
holds the peer's and the gateway's addresses (the kernel answers their pings), the simulated
pool serving xs1's xapi on a Unix socket, a simulated watchdog device (a FIFO), and a fake `xl`
that lists and destroys the pool's domains on xs1. Used by tests/test_daemon.py and by

    python -m simulations.onehost footprint [--minutes M]

which measures the daemon's footprint while nothing happens (BENCHMARKS.md): resident memory,
CPU, processes forked, XenAPI calls per minute. Root only (namespaces); addresses in
198.18.0.0/15 inside namespaces this module creates and deletes.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from halizard.core.pool import KEY_ENABLED
from halizard.runtime.watchdog import RecordingReset, SimulatedWatchdog
from simulations.lab.netns import run
from simulations.xapi.pool import SimulatedPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW = "%-40s %5d %5d %5d     %s  %8.1f %s        -                -\n"
HEADER = ("Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID"
          "                            Reason-Code\tSecurity Label\n")
DOM0_UUID = "00000000-0000-0000-0000-000000000000"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("not within %.0f s: %s" % (timeout, what))
        time.sleep(interval)


class FakeXl:
    """`xl list -v` and `xl destroy DOMID` against the simulated pool's domains on one host,
    through files the script reads and writes; a thread here keeps them in step. Each call of
    the script appends a line to ``calls`` (the fork count)."""

    def __init__(self, directory: str, pool: SimulatedPool, host: str) -> None:
        self.directory = directory
        self.pool = pool
        self.host = host
        self.path = os.path.join(directory, "xl")
        with open(self.path, "w") as handle:
            handle.write(textwrap.dedent("""\
                #!/bin/sh
                echo "$1" >> '%(d)s/calls'
                if [ "$1" = list ]; then cat '%(d)s/header' '%(d)s/domains'
                else echo "$2" >> '%(d)s/destroyed'; fi
                """ % {"d": directory}))
        os.chmod(self.path, 0o755)
        with open(os.path.join(directory, "header"), "w") as handle:
            handle.write(HEADER + ROW % ("Domain-0", 0, 4096, 2, "r-----", 1.0, DOM0_UUID))
        self.stopped = threading.Event()
        self._applied = 0
        self.sync()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def calls(self) -> int:
        try:
            with open(os.path.join(self.directory, "calls")) as handle:
                return len(handle.read().split())
        except OSError:
            return 0

    def _domains(self) -> List[str]:
        return sorted(self.pool.domains(self.host))

    def sync(self) -> None:
        try:
            with open(os.path.join(self.directory, "destroyed")) as handle:
                destroyed = handle.read().split()
        except OSError:
            destroyed = []
        domains = self._domains()
        for word in destroyed[self._applied:]:
            if word.isdigit() and 0 < int(word) <= len(domains):
                self.pool.inspect(self._destroy, domains[int(word) - 1])
        self._applied = len(destroyed)
        rows = "".join(ROW % ("vm%d" % i, i, 1024, 1, "-b----", 1.0, uuid)
                       for i, uuid in enumerate(self._domains(), 1))
        temporary = os.path.join(self.directory, "domains.tmp")
        with open(temporary, "w") as handle:
            handle.write(rows)
        os.replace(temporary, os.path.join(self.directory, "domains"))

    def _destroy(self, uuid: str) -> None:
        self.pool.world.destroy_domain(self.host, uuid, cause="self-fence")
        self.pool.model.on_domain_died(self.host, uuid)

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            self.sync()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2)


class OneHost:
    """The rig; ``close`` removes everything it made, even after a failure half-way."""

    def __init__(self, directory: str, vms: int = 1,
                 pool_settings: Optional[Dict[str, str]] = None) -> None:
        self.pool_settings = dict(pool_settings or {})  # pool other-config besides the switch
        self.dir = directory
        self.prefix = "hz1h%d" % os.getpid()
        self.ns = self.prefix + "-xs1"
        self.other = self.prefix + "-peer"
        self.namespaces: List[str] = []
        self.pool: Optional[SimulatedPool] = None
        self.xl: Optional[FakeXl] = None
        self.watchdog: Optional[SimulatedWatchdog] = None
        self.daemon: Optional[subprocess.Popen[bytes]] = None
        self.xapi_calls = 0
        try:
            self._build(vms)
        except BaseException:
            self.close()
            raise

    def _build(self, vms: int) -> None:
        for ns in (self.ns, self.other):
            run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", self.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", self.other)
        for ns, addresses in ((self.ns, ("198.18.5.1/24",)),
                              (self.other, ("198.18.5.2/24", "198.18.5.3/24"))):
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            for cidr in addresses:
                run("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
        d = self.dir
        self.pool = pool = SimulatedPool(
            ["xs1", "xs2"], "xs1",
            [{"name": "vm %d" % i, "host": "xs1", "restart": "restart"} for i in range(vms)],
            unix_dir=d, pool_other_config=dict({KEY_ENABLED: "true"}, **self.pool_settings)
        ).start()
        model_call = pool.model.call

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.xapi_calls += 1
            return model_call(*args, **kwargs)

        pool.model.call = counted  # type: ignore[method-assign]
        self._write("password", pool.credentials[1], 0o600)
        self._write("inventory", "INSTALLATION_UUID='%s'\n" % pool.host_uuid("xs1"))
        self._write("pool.conf", "master")
        self.xl = FakeXl(d, pool, "xs1")
        self.watchdog = SimulatedWatchdog(os.path.join(d, "watchdog"), RecordingReset())
        self.config = os.path.join(d, "halizard.toml")
        self._write("halizard.toml", textwrap.dedent("""\
            peer_addresses = ["198.18.5.2"]
            gateway_addresses = ["198.18.5.3"]
            watchdog_device = "%(d)s/watchdog"
            xapi_url = "unix:%(d)s/xs1.xapi"
            xapi_peer_url = "http://{address}:%(port)d/"
            xapi_password_file = "%(d)s/password"
            interfaces = ["eth0"]
            state_file = "%(d)s/state.json"
            inventory_file = "%(d)s/inventory"
            pool_conf_file = "%(d)s/pool.conf"
            xl_command = "%(d)s/xl"
            host_reset = "record:%(d)s/reset"
            system_state_command = "echo running"
            """ % {"d": d, "port": pool.port}))
        self.log = os.path.join(d, "daemon.log")

    def _write(self, name: str, text: str, mode: int = 0o644) -> None:
        path = os.path.join(self.dir, name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)

    def start(self, python: str = sys.executable) -> "subprocess.Popen[bytes]":
        with open(self.log, "wb") as log:
            self.daemon = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, python, "-m", "halizard", "daemon",
                 "--config", self.config], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self.daemon

    def read_log(self) -> str:
        with open(self.log, errors="replace") as handle:
            return handle.read()

    def link_down(self) -> None:
        run("ip", "-n", self.ns, "link", "set", "eth0", "down")

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(5)
        if self.xl is not None:
            self.xl.stop()
            self.xl = None
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], timeout=10)
        self.namespaces = []


def _proc(pid: int) -> Dict[str, float]:
    """CPU seconds (user + system) and resident memory (MB) of the daemon's Python process."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/%d/status" % pid) as handle:
        rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return {"cpu": (int(fields[11]) + int(fields[12])) / ticks, "rss_mb": rss / 1024.0}


def _python_child(pid: int) -> int:
    """`ip netns exec` execs the interpreter in place: the same pid, once it has."""
    return pid


def footprint(minutes: float, python: str) -> Dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="halizard-footprint-")
    rig = OneHost(directory, vms=4)
    try:
        daemon = rig.start(python)
        assert rig.watchdog is not None and rig.xl is not None
        wait_for(lambda: rig.watchdog.kinds().count("feed") >= 3, 30,  # type: ignore
                 "the daemon settles (arms and feeds the watchdog)")
        wait_for(lambda: "acting as pool master" in rig.read_log() or
                 rig.watchdog.kinds().count("feed") >= 10, 30, "a steady state")  # type: ignore
        pid = _python_child(daemon.pid)
        begin, calls0, forks0 = _proc(pid), rig.xapi_calls, rig.xl.calls()
        t0 = time.monotonic()
        peak = begin["rss_mb"]
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(5)
            peak = max(peak, _proc(pid)["rss_mb"])
        end, elapsed = _proc(pid), time.monotonic() - t0
        result = {
            "minutes": round(elapsed / 60, 2),
            "python": subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                     stdout=subprocess.PIPE, universal_newlines=True).stdout.strip(),
            "rss_mb": round(end["rss_mb"], 1), "rss_peak_mb": round(peak, 1),
            "cpu_percent": round(100 * (end["cpu"] - begin["cpu"]) / elapsed, 2),
            "forks_per_minute": round((rig.xl.calls() - forks0) * 60 / elapsed, 1),
            "xapi_calls_per_minute": round((rig.xapi_calls - calls0) * 60 / elapsed, 1),
        }
        daemon.terminate()
        daemon.wait(30)
        return result
    finally:
        rig.close()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.onehost")
    sub = parser.add_subparsers(dest="command")
    fp = sub.add_parser("footprint", help="the daemon's footprint while nothing happens")
    fp.add_argument("--minutes", type=float, default=10.0)
    fp.add_argument("--python", default=sys.executable, help="the interpreter of the daemon")
    args = parser.parse_args(argv)
    if args.command != "footprint":
        parser.print_help()
        return 2
    result = footprint(args.minutes, args.python)
    for key, value in result.items():
        print("%-24s %s" % (key, value))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
