"""``halizard daemon --config FILE``: the process systemd runs on each host.

It loads and checks the configuration (refusing to start on any problem: a daemon that guesses
is worse than none, and exit status 78, EX_CONFIG, tells systemd not to retry), opens every
device and socket it will need (so a missing watchdog or a missing CAP_NET_RAW shows at start,
not in the middle of a takeover), and hands the daemon loop to the real executor.

Signals: SIGTERM (systemctl stop, or the system going down) and SIGINT ask for a planned stop;
the loop hands the master role and protected VMs over and exits. SIGHUP is ignored with a note:
the configuration is read at start only (both hosts must agree on it; restart both).
"""
import logging
import os
import signal
import socket
import ssl
import sys
import time
from functools import partial
from typing import Any, Dict, List, Optional

from halizard.core.alerts import UNSAFE_CONFIGURATION, event_alert
from halizard.core.alerts import WARNING as WARNING_SEVERITY
from halizard.core.config import ConfigError
from halizard.core.pool import KEY_CONFIG_PREFIX
from halizard.effects import PoolRole
from halizard.loop import run
from halizard.runtime.alerts import AlertReporter, Dispatcher, build_channels, describe_channels
from halizard.runtime.executor import ExecutorError, Host, JournalHandler, RealExecutor
from halizard.runtime.fence import FenceRunner
from halizard.runtime.guests import XlToolstack
from halizard.runtime.link import CarrierWatch
from halizard.runtime.localhost import LocalFileError, StateStore, read_pool_role
from halizard.runtime.poolsettings import describe, pool_settings
from halizard.runtime.probe import Prober
from halizard.runtime.publish import StatusPublisher
from halizard.runtime.selffence import SelfFence
from halizard.runtime.settings import (
    DOM0_POOL_CA,
    HostConfig,
    RuntimeSettings,
    load_alert_setup,
    load_host_config,
)
from halizard.runtime.systemd import ERR, WARNING, Journal, Notifier
from halizard.runtime.transport import unverified_context
from halizard.runtime.watchdog import HostReset, SysrqReset, Watchdog
from halizard.runtime.xapi import XapiAdapter

log = logging.getLogger("halizard.daemon")

EXIT_OK = 0
EXIT_FAILED = 1  # systemd restarts the daemon
EXIT_CONFIG = 78  # EX_CONFIG: the unit's RestartPreventExitStatus, no restart loop
EXIT_RESET = 70  # the recorded (lab) host reset: the daemon stops as the host would
REFUSAL_DEADLINE = 30.0  # s the refusal's alert may take on its way out (every channel at once)
STOP_DRAIN = 5.0  # s queued alerts get at a planned stop


class RecordedReset(HostReset):
    """The lab's and the tests' reset: write the reason to a file, then stop this process at
    once, as a reset would (no clean-up, no magic close of the watchdog)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def reset(self, reason: str) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(reason + "\n")
        finally:
            os._exit(EXIT_RESET)


def host_reset(runtime: RuntimeSettings) -> HostReset:
    if runtime.host_reset.startswith("record:"):
        return RecordedReset(runtime.host_reset[len("record:"):])
    return SysrqReset()


def tls_context(runtime: RuntimeSettings) -> ssl.SSLContext:
    """Verify the peer's xapi against the pool's CA bundle (XenServer 8, XCP-ng 8.3) or the file
    configured; older pools have self-signed certificates and get an unverified context, with a
    warning."""
    cafile = runtime.xapi_ca_file or (DOM0_POOL_CA if os.path.exists(DOM0_POOL_CA) else None)
    if cafile is not None:
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False  # xapi's certificates name the host, we dial an address
        return context
    log.warning("no pool CA bundle (%s) and no xapi_ca_file: the peer's xapi certificate is "
                "not verified", DOM0_POOL_CA)
    return unverified_context()


class RoleBox:
    """The self-fence ladder asks for the role the executor read last."""

    def __init__(self) -> None:
        self.executor: Optional[RealExecutor] = None

    def get(self) -> Optional[PoolRole]:
        return None if self.executor is None else self.executor.role


def build_host(hc: HostConfig, journal: Journal, notifier: Notifier,
               executor_role: RoleBox) -> Host:
    runtime = hc.runtime
    prober = Prober()
    closers: List[object] = [prober]
    try:
        xapi = XapiAdapter(runtime.xapi_url, runtime.peer_url,
                           (runtime.xapi_user, hc.password), tls=tls_context(runtime))
        toolstack = XlToolstack(xl=runtime.xl_command)
        watchdog = Watchdog(hc.config.watchdog_device)
        carrier = CarrierWatch(runtime.interfaces) if runtime.interfaces else None
        if carrier is not None:
            closers.append(carrier)
        fence = FenceRunner(hc.config.fence_agent) if hc.config.fence_agent else None
        self_fence = SelfFence(toolstack, xapi, executor_role.get, host_reset(runtime),
                               lambda: watchdog.armed)
    except Exception:
        for item in closers:
            item.close()  # type: ignore[attr-defined]
        raise
    return Host(prober=prober, xapi=xapi, toolstack=toolstack, watchdog=watchdog,
                self_fence=self_fence, fence=fence, carrier=carrier,
                store=StateStore(runtime.state_file),
                read_role=partial(read_pool_role, runtime.inventory_file,
                                  runtime.pool_conf_file),
                journal=journal, notifier=notifier, publisher=StatusPublisher(xapi),
                system_state=runtime.system_state_command)


def role_from_files(runtime: RuntimeSettings) -> Optional[PoolRole]:
    """This host's pool role from xapi's files, or None (for the alerts: never raises)."""
    try:
        return read_pool_role(runtime.inventory_file, runtime.pool_conf_file)
    except LocalFileError:
        return None


def refusal_alert(config_path: str, exc: ConfigError, journal: Journal,
                  deadline: float = REFUSAL_DEADLINE) -> Dict[str, Dict[str, Any]]:
    """Say through every channel the file still configures that the daemon refuses it: an HA
    daemon that does not run must not be a silent one. Waits ``deadline`` at most."""
    setup, runtime, password, _ = load_alert_setup(config_path)
    xapi: Optional[XapiAdapter] = None
    try:
        xapi = XapiAdapter(runtime.xapi_url, runtime.peer_url, (runtime.xapi_user, password),
                           tls=tls_context(runtime))
    except (OSError, ValueError) as error:
        log.warning("alerts: no XenAPI channel for the refusal (%s)", error)
    channels = build_channels(setup.settings, setup.smtp_password, journal, xapi,
                              lambda: role_from_files(runtime))
    dispatcher = Dispatcher(channels, backoff=(deadline,))
    dispatcher.offer([event_alert(
        UNSAFE_CONFIGURATION, socket.gethostname(),
        "the daemon refuses to start: %d problem%s in %s" % (
            len(exc.problems), "" if len(exc.problems) == 1 else "s", config_path),
        tuple(p.render(config_path) for p in exc.problems) + (
            "This host is not protected until the file is fixed and the daemon started again "
            "(systemctl restart halizard).",), (("problems", len(exc.problems)),), time.time())])
    dispatcher.drain(deadline)
    dispatcher.close()
    if xapi is not None:
        xapi.close()
    return dispatcher.stats()


def main(config_path: str) -> int:
    journal = Journal()
    notifier = Notifier()
    handler = JournalHandler(journal)
    root = logging.getLogger("halizard")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        hc = load_host_config(config_path)
        reader = XapiAdapter(hc.runtime.xapi_url, hc.runtime.peer_url,
                             (hc.runtime.xapi_user, hc.password), tls=tls_context(hc.runtime))
        entries, source = pool_settings(reader, hc.runtime)
        reader.close()
        journal.record("pool-wide settings from %s: %s" % (source, describe(entries)))
        if entries:
            hc = load_host_config(config_path, entries)
    except ConfigError as exc:
        journal.record("refusing to start: %s" % exc, ERR)
        notifier.notify("STATUS=" + "refusing to start: invalid configuration")
        refusal_alert(config_path, exc, journal)
        return EXIT_CONFIG
    for warning in hc.warnings:
        journal.record(warning.render(config_path), WARNING)
    try:
        read_pool_role(hc.runtime.inventory_file, hc.runtime.pool_conf_file)
    except LocalFileError as exc:
        journal.record("cannot start: %s (is this a XenServer host, and is xapi installed?)"
                       % exc, ERR)
        return EXIT_FAILED
    box = RoleBox()
    try:
        host = build_host(hc, journal, notifier, box)
    except PermissionError as exc:
        journal.record("cannot start: %s (the daemon needs root: raw ICMP sockets, the "
                       "watchdog device)" % exc, ERR)
        return EXIT_FAILED
    except (OSError, ValueError, RuntimeError) as exc:
        journal.record("cannot start: %s" % exc, ERR)
        return EXIT_FAILED
    channels = build_channels(hc.alerts.settings, hc.alerts.smtp_password, journal, host.xapi,
                              box.get)
    dispatcher = Dispatcher(channels, hc.alerts.settings.queue_size)
    reporter = AlertReporter(hc.config, hc.alerts.settings.policy, dispatcher,
                             socket.gethostname())
    host = host._replace(alerts=reporter)
    journal.record("alerts: %s" % describe_channels(channels))
    garbled = [w for w in hc.warnings if w.key.startswith(KEY_CONFIG_PREFIX)]
    if garbled:
        reporter.offer([event_alert(
            UNSAFE_CONFIGURATION, socket.gethostname(),
            "%d pool-wide setting%s not applied: both hosts use their files' values instead" % (
                len(garbled), "" if len(garbled) == 1 else "s"),
            tuple(w.render("pool database") for w in garbled), (), time.time(), WARNING_SEVERITY)])
    executor = RealExecutor(host)
    box.executor = executor
    signal.signal(signal.SIGTERM, lambda signum, frame: executor.request_stop(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: executor.request_stop(signum))
    signal.signal(signal.SIGHUP, lambda signum, frame: log.warning(
        "SIGHUP ignored: the configuration is read at start; restart the daemon on both hosts"))
    journal.record("starting: peer %s, gateway %s (%s), watchdog %s" % (
        ", ".join(hc.config.peer_addresses), ", ".join(hc.config.gateway_addresses),
        hc.config.gateway_policy, hc.config.watchdog_device))
    status = EXIT_OK
    try:
        executor.drive(run(hc.config))
        journal.record("stopped")
    except ExecutorError as exc:
        journal.record("exiting: %s" % exc, ERR)
        status = EXIT_FAILED
    finally:
        notifier.stopping()
        dispatcher.drain(STOP_DRAIN)  # what is still queued gets a moment, not the stop's time
        dispatcher.close()
        executor.close()
        host.prober.close()
        if host.carrier is not None:
            host.carrier.close()
        host.xapi.close()
        host.watchdog.close()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
