"""The lab's ``xl``: lists and destroys a lab host's guest domains, as the real ``xl`` does.

The daemon's self-fence and guest count go through ``xl`` (halizard.runtime.guests), never
through xapi. In the lab the domains live in the controller's simulated world, so this shim asks
the controller over its control socket and prints what ``xl list -v`` prints::

    python -S simulations/lab/xl.py --control DIR/control.sock --host xs1 list -v
    python -S simulations/lab/xl.py --control DIR/control.sock --host xs1 destroy 3

It imports nothing but the standard library and may be run as a script with ``-S``: the daemon
starts it every cycle, so it must start fast. The controller's deadline for an answer is the
daemon's business (it kills a hung xl with its process group); ours only keeps a lost
controller from holding a shim forever.
"""
import argparse
import json
import socket
import sys
from typing import Any, Dict, List, Optional, Sequence

REPLY_TIMEOUT = 10.0  # s
HEADER = ("Name                                        ID   Mem VCPUs\tState\tTime(s)   "
          "UUID                            Reason-Code\tSecurity Label")
DOM0_UUID = "00000000-0000-0000-0000-000000000000"


def format_list(domains: Sequence[Dict[str, Any]]) -> str:
    """``xl list -v`` output (xl_info.c's layout) for domains given as dicts with name, domid,
    memory (MiB), vcpus, state (six flags), time (s) and uuid."""
    lines = [HEADER]
    for d in sorted(domains, key=lambda d: int(d["domid"])):
        lines.append("%-40s %5d %5d %5d     %s  %8.1f %s     -                -"
                     % (d["name"], int(d["domid"]), int(d["memory"]), int(d["vcpus"]),
                        d["state"], float(d["time"]), d["uuid"]))
    return "\n".join(lines) + "\n"


def ask(control: str, request: Dict[str, Any], timeout: float = REPLY_TIMEOUT) -> Dict[str, Any]:
    """One request to the controller, one JSON answer (raises OSError or ValueError)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(control)
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        chunks: List[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    finally:
        sock.close()
    answer = json.loads(b"".join(chunks).decode("utf-8"))
    if not isinstance(answer, dict):
        raise ValueError("controller answered %r" % (answer,))
    return answer


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="xl (halizard lab)")
    parser.add_argument("--control", required=True, help="the lab controller's socket")
    parser.add_argument("--host", required=True, help="the lab host this xl runs on")
    parser.add_argument("command", choices=("list", "destroy"))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "list":
        if args.args not in ([], ["-v"]):
            print("xl list: the lab's xl knows only `list -v`", file=sys.stderr)
            return 2
        request: Dict[str, Any] = {"cmd": "xl-list", "host": args.host}
    else:
        if len(args.args) != 1 or not args.args[0].isdigit():
            print("usage: xl destroy <DomId>", file=sys.stderr)
            return 2
        request = {"cmd": "xl-destroy", "host": args.host, "domid": int(args.args[0])}
    try:
        answer = ask(args.control, request)
    except (OSError, ValueError) as exc:
        print("xl: cannot reach the lab controller at %s: %s" % (args.control, exc),
              file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print("xl: %s" % answer.get("error", "failed"), file=sys.stderr)
        return 1
    if args.command == "list":
        sys.stdout.write(format_list(answer["domains"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
