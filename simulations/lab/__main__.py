"""python -m simulations.lab up|down|fault|status|bench (and `controller`, which `up` starts).

    up [--dir D] [--second-link] [--timings short|default] [--vms N] [--no-daemons]
    down [--dir D]
    fault KIND TARGET [--for SECONDS] [--dir D]
        KIND: port-down port-up (TARGET xs1, xs2, or xs1:eth1 for the second link),
              gateway-down gateway-up (TARGET gw), crash power-on stall resume daemon-kill
              xapi-hang xapi-resume shutdown (TARGET a host)
    status [--dir D] [--json]
    bench [--runs N] [--timings short,default] [--scenarios master-crash,...] [--dir D]
"""
import argparse
import json
import sys
from typing import List, Optional

from simulations.lab.api import DEFAULT_DIR, LabUpError, describe, down, up
from simulations.lab.control import ControlError, request
from simulations.lab.layout import Manifest


def _dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR, help="the lab directory (default %s)"
                        % DEFAULT_DIR)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.lab")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("up", help="build the lab and start its controller and daemons")
    _dir(p)
    p.add_argument("--second-link", action="store_true", help="a second heartbeat link (eth1)")
    p.add_argument("--timings", choices=("short", "default"), default="short")
    p.add_argument("--vms", type=int, default=4, help="protected VMs (default 4)")
    p.add_argument("--no-daemons", action="store_true", help="everything but the daemons")
    p.add_argument("--python", default=sys.executable,
                   help="the Python that runs the controller, the daemons and xl")
    p = sub.add_parser("down", help="stop everything and remove the namespaces")
    _dir(p)
    p = sub.add_parser("fault", help="do a fault now (or for a while)")
    _dir(p)
    p.add_argument("kind")
    p.add_argument("target")
    p.add_argument("--for", dest="duration", type=float, help="undo it after SECONDS")
    p = sub.add_parser("status", help="hosts, roles, domains, daemons")
    _dir(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("bench", help="failover times over several runs (BENCHMARKS.md)")
    p.add_argument("--dir", default=None, help="where to build the labs (default: a temporary "
                   "directory)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--timings", default="short,default")
    p.add_argument("--scenarios", default=None)
    p.add_argument("--json", help="also write the results here")
    p = sub.add_parser("controller", help=argparse.SUPPRESS)
    p.add_argument("--dir", required=True)
    args = parser.parse_args(argv)

    if args.command == "controller":
        from simulations.lab.controller import main as controller_main

        return controller_main(args.dir)
    if args.command == "up":
        try:
            layout = up(args.dir, args.second_link, args.timings, args.vms,
                        not args.no_daemons, args.python)
        except (LabUpError, ValueError, OSError) as exc:
            print("lab up: %s" % exc, file=sys.stderr)
            return 1
        print("lab %s up in %s (namespaces %s-*)" % (layout.prefix, layout.dir, layout.prefix))
        return 0
    if args.command == "down":
        try:
            problems = down(args.dir)
        except (FileNotFoundError, ValueError) as exc:
            print("lab down: %s" % exc, file=sys.stderr)
            return 1
        for problem in problems:
            print("lab down: %s" % problem, file=sys.stderr)
        return 1 if problems else 0
    if args.command in ("fault", "status"):
        try:
            layout = Manifest.load(args.dir).layout
            if args.command == "fault":
                fields = {"kind": args.kind, "target": args.target}
                if args.duration is not None:
                    fields["for"] = args.duration
                request(layout.control_socket, "fault", **fields)
                return 0
            status = request(layout.control_socket, "status")
        except (ControlError, FileNotFoundError, ValueError) as exc:
            print("lab %s: %s" % (args.command, exc), file=sys.stderr)
            return 1
        print(json.dumps(status, indent=1, sort_keys=True) if args.json else describe(status))
        return 0
    if args.command == "bench":
        from simulations.lab.bench import main as bench_main

        return bench_main(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
