"""The daemon's host-local settings: where xapi is, which NICs to watch, where state lives.

They share the configuration file with the decision core's keys (halizard.core.config, which
checks the timings and addresses and knows these keys only by name). Loading checks both and
fails with every problem named. A file that holds a secret (fence agent options, which usually
carry a BMC password) must be mode 0600 and owned by root: the daemon refuses it otherwise,
since anyone who can read it can power the peer off. The xapi password is never in the file,
only the path of a 0600 file that holds it.

Defaults are a XenServer / XCP-ng dom0's own paths; the lab overrides them.
"""
import os
import shlex
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from halizard.core.config import (
    Config,
    ConfigError,
    Problem,
    load_config,
    merge_pool_settings,
)
from halizard.runtime.alertconfig import AlertSettings, alert_settings
from halizard.toml import TomlError, load_file

DOM0_XAPI = "unix:/var/lib/xcp/xapi"
DOM0_POOL_CA = "/etc/stunnel/xapi-pool-ca-bundle.pem"  # XenServer 8 / XCP-ng 8.3 pool certificates
RESET_KINDS = ("sysrq", "record")


@dataclass(frozen=True)
class RuntimeSettings:
    xapi_url: str = DOM0_XAPI
    xapi_peer_url: str = "https://{address}/"
    xapi_user: str = "root"
    xapi_password_file: Optional[str] = None
    xapi_ca_file: Optional[str] = None
    interfaces: Tuple[str, ...] = ()
    state_file: str = "/var/lib/halizard/state.json"
    inventory_file: str = "/etc/xensource-inventory"
    pool_conf_file: str = "/etc/xensource/pool.conf"
    xl_command: Tuple[str, ...] = ("xl",)
    host_reset: str = "sysrq"  # or "record:<path>": write the reason there and exit (the lab)
    system_state_command: Tuple[str, ...] = ("systemctl", "is-system-running")

    def peer_url(self, address: str) -> str:
        host = "[%s]" % address if ":" in address else address
        return self.xapi_peer_url.replace("{address}", host)


@dataclass(frozen=True)
class AlertSetup:
    """The ``[alerts]`` table, with the SMTP password read from its file."""

    settings: AlertSettings = AlertSettings()
    smtp_password: str = field(default="", repr=False)


@dataclass(frozen=True)
class HostConfig:
    """Everything the daemon process needs, loaded from one file."""

    config: Config
    runtime: RuntimeSettings
    warnings: Tuple[Problem, ...]
    password: str = field(repr=False)
    alerts: AlertSetup = AlertSetup()


def _text(table: Mapping[str, Any], key: str, problems: List[Problem]) -> Optional[str]:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(Problem(key, "must be a non-empty string"))
        return None
    return value.strip()


def _command(table: Mapping[str, Any], key: str, problems: List[Problem]
             ) -> Optional[Tuple[str, ...]]:
    text = _text(table, key, problems)
    if text is None:
        return None
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        problems.append(Problem(key, "cannot split into a command: %s" % exc))
        return None
    return argv or None


def runtime_settings(table: Mapping[str, Any], problems: List[Problem]) -> RuntimeSettings:
    """The runtime keys of a parsed configuration table; problems are appended."""
    values: Dict[str, Any] = {}
    for key in ("xapi_url", "xapi_peer_url", "xapi_user", "xapi_password_file", "xapi_ca_file",
                "state_file", "inventory_file", "pool_conf_file", "host_reset"):
        text = _text(table, key, problems)
        if text is not None:
            values[key] = text
    url = values.get("xapi_url")
    if url is not None and not url.startswith(("unix:", "http://", "https://")):
        problems.append(Problem("xapi_url", "must be unix:/path, http://... or https://..."))
    peer = values.get("xapi_peer_url")
    if peer is not None and ("{address}" not in peer or not peer.startswith(("http://",
                                                                           "https://"))):
        problems.append(Problem("xapi_peer_url", "must be an http(s) URL template with "
                                "{address}, e.g. \"https://{address}/\""))
    reset = values.get("host_reset")
    if reset is not None and not (reset == "sysrq" or reset.startswith("record:")
                                  and len(reset) > len("record:")):
        problems.append(Problem("host_reset", "must be \"sysrq\" (the real reset) or "
                                "\"record:/path\" (tests and the lab: record it and exit)"))
    for key in ("xl_command", "system_state_command"):
        argv = _command(table, key, problems)
        if argv is not None:
            values[key] = argv
    if "interfaces" in table:
        names = table["interfaces"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            problems.append(Problem("interfaces", "must be a list of interface names, e.g. "
                                    "[\"eth0\", \"eth1\"] (the physical NICs or bond members, "
                                    "not the Open vSwitch bridge)"))
        else:
            from halizard.runtime.link import LinkError, check_interface_names
            try:
                values["interfaces"] = check_interface_names(names)
            except LinkError as exc:
                problems.append(Problem("interfaces", str(exc)))
    return RuntimeSettings(**values)


def _private(path: str, what: str, problems: List[Problem], key: str) -> None:
    """A file holding a secret must be readable by its owner only (and owned by root when the
    daemon runs as root)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        problems.append(Problem(key, "%s %s: %s" % (what, path, exc.strerror or exc)))
        return
    if stat.S_IMODE(info.st_mode) & 0o077:
        problems.append(Problem(key, "%s %s is mode %04o: it holds a secret, so it must be 0600 "
                                "(chmod 600 %s)" % (what, path, stat.S_IMODE(info.st_mode),
                                                    path)))
    if os.geteuid() == 0 and info.st_uid != 0:
        problems.append(Problem(key, "%s %s must be owned by root" % (what, path)))


def _read_secret(path: str, what: str, key: str, problems: List[Problem]) -> str:
    """The secret in file ``path`` (mode 0600, root's), or "" with a problem."""
    before = len(problems)
    _private(path, what, problems, key)
    if len(problems) > before:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        problems.append(Problem(key, "cannot read %s: %s" % (path, exc.strerror or exc)))
        return ""


def _alert_setup(path: str, table: Mapping[str, Any], problems: List[Problem]) -> AlertSetup:
    settings = alert_settings(table, problems)
    if settings.holds_secret:
        _private(path, "the configuration file (it holds the webhook URL)", problems,
                 "alerts.webhook")
    password = ""
    email = settings.email
    if email is not None and email.password_file is not None:
        password = _read_secret(email.password_file, "the SMTP password file",
                                "alerts.email.password_file", problems)
    return AlertSetup(settings, password)


def load_alert_setup(path: str) -> Tuple[AlertSetup, RuntimeSettings, str, List[Problem]]:
    """What alerts need from a file that may not load as a whole (the daemon refusing it
    still says so through every channel it can): the alert setup, the runtime keys, the xapi
    password; each part that does not parse comes back as problems and its defaults."""
    problems: List[Problem] = []
    try:
        table = load_file(path)
    except TomlError as exc:
        return AlertSetup(), RuntimeSettings(), "", [Problem("", "not valid TOML: %s" % exc)]
    except OSError as exc:
        return AlertSetup(), RuntimeSettings(), "", [
            Problem("", "cannot read: %s" % (exc.strerror or exc))]
    runtime = runtime_settings(table, problems)
    password = ""
    if runtime.xapi_password_file is not None:
        password = _read_secret(runtime.xapi_password_file, "the password file",
                                "xapi_password_file", problems)
    return _alert_setup(path, table, problems), runtime, password, problems


def load_host_config(path: str, pool_other_config: Optional[Mapping[str, Any]] = None
                     ) -> HostConfig:
    """Read and check the daemon's configuration file, with the pool-wide settings of
    ``pool_other_config`` laid over it (halizard.core.config.merge_pool_settings: the pool
    wins); ConfigError names every problem. Pool entries that cannot be applied come back as
    warnings."""
    try:
        table = load_file(path)
    except TomlError as exc:
        raise ConfigError(path, [Problem("", "not valid TOML: %s" % exc)]) from None
    except OSError as exc:
        raise ConfigError(path, [Problem("", "cannot read: %s" % (exc.strerror or exc))]) from None
    problems: List[Problem] = []
    runtime = runtime_settings(table, problems)
    if "fence_options" in table:
        _private(path, "the configuration file", problems, "fence_options")
    password = ""
    if runtime.xapi_password_file is not None:
        password = _read_secret(runtime.xapi_password_file, "the password file",
                                "xapi_password_file", problems)
    alerts = _alert_setup(path, table, problems)
    pool_problems: List[Problem] = []
    if pool_other_config:
        table, pool_problems = merge_pool_settings(table, pool_other_config)
    try:
        loaded = load_config(table, source=path)
    except ConfigError as exc:
        raise ConfigError(path, exc.problems + problems) from None
    if problems:
        raise ConfigError(path, problems)
    return HostConfig(loaded.config, runtime, loaded.warnings + tuple(pool_problems), password,
                      alerts)
