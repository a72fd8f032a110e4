"""Run a simulated pool by hand: ``python -m simulations.xapi serve --scenario FILE``.

It serves the scenario's [cluster] over XML-RPC (one endpoint per host), applies the scenario's
faults at their times, prints what happens, and runs until interrupted (or for ``--for`` real
seconds). Drive it with the ``XenAPI`` package, for example::

    import XenAPI
    s = XenAPI.Session("http://127.0.0.11:PORT")
    s.xenapi.login_with_password("root", PASSWORD, "1.0", "by-hand")
    s.xenapi.VM.get_all_records()
"""
import argparse
import signal
import sys
import threading
from typing import Any, Callable, List, Optional

from simulations.scenario import ScenarioError, load_scenario
from simulations.world.scheduler import NS
from simulations.xapi.pool import PoolError, SimulatedPool


class _Narrator:
    """A world observer that prints the events a person driving the pool wants to see."""

    def __init__(self, pool: SimulatedPool, out: Callable[[str], None]) -> None:
        self.pool = pool
        self.out = out

    def _say(self, t: int, text: str) -> None:
        self.out("%9.1fs  %s" % (t / NS, text))

    def fault(self, t: int, index: int, fault: Any, phase: str) -> None:
        self._say(t, "fault %s: %s" % (phase, fault.label()))

    def host_power(self, t: int, host: str, state: str, cause: str) -> None:
        self._say(t, "%s power %s (%s)" % (host, state, cause))

    def domain_started(self, t: int, host: str, vm: str, others: List[str], migrated: bool) -> None:
        self._say(t, "%s domain started on %s%s" % (self._vm(vm), host,
                                                    " (migrated)" if migrated else ""))

    def domain_stopped(self, t: int, host: str, vm: str, cause: str) -> None:
        self._say(t, "%s domain stopped on %s (%s)" % (self._vm(vm), host, cause))

    def _vm(self, uuid: str) -> str:
        return self.pool.world.vm_names.get(uuid, uuid)

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None  # other world events: not shown


def serve(argv: List[str], out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.xapi serve")
    parser.add_argument("--scenario", required=True, help="scenario file ([cluster] and faults)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="virtual seconds per real second (default 1)")
    parser.add_argument("--port", type=int, default=0, help="common port (default: a free one)")
    parser.add_argument("--password", help="root password (default: a random one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unix-dir", help="also serve each host on DIR/HOST.xapi (a local socket "
                        "like /var/lib/xcp/xapi: root without a password)")
    parser.add_argument("--for", dest="duration", type=float,
                        help="stop after this many real seconds (default: until interrupted)")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
        pool = SimulatedPool.from_scenario(scenario, speed=args.speed, port=args.port,
                                           password=args.password, seed=args.seed,
                                           unix_dir=args.unix_dir)
    except (ScenarioError, PoolError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    pool.world.observe(_Narrator(pool, out))
    try:
        pool.start()
    except (PoolError, OSError) as exc:
        print("error: cannot listen: %s" % exc, file=sys.stderr)
        return 2
    out("pool %s (%s), speed %gx" % (scenario.id, scenario.title, args.speed))
    for host in pool.hosts:
        out("  %s %s  %s%s" % (host, pool.url(host), "master" if host == pool.master else "slave",
                               "" if args.unix_dir is None else "  unix:" + pool.unix_path(host)))
    out("  credentials: %s / %s" % pool.credentials)
    for fault in scenario.faults:
        out("  at %gs: %s" % (fault.at, fault.label()))
    sys.stdout.flush()
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait(args.duration)
    pool.stop()
    for line in pool.log:
        out("operator: " + line)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "serve":
        print("usage: python -m simulations.xapi serve --scenario FILE [--speed X] [--port P] "
              "[--unix-dir DIR] [--for SECONDS]", file=sys.stderr)
        return 2
    return serve(argv[1:], lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
