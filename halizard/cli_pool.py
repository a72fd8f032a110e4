"""The operator's pool commands: status [--watch], enable and disable [--wait], maintenance,
vm list, vm set.

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
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit, urlunsplit

from halizard.core.config import DEFAULT_CONFIG_PATH
from halizard.core.pool import PoolView

LOCAL_XAPI = "unix:/var/lib/xcp/xapi"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
WAIT_TIMEOUT = 30.0  # seconds `enable --wait` / `disable --wait` wait by default
MAINTENANCE_TIMEOUT = 300.0  # seconds for the hand-over, and for each VM's live migration


def config_path() -> str:
    """This host's configuration file: $HALIZARD_CONFIG, else /etc/halizard/halizard.toml."""
    return os.environ.get("HALIZARD_CONFIG") or DEFAULT_CONFIG_PATH


def connection_options() -> argparse.ArgumentParser:
    """The options every command that talks to xapi takes (a parent parser)."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--xapi", metavar="URL", default=os.environ.get("HALIZARD_XAPI",
                                                                            LOCAL_XAPI),
                            help="xapi to talk to (default: this host's, %s)" % LOCAL_XAPI)
    connection.add_argument("--user", default="root", help="xapi user (default: root)")
    connection.add_argument("--password-file", metavar="FILE",
                            help="file holding the xapi password (mode 0600); not needed on "
                                 "the host's own socket")
    return connection


def register(sub: Any) -> None:
    """Add the pool commands to the `halizard` parser's subcommands."""
    connection = connection_options()

    status = sub.add_parser("status", parents=[connection], help="the pool, its HA switch and "
                            "its protected VMs; the exit status tells the health")
    status.add_argument("--json", action="store_true", help="machine-readable (keys in README)")
    status.add_argument("--watch", type=float, metavar="SECONDS",
                        help="look again every SECONDS until interrupted")
    status.add_argument("--config", metavar="FILE", default=config_path(),
                        help="this host's configuration, checked with the pool-wide values "
                             "(default %s; none: the pool-wide values alone)" % config_path())
    status.set_defaults(func=cmd_status)

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="wait until the daemon of every "
                         "reachable host has acknowledged the switch")
    waiting.add_argument("--timeout", type=float, default=WAIT_TIMEOUT, metavar="SECONDS",
                         help="how long --wait waits (default %gs)" % WAIT_TIMEOUT)
    enable = sub.add_parser("enable", parents=[connection, waiting],
                            help="switch HA on pool-wide")
    enable.set_defaults(func=cmd_switch, on=True)
    disable = sub.add_parser("disable", parents=[connection, waiting],
                             help="switch HA off pool-wide")
    disable.add_argument("--yes", action="store_true", help="do not ask")
    disable.set_defaults(func=cmd_switch, on=False)

    maintenance = sub.add_parser(
        "maintenance", parents=[connection],
        help="planned maintenance of a host: hand the master role over, move its protected VMs "
             "to the other host, disable it (on); enable it again (off)")
    maintenance.add_argument("action", choices=("on", "off"))
    maintenance.add_argument("--host", metavar="H", help="name, UUID or address (default: this "
                             "host: on its own socket the local host, else the host --xapi "
                             "names)")
    maintenance.add_argument("--yes", action="store_true", help="do not ask")
    maintenance.add_argument("--timeout", type=float, default=MAINTENANCE_TIMEOUT,
                             metavar="SECONDS", help="deadline of each step: the hand-over, "
                             "each VM's move (default %gs)" % MAINTENANCE_TIMEOUT)
    maintenance.set_defaults(func=cmd_maintenance)

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


def adapter_for(xapi: str, user: str, password_file: Optional[str]) -> Any:
    """The daemon's XenAPI adapter, for the xapi the operator named."""
    from halizard.admin import AdminError
    from halizard.runtime.transport import unverified_context
    from halizard.runtime.xapi import XapiAdapter

    if not xapi.startswith(("unix:", "http://", "https://")):
        raise AdminError("--xapi %r: expected unix:PATH, http://HOST[:PORT] or https://..."
                         % xapi)
    # xapi's certificate is self-signed unless the operator installed one; the password file
    # is the secret that matters here, and it never travels unencrypted over HTTPS.
    return XapiAdapter(xapi, _address_url(xapi), (user, read_password(password_file)),
                       tls=unverified_context())


def connect_pool(args: argparse.Namespace) -> Any:
    from halizard.admin import connect

    return connect(adapter_for(args.xapi, args.user, args.password_file))


def needs_root() -> None:
    from halizard.admin import AdminError

    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise AdminError("this changes the pool: run it as root")


def confirm(args: argparse.Namespace, question: str, stdin: Optional[TextIO] = None) -> None:
    """Ask on a terminal; --yes skips; with no terminal, asking is an error (a script must say
    --yes, never hang on a prompt nobody sees)."""
    from halizard.admin import AdminError

    if getattr(args, "yes", False):
        return
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        raise AdminError("%s: no terminal to ask on; add --yes" % question)
    sys.stdout.write("%s [y/N] " % question)
    sys.stdout.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise AdminError("not confirmed: nothing changed")


def run_admin(body: Callable[[], int]) -> int:
    from halizard.admin import AdminError

    try:
        return body()
    except AdminError as exc:
        print("halizard: %s" % exc, file=sys.stderr)
        return EXIT_FAILED


# --- status -------------------------------------------------------------------------------------


def _status_once(args: argparse.Namespace, pool: Any) -> Tuple[Any, Dict[str, Any]]:
    """One look at the pool: (the session, for the next look; the status document)."""
    from halizard.admin import read_state, roles
    from halizard.core.pool import daemon_reports
    from halizard.status import status_report

    if pool is None:
        pool = connect_pool(args)
    state = read_state(pool)
    report = status_report(state.view, roles(pool, state.view),
                           daemon_reports(state.other_config), time.time(),
                           _config_findings(args.config, state.other_config))
    return pool, report


def _config_findings(path: str, other_config: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """The configuration's problems and warnings: this host's file (when it has one) with the
    pool-wide values, or the pool-wide values alone."""
    from halizard.cli_config import FileError, findings, read_table

    try:
        table = read_table(path, required=False)
    except FileError as exc:
        return [str(exc)], []
    return findings(table, other_config, path)


def cmd_status(args: argparse.Namespace) -> int:
    from halizard.admin import AdminError
    from halizard.status import HEALTH_EXIT, UNPROTECTED, render_status

    if args.watch is not None:
        if not args.watch > 0:
            print("halizard: --watch takes a number of seconds above zero", file=sys.stderr)
            return EXIT_USAGE
        return _watch(args)
    try:
        _, report = _status_once(args, None)
    except AdminError as exc:
        print("halizard: %s" % exc, file=sys.stderr)
        return HEALTH_EXIT[UNPROTECTED]
    print(json.dumps(report, indent=2) if args.json else render_status(report))
    return HEALTH_EXIT[report["health"]]


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _watch(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Redraw every ``args.watch`` seconds until interrupted; the exit status is the last
    health. On a terminal the screen is cleared first; otherwise (a log, a pipe) each look is
    appended, with --json as one JSON document per line. A look that fails (the master
    restarting, say) is shown and the next one connects again."""
    from halizard.admin import AdminError
    from halizard.status import HEALTH_EXIT, UNPROTECTED, render_status

    out = out or sys.stdout
    pool = None
    code = HEALTH_EXIT[UNPROTECTED]
    tty = out.isatty()
    try:
        while True:
            try:
                pool, report = _status_once(args, pool)
                text = (json.dumps(report, sort_keys=True) if args.json
                        else render_status(report))
                code = HEALTH_EXIT[report["health"]]
            except AdminError as exc:
                pool = None
                text = (json.dumps({"error": str(exc)}) if args.json
                        else "halizard: %s" % exc)
                code = HEALTH_EXIT[UNPROTECTED]
            if tty:
                out.write("\033[H\033[2J%s  (every %gs; Ctrl-C to stop)\n\n"
                          % (time.strftime("%Y-%m-%d %H:%M:%S"), args.watch))
            elif not args.json:
                out.write("--- %s\n" % time.strftime("%Y-%m-%d %H:%M:%S"))
            out.write(text + "\n")
            out.flush()
            _sleep(args.watch)
    except KeyboardInterrupt:
        return code


# --- mutations ----------------------------------------------------------------------------------


def cmd_switch(args: argparse.Namespace) -> int:
    from halizard.admin import AdminError, read_view, switch

    def body() -> int:
        if args.wait and not args.timeout > 0:
            raise AdminError("--timeout takes a number of seconds above zero")
        needs_root()
        pool = connect_pool(args)
        view = read_view(pool)
        if not args.on:
            confirm(args, "Switch halizard off for the whole pool (VMs are no longer "
                           "protected)?")
        changed = switch(pool, view, args.on)
        state = "on" if args.on else "off"
        print("halizard is %s%s" % (state, "" if changed else " (it already was)"))
        sys.stdout.flush()
        return _await_switch(args, pool, view) if args.wait else EXIT_OK

    return run_admin(body)


def _await_switch(args: argparse.Namespace, pool: Any, view: PoolView) -> int:
    """--wait: every host whose xapi answers must publish a report that shows the switch."""
    from halizard.admin import await_switch, roles
    from halizard.status import daemon_entry, render_daemon

    answers = roles(pool, view)
    reachable = [h for h in view.hosts if answers.get(h.uuid) in ("master", "slave")]
    for h in view.hosts:
        if h not in reachable:
            print("%s: not waited for: its xapi does not answer (%s)" % (h.name,
                                                                        answers.get(h.uuid)))
    missing = await_switch(pool, [h.uuid for h in reachable], args.on, args.timeout)
    for h in reachable:
        if h.uuid not in missing:
            print("%s: acknowledged" % h.name)
    if not missing:
        return EXIT_OK
    for h in reachable:
        if h.uuid in missing:
            print("halizard: %s: its daemon did not acknowledge within %gs; its report: %s"
                  % (h.name, args.timeout, render_daemon(daemon_entry(missing[h.uuid],
                                                                      time.time()))),
                  file=sys.stderr)
    print("halizard: the switch is written; each daemon applies it when it runs "
          "(`systemctl status halizard` on that host)", file=sys.stderr)
    return EXIT_FAILED


def this_host(args: argparse.Namespace, view: PoolView) -> Any:
    """The host a command without --host means: on the host's own socket, the local host (its
    INSTALLATION_UUID); with --xapi URL, the host with that management address."""
    from halizard import maintenance
    from halizard.admin import AdminError

    if args.xapi.startswith("unix:"):
        try:
            with open(maintenance.INVENTORY) as f:
                uuid = maintenance.inventory_uuid(f.read())
        except OSError as exc:
            raise AdminError("cannot tell which host this is (%s: %s): give --host"
                             % (maintenance.INVENTORY, exc.strerror or exc)) from None
        if uuid is None:
            raise AdminError("%s names no INSTALLATION_UUID: give --host" % maintenance.INVENTORY)
        return maintenance.find_host(view, uuid)
    address = urlsplit(args.xapi).hostname or ""
    host = view.host_by_address(address)
    if host is None:
        raise AdminError("--xapi %s is not the management address of a host in this pool: "
                         "give --host" % args.xapi)
    return host


def cmd_maintenance(args: argparse.Namespace) -> int:
    from halizard import maintenance
    from halizard.admin import AdminError, read_view, roles

    def say(line: str) -> None:
        print(line)
        sys.stdout.flush()

    def body() -> int:
        if not args.timeout > 0:
            raise AdminError("--timeout takes a number of seconds above zero")
        needs_root()
        pool = connect_pool(args)
        view = read_view(pool)
        host = maintenance.find_host(view, args.host) if args.host else this_host(args, view)
        if args.action == "off":
            maintenance.leave(pool, view, host, say)
            return EXIT_OK
        if view.native_ha:
            raise AdminError("XenServer's own HA is enabled: use its maintenance mode "
                             "(XenCenter, or `xe host-evacuate`); nothing changed")
        to = maintenance.destination(view, host, roles(pool, view))
        moving, left = maintenance.plan_moves(view, host.uuid)
        confirm(args, "Put %s into maintenance: %smove %d protected VM%s to %s%s?" % (
            host.name, "hand the master role to %s, " % to.name
            if view.master_uuid == host.uuid else "", len(moving),
            "" if len(moving) == 1 else "s", to.name,
            " (%d unprotected left there)" % len(left) if left else ""))
        emptied = maintenance.enter(pool, view, host, to, args.timeout, say)
        note = maintenance.unprotected_note(emptied.left, host)
        if note:
            print("note: " + note, file=sys.stderr)
        if emptied.failed:
            raise AdminError(
                "%d protected VM%s still on %s: %s. Maintenance stays on (nothing is started "
                "there). Fix the cause, then run `halizard maintenance on --host %s` again to "
                "retry, or `halizard maintenance off --host %s` to cancel" % (
                    len(emptied.failed), "" if len(emptied.failed) == 1 else "s", host.name,
                    ", ".join(o.name for o in emptied.failed), host.name, host.name))
        say("%s can be rebooted; afterwards: halizard maintenance off --host %s"
            % (host.name, host.name))
        return EXIT_OK

    return run_admin(body)


def cmd_vm_list(args: argparse.Namespace) -> int:
    from halizard.admin import read_view
    from halizard.status import status_report

    def body() -> int:
        vms = status_report(read_view(connect_pool(args)))["vms"]
        if args.json:
            print(json.dumps(vms, indent=2))
        else:
            for v in vms:
                print("%-24s %-36s %-11s order %-3d delay %-4gs %s" % (
                    v["name"], v["uuid"], v["restart"], v["order"], v["start_delay"],
                    "on %s" % v["host"] if v["host"] else v["power_state"].lower()))
        return EXIT_OK

    return run_admin(body)


def cmd_vm_set(args: argparse.Namespace) -> int:
    from halizard.admin import VmChange, change_vm, check_change, read_view, resolve_vms

    def body() -> int:
        change = check_change(VmChange(args.restart, args.order, args.start_delay))
        needs_root()
        pool = connect_pool(args)
        vms = resolve_vms(read_view(pool), args.vms)  # every name first: all or nothing
        for vm in vms:
            change_vm(pool, vm, change)
            print("%s: %s" % (vm.name, _describe(change)))
        return EXIT_OK

    return run_admin(body)


def _describe(change: Any) -> str:
    parts: List[Tuple[str, Any]] = [("restart", change.restart), ("order", change.order),
                                    ("start delay", change.start_delay)]
    return ", ".join("%s %s" % (k, v) for k, v in parts if v is not None)
