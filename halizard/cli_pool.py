"""The operator's pool commands: status, enable, disable, vm list, vm set.

They talk to xapi like the daemon does (halizard.admin over halizard.runtime.xapi): on a host,
through its local socket as root; elsewhere with ``--xapi URL`` and ``--password-file``. A
slave's xapi names its master and the command follows.

Exit status: 0 done (for `status`: healthy), 1 failed (for `status`: degraded), 2 usage
(for `status`: HA not protecting the pool), like `crm_mon -s`.
"""
import argparse
import json
import os
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit, urlunsplit

from halizard.core.pool import RESTART, PoolView

LOCAL_XAPI = "unix:/var/lib/xcp/xapi"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
HEALTHY, DEGRADED, UNPROTECTED = "healthy", "degraded", "unprotected"
HEALTH_EXIT = {HEALTHY: 0, DEGRADED: 1, UNPROTECTED: 2}


def register(sub: Any) -> None:
    """Add the pool commands to the `halizard` parser's subcommands."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--xapi", metavar="URL", default=os.environ.get("HALIZARD_XAPI",
                                                                            LOCAL_XAPI),
                            help="xapi to talk to (default: this host's, %s)" % LOCAL_XAPI)
    connection.add_argument("--user", default="root", help="xapi user (default: root)")
    connection.add_argument("--password-file", metavar="FILE",
                            help="file holding the xapi password (mode 0600); not needed on "
                                 "the host's own socket")

    status = sub.add_parser("status", parents=[connection], help="the pool, its HA switch and "
                            "its protected VMs; the exit status tells the health")
    status.add_argument("--json", action="store_true", help="machine-readable (keys in README)")
    status.set_defaults(func=cmd_status)

    enable = sub.add_parser("enable", parents=[connection], help="switch HA on pool-wide")
    enable.set_defaults(func=cmd_switch, on=True)
    disable = sub.add_parser("disable", parents=[connection], help="switch HA off pool-wide")
    disable.add_argument("--yes", action="store_true", help="do not ask")
    disable.set_defaults(func=cmd_switch, on=False)

    vm = sub.add_parser("vm", help="per-VM restart policies")
    vm_sub = vm.add_subparsers(dest="vm_command")
    vm_list = vm_sub.add_parser("list", parents=[connection], help="every VM with its policy")
    vm_list.add_argument("--json", action="store_true")
    vm_list.set_defaults(func=cmd_vm_list)
    vm_set = vm_sub.add_parser("set", parents=[connection], help="set the restart policy, start "
                               "order or start delay of VMs (names or UUIDs)")
    vm_set.add_argument("vms", nargs="+", metavar="NAME_OR_UUID")
    vm_set.add_argument("--restart", choices=("restart", "best-effort", "never"))
    vm_set.add_argument("--order", type=int, metavar="N", help="start-order group (lower first)")
    vm_set.add_argument("--start-delay", type=int, metavar="S",
                        help="seconds xapi waits after starting this VM before the next")
    vm_set.set_defaults(func=cmd_vm_set)


# --- connecting ---------------------------------------------------------------------------------


def _address_url(base: str) -> Callable[[str], str]:
    """Another host's URL, from the one given: same scheme and port (the local socket's peers
    are reached over HTTPS)."""
    if base.startswith("unix:"):
        return lambda address: "https://%s" % address
    parts = urlsplit(base)
    port = ":%d" % parts.port if parts.port else ""
    return lambda address: urlunsplit((parts.scheme, address + port, "", "", ""))


def read_password(path: Optional[str]) -> str:
    """The password from a file that only root may read: a secret must not sit in a file others
    can read, nor on the command line (ps shows it)."""
    from halizard.admin import AdminError

    if path is None:
        return ""
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AdminError("%s: mode %o lets others read the password; chmod 600 it"
                             % (path, stat.S_IMODE(mode)))
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise AdminError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None


def _connect(args: argparse.Namespace) -> Any:
    from halizard.admin import AdminError, connect
    from halizard.runtime.transport import unverified_context
    from halizard.runtime.xapi import XapiAdapter

    if not args.xapi.startswith(("unix:", "http://", "https://")):
        raise AdminError("--xapi %r: expected unix:PATH, http://HOST[:PORT] or https://..."
                         % args.xapi)
    # xapi's certificate is self-signed unless the operator installed one; the password file
    # is the secret that matters here, and it never travels unencrypted over HTTPS.
    adapter = XapiAdapter(args.xapi, _address_url(args.xapi),
                          (args.user, read_password(args.password_file)),
                          tls=unverified_context())
    return connect(adapter)


def _needs_root() -> None:
    from halizard.admin import AdminError

    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise AdminError("this changes the pool: run it as root")


def _confirm(args: argparse.Namespace, question: str, stdin: TextIO = sys.stdin) -> None:
    """Ask on a terminal; --yes skips; with no terminal, asking is an error (a script must say
    --yes, never hang on a prompt nobody sees)."""
    from halizard.admin import AdminError

    if getattr(args, "yes", False):
        return
    if not stdin.isatty():
        raise AdminError("%s: no terminal to ask on; add --yes" % question)
    sys.stdout.write("%s [y/N] " % question)
    sys.stdout.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise AdminError("not confirmed: nothing changed")


def _run(body: Callable[[], int]) -> int:
    from halizard.admin import AdminError

    try:
        return body()
    except AdminError as exc:
        print("halizard: %s" % exc, file=sys.stderr)
        return EXIT_FAILED


# --- status -------------------------------------------------------------------------------------


def status_report(view: PoolView, answers: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The `status --json` document (its keys are documented in the README and stable).
    ``answers``: what each host's xapi said when asked just now (admin.roles)."""
    names = {h.uuid: h.name for h in view.hosts}
    answers = answers or {}
    problems: List[str] = []
    masters = [h.name for h in view.hosts if answers.get(h.uuid) == "master"]
    if len(masters) > 1:
        problems.append("two masters: %s each answer as pool master" % " and ".join(masters))
    if view.native_ha:
        problems.append("XenServer's own HA is enabled: halizard stands down while it is")
    if not view.ha_enabled:
        problems.append("halizard is switched off for this pool (halizard enable)")
    hosts = []
    for h in view.hosts:
        maintenance = h.uuid in view.maintenance
        answer = answers.get(h.uuid)
        hosts.append({"name": h.name, "uuid": h.uuid, "address": h.address,
                      "role": "master" if h.uuid == view.master_uuid else "slave",
                      "xapi": answer, "live": h.live, "enabled": h.enabled,
                      "maintenance": maintenance})
        if answer is not None and answer not in ("master", "slave"):
            problems.append("host %s: its xapi does not answer (%s)" % (h.name, answer))
        elif not h.live:
            problems.append("host %s is not live" % h.name)
        elif maintenance:
            problems.append("host %s is in maintenance" % h.name)
        elif not h.enabled:
            problems.append("host %s is disabled" % h.name)
    vms = []
    for v in view.vms:
        host = names.get(v.resident_on) if v.running and v.resident_on else None
        vms.append({"name": v.name, "uuid": v.uuid, "restart": v.policy,
                    "power_state": v.power_state, "host": host, "order": v.order,
                    "start_delay": v.start_delay})
        if v.policy == RESTART and not v.running:
            problems.append("protected VM %s is %s" % (v.name, v.power_state.lower()))
    if view.native_ha or not view.ha_enabled:
        health = UNPROTECTED
    elif problems:
        health = DEGRADED
    else:
        health = HEALTHY
    return {"health": health, "ha_enabled": view.ha_enabled, "native_ha": view.native_ha,
            "master": names.get(view.master_uuid or ""), "hosts": hosts, "vms": vms,
            "problems": problems}


def render_status(report: Dict[str, Any]) -> str:
    lines = ["pool: %s; halizard %s; XenServer HA %s" % (
        report["health"], "enabled" if report["ha_enabled"] else "disabled",
        "on" if report["native_ha"] else "off"), "hosts:"]
    for h in report["hosts"]:
        lines.append("  %-12s %-6s %s%s%s%s  %s" % (
            h["name"], h["role"], "live" if h["live"] else "NOT LIVE",
            "" if h["xapi"] in (None, "master", "slave") else ", xapi: %s" % h["xapi"],
            "" if h["enabled"] else ", disabled", ", maintenance" if h["maintenance"] else "",
            h["address"]))
    protected = [v for v in report["vms"] if v["restart"] != "never"]
    lines.append("protected VMs: %s" % ("none" if not protected else ""))
    for v in protected:
        where = "running on %s" % v["host"] if v["host"] else v["power_state"].lower()
        lines.append("  %-24s %-11s %s" % (v["name"], v["restart"], where))
    lines.append("problems: %s" % ("none" if not report["problems"] else ""))
    lines.extend("  " + p for p in report["problems"])
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from halizard.admin import AdminError, read_view, roles

    try:
        pool = _connect(args)
        view = read_view(pool)
        report = status_report(view, roles(pool, view))
    except AdminError as exc:
        print("halizard: %s" % exc, file=sys.stderr)
        return HEALTH_EXIT[UNPROTECTED]
    print(json.dumps(report, indent=2) if args.json else render_status(report))
    return HEALTH_EXIT[report["health"]]


# --- mutations ----------------------------------------------------------------------------------


def cmd_switch(args: argparse.Namespace) -> int:
    from halizard.admin import read_view, switch

    def body() -> int:
        _needs_root()
        pool = _connect(args)
        view = read_view(pool)
        if not args.on:
            _confirm(args, "Switch halizard off for the whole pool (VMs are no longer "
                           "protected)?")
        changed = switch(pool, view, args.on)
        state = "on" if args.on else "off"
        print("halizard is %s%s" % (state, "" if changed else " (it already was)"))
        return EXIT_OK

    return _run(body)


def cmd_vm_list(args: argparse.Namespace) -> int:
    from halizard.admin import read_view

    def body() -> int:
        vms = status_report(read_view(_connect(args)))["vms"]
        if args.json:
            print(json.dumps(vms, indent=2))
        else:
            for v in vms:
                print("%-24s %-36s %-11s order %-3d delay %-4gs %s" % (
                    v["name"], v["uuid"], v["restart"], v["order"], v["start_delay"],
                    "on %s" % v["host"] if v["host"] else v["power_state"].lower()))
        return EXIT_OK

    return _run(body)


def cmd_vm_set(args: argparse.Namespace) -> int:
    from halizard.admin import VmChange, change_vm, check_change, read_view, resolve_vms

    def body() -> int:
        change = check_change(VmChange(args.restart, args.order, args.start_delay))
        _needs_root()
        pool = _connect(args)
        vms = resolve_vms(read_view(pool), args.vms)  # every name first: all or nothing
        for vm in vms:
            change_vm(pool, vm, change)
            print("%s: %s" % (vm.name, _describe(change)))
        return EXIT_OK

    return _run(body)


def _describe(change: Any) -> str:
    parts: List[Tuple[str, Any]] = [("restart", change.restart), ("order", change.order),
                                    ("start delay", change.start_delay)]
    return ", ".join("%s %s" % (k, v) for k, v in parts if v is not None)
