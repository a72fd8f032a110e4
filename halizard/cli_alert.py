"""``halizard alert test [--channel C] [--config FILE]``: send a test alert, say what each channel
did with it.

It reads the ``[alerts]`` table of this host's file and builds the same channels the daemon
does (halizard.runtime.alerts), then sends one test alert through each, synchronously, each
under its own deadline, and prints one line per channel: delivered, or the step that failed
and why. Exit 0 when every channel asked for delivered, 1 otherwise.
"""
import argparse
import json
import os
import socket
import sys
import time
from typing import Any, Dict, List

from halizard.core.config import DEFAULT_CONFIG_PATH

CHANNELS = ("journal", "xapi", "email", "webhook")
EXIT_OK, EXIT_FAILED = 0, 1


def register(sub: Any) -> None:
    alert = sub.add_parser("alert", help="the alerts an administrator receives")
    alert_sub = alert.add_subparsers(dest="alert_command")
    test = alert_sub.add_parser("test", help="send a test alert through each channel "
                                             "configured and report each result")
    test.add_argument("--channel", action="append", choices=CHANNELS,
                      help="only this channel (repeatable; default: every channel configured)")
    test.add_argument("--config", metavar="FILE",
                      help="the host's configuration (default $HALIZARD_CONFIG or %s)"
                           % DEFAULT_CONFIG_PATH)
    test.add_argument("--json", action="store_true", help="print the results as JSON")
    test.set_defaults(func=cmd_alert_test)
    alert.set_defaults(func=lambda args: (alert.print_help(), 2)[1])


def cmd_alert_test(args: argparse.Namespace) -> int:
    from halizard.core.alerts import TEST, event_alert
    from halizard.runtime.alerts import build_channels
    from halizard.runtime.channel import ChannelError
    from halizard.runtime.daemon import role_from_files, tls_context
    from halizard.runtime.settings import load_alert_setup
    from halizard.runtime.systemd import Journal
    from halizard.runtime.xapi import XapiAdapter

    path = args.config or os.environ.get("HALIZARD_CONFIG", DEFAULT_CONFIG_PATH)
    setup, runtime, password, problems = load_alert_setup(path)
    for problem in problems:
        print("%s" % problem.render(path), file=sys.stderr)
    if any(p.key == "" or p.key.startswith("alerts") for p in problems):
        print("fix the [alerts] table first (`halizard config validate %s`)" % path,
              file=sys.stderr)
        return EXIT_FAILED
    xapi = XapiAdapter(runtime.xapi_url, runtime.peer_url, (runtime.xapi_user, password),
                       tls=tls_context(runtime))
    host = socket.gethostname()
    try:
        channels = {c.name: c for c in build_channels(
            setup.settings, setup.smtp_password, Journal(), xapi,
            lambda: role_from_files(runtime), host)}
        wanted = args.channel or [name for name in CHANNELS if name in channels]
        results: List[Dict[str, Any]] = []
        for name in wanted:
            channel = channels.get(name)
            if channel is None:
                results.append({"channel": name, "ok": False, "result": "not configured: %s" % (
                    "xapi_messages = false in [alerts]" if name == "xapi"
                    else "add [alerts.%s] to %s" % (name, path))})
                continue
            alert = event_alert(TEST, host, "test alert through %s, sent by `halizard alert "
                                "test`" % name,
                                ("If you read this, alerts from %s reach you this way." % host,),
                                (("channel", name),), time.time())
            started = time.monotonic()
            try:
                channel.send(alert)
            except ChannelError as exc:
                results.append({"channel": name, "ok": False, "result": "failed: %s" % exc,
                                "seconds": round(time.monotonic() - started, 2)})
                continue
            results.append({"channel": name, "ok": True, "result": "delivered (%s)"
                            % channel.describe(), "seconds": round(time.monotonic() - started, 2)})
    finally:
        xapi.close()
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    else:
        for r in results:
            print("%-8s %s" % (r["channel"], r["result"]))
    return EXIT_OK if results and all(r["ok"] for r in results) else EXIT_FAILED
