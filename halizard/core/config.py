"""The daemon's configuration: one flat TOML table, every timing parameter explicit.

Loading never guesses. A missing required key, a value of the wrong type, an unknown key (a
typo in a safety setting is a safety bug), an address that is not an IP literal, or timings that
break the safety inequalities (halizard.core.timing) are errors that name the key and the file.
No default names a real address: the peer and the gateway must be configured explicitly.
"""
import difflib
import ipaddress
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

from halizard.core.pool import KEY_CONFIG_PREFIX
from halizard.core.units import UnitError, format_duration, parse_duration

GATEWAY_POLICIES = ("any", "all", "majority")
DEFAULT_CONFIG_PATH = "/etc/halizard/halizard.toml"  # the CLI's HALIZARD_CONFIG overrides it


@dataclass(frozen=True)
class FenceAgent:
    """A ClusterLabs-style fence agent that can power the peer off (fence_ipmilan, ...)."""

    command: str
    options: Tuple[Tuple[str, str], ...] = field(default=(), repr=False)  # may hold a password

    def __repr__(self) -> str:
        return "FenceAgent(command=%r, options=<%d keys: %s>)" % (
            self.command, len(self.options), ", ".join(k for k, _ in self.options))


@dataclass(frozen=True)
class Config:
    """Host-local configuration. Timings are seconds on the monotonic clock.

    Both hosts must use the same timings: the rules are agreed in advance, and each host trusts
    that its peer follows them without being able to ask.
    """

    peer_addresses: Tuple[str, ...]
    gateway_addresses: Tuple[str, ...]
    gateway_policy: str = "any"
    probe_interval: float = 1.0
    probe_count: int = 5
    probe_spacing: float = 0.05
    probe_timeout: float = 0.3
    peer_timeout: float = 4.0
    lease_timeout: float = 4.0
    watchdog_timeout: float = 5.0
    promote_delay: float = 7.5
    takeover_delay: float = 12.0
    max_drift_ppm: float = 500.0
    safety_margin: float = 1.0
    xapi_timeout: float = 0.5
    task_timeout: float = 120.0
    start_retry_delay: float = 5.0
    fence_agent: Optional[FenceAgent] = None
    fence_timeout: float = 10.0
    fence_delay: float = 15.0
    watchdog_device: str = "/dev/watchdog"

    @property
    def probe_window(self) -> float:
        """Longest time one probe round takes: the last request plus its reply timeout."""
        return (self.probe_count - 1) * self.probe_spacing + self.probe_timeout


@dataclass(frozen=True)
class Problem:
    """One finding about a configuration, naming the key it is about."""

    key: str
    message: str

    def render(self, source: str) -> str:
        where = "%s: %s" % (source, self.key) if self.key else source
        return "%s: %s" % (where, self.message)


class ConfigError(ValueError):
    """A configuration that must not be used. ``problems`` lists every error found."""

    def __init__(self, source: str, problems: List[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: Tuple[Problem, ...] = field(default_factory=tuple)


_DURATION_KEYS = (
    "probe_interval",
    "probe_spacing",
    "probe_timeout",
    "peer_timeout",
    "lease_timeout",
    "watchdog_timeout",
    "promote_delay",
    "takeover_delay",
    "safety_margin",
    "xapi_timeout",
    "task_timeout",
    "start_retry_delay",
    "fence_timeout",
    "fence_delay",
)
_REQUIRED = ("peer_addresses", "gateway_addresses")
# Host-local keys of the daemon process (where xapi is, which NICs to watch, ...): the same file,
# parsed and checked by halizard.runtime.settings; the decision core never sees them.
RUNTIME_KEYS = ("xapi_url", "xapi_peer_url", "xapi_user", "xapi_password_file", "xapi_ca_file",
                "interfaces", "state_file", "inventory_file", "pool_conf_file", "xl_command",
                "host_reset", "system_state_command", "alerts")
_KNOWN = tuple(f.name for f in fields(Config)) + ("fence_options",) + RUNTIME_KEYS


# Where each key lives. Pool-wide keys are the rules both hosts must agree on (the timings and
# the gateway policy): kept in the pool database as text, ``halizard.config.<key>``, written
# as in the TOML file ("7.5s", "majority", "5"), so that one `halizard config set` changes
# them for both hosts. Host-local keys differ per host (its peer's addresses, its gateway, its
# fence device and watchdog, the daemon process's RUNTIME_KEYS) or hold secrets
# (fence_options): they stay in the host's file and never go to the pool database, which every
# API client can read.
HOST_LOCAL_KEYS = ("peer_addresses", "gateway_addresses", "fence_agent", "fence_options",
                   "watchdog_device") + RUNTIME_KEYS
POOL_WIDE_KEYS = tuple(k for k in _KNOWN if k not in HOST_LOCAL_KEYS)

# The strictest host: two heartbeat paths and a fence agent, so that every timing rule applies.
# Pool-wide values are checked against it: they must be safe on whatever host reads them.
STRICTEST_HOST: Mapping[str, Any] = {
    "peer_addresses": ["192.0.2.2", "198.51.100.2"],
    "gateway_addresses": ["192.0.2.1"],
    "fence_agent": "fence_any",
}


def parse_pool_setting(key: str, text: Any) -> Any:
    """The TOML value of one pool-wide setting from its text in the pool database. Raises
    ValueError naming what is wrong; ranges and timing rules are load_config's."""
    if key not in POOL_WIDE_KEYS:
        raise ValueError("not a pool-wide key")
    if not isinstance(text, str):
        raise ValueError("expected text, got %r" % (text,))
    value = text.strip()
    if key in _DURATION_KEYS:
        parse_duration(value)  # UnitError is a ValueError, with the expected form
        return value
    if key == "gateway_policy":
        if value not in GATEWAY_POLICIES:
            raise ValueError("must be one of %s, got %r" % (", ".join(GATEWAY_POLICIES), value))
        return value
    if key == "probe_count":
        if not value.isdigit():
            raise ValueError("must be a whole number, got %r" % value)
        return int(value)
    # max_drift_ppm
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of ppm, got %r" % value) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be a number of ppm, got %r" % value)
    return int(number) if number.is_integer() else number


def where_key_lives(key: str) -> Optional[str]:
    """Why ``key`` cannot be set pool-wide (None: it can)."""
    if key in POOL_WIDE_KEYS:
        return None
    if key == "fence_options":
        return ("fence_options is host-local and holds secrets: set it in %s on each host "
                "(mode 0600); secrets never go to the pool database" % DEFAULT_CONFIG_PATH)
    if key in HOST_LOCAL_KEYS:
        return ("%s is host-local: set it in %s on each host (each host has its own)"
                % (key, DEFAULT_CONFIG_PATH))
    close = difflib.get_close_matches(key, POOL_WIDE_KEYS + HOST_LOCAL_KEYS, n=1)
    return "unknown key %r%s" % (key, " (did you mean %r?)" % close[0] if close else "")


def pool_settings(pool_other_config: Mapping[str, Any]) -> Dict[str, Any]:
    """key -> raw text of every ``halizard.config.*`` entry in the pool's other_config."""
    return {k[len(KEY_CONFIG_PREFIX):]: v for k, v in pool_other_config.items()
            if isinstance(k, str) and k.startswith(KEY_CONFIG_PREFIX)}


def merge_pool_settings(table: Mapping[str, Any], pool_other_config: Mapping[str, Any]
                        ) -> Tuple[Dict[str, Any], List[Problem]]:
    """The host's effective table: its file's ``table`` with the pool-wide values of
    ``pool_other_config`` laid over it (the pool wins: both hosts must agree). A pool entry that
    is unknown, host-local or malformed is not applied and comes back as a Problem, so a value
    garbled in the shared database makes both hosts fall back alike, and says so. Feed the
    result to load_config, which checks the timing rules on the whole."""
    merged = dict(table)
    problems: List[Problem] = []
    for key, raw in sorted(pool_settings(pool_other_config).items()):
        where = KEY_CONFIG_PREFIX + key
        if key not in POOL_WIDE_KEYS:
            problems.append(Problem(where, "not applied: %s" % where_key_lives(key)))
            continue
        try:
            merged[key] = parse_pool_setting(key, raw)
        except ValueError as exc:
            problems.append(Problem(where, "not applied: %s" % exc))
    return merged, problems


def _ip_literal(text: Any) -> Optional[str]:
    if not isinstance(text, str):
        return None
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def load_config(data: Mapping[str, Any], source: str = "<config>") -> Loaded:
    """Build and validate a Config from a parsed TOML table.

    Raises ConfigError listing every problem. Warnings (for example the N01 topology caveat)
    come back with the configuration: they are for the operator, not reasons to refuse.
    """
    problems: List[Problem] = []
    values: Dict[str, Any] = {}

    for key in sorted(data):
        if key not in _KNOWN:
            close = difflib.get_close_matches(key, _KNOWN, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            problems.append(Problem(key, "unknown key%s" % hint))

    for key in _REQUIRED:
        if key not in data:
            problems.append(
                Problem(key, "required: list the IP addresses explicitly (no default is assumed)")
            )

    for key in ("peer_addresses", "gateway_addresses"):
        if key not in data:
            continue
        raw = data[key]
        if not isinstance(raw, list) or not raw:
            problems.append(Problem(key, "must be a non-empty list of IP addresses"))
            continue
        addresses = []
        for item in raw:
            literal = _ip_literal(item)
            if literal is None:
                problems.append(
                    Problem(key, "%r is not an IP address (names are refused: DNS is the first "
                                 "thing to hang during a partition)" % (item,))
                )
            else:
                addresses.append(literal)
        if len(set(addresses)) != len(addresses):
            problems.append(Problem(key, "lists the same address twice"))
        values[key] = tuple(addresses)

    for key in _DURATION_KEYS:
        if key in data:
            try:
                values[key] = parse_duration(data[key])
            except UnitError as exc:
                problems.append(Problem(key, str(exc)))

    if "gateway_policy" in data:
        if data["gateway_policy"] not in GATEWAY_POLICIES:
            problems.append(
                Problem("gateway_policy", "must be one of %s, got %r"
                        % (", ".join(GATEWAY_POLICIES), data["gateway_policy"]))
            )
        else:
            values["gateway_policy"] = data["gateway_policy"]

    if "probe_count" in data:
        count = data["probe_count"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 20:
            problems.append(Problem("probe_count", "must be a whole number from 1 to 20"))
        else:
            values["probe_count"] = count

    if "max_drift_ppm" in data:
        drift = data["max_drift_ppm"]
        if isinstance(drift, bool) or not isinstance(drift, (int, float)) or not 0 <= drift <= 10000:
            problems.append(Problem("max_drift_ppm", "must be a number of ppm from 0 to 10000"))
        else:
            values["max_drift_ppm"] = float(drift)

    if "watchdog_device" in data:
        if not isinstance(data["watchdog_device"], str) or not data["watchdog_device"]:
            problems.append(Problem("watchdog_device", "must be a device path"))
        else:
            values["watchdog_device"] = data["watchdog_device"]

    if "fence_agent" in data:
        agent = data["fence_agent"]
        if not isinstance(agent, str) or not agent.strip():
            problems.append(Problem("fence_agent", "must be the agent command, e.g. \"fence_ipmilan\""))
        else:
            options = data.get("fence_options", {})
            if not isinstance(options, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
                for k, v in options.items()
            ):
                problems.append(Problem("fence_options", "must be a table of key = \"value\" strings"))
                options = {}
            values["fence_agent"] = FenceAgent(
                command=agent.strip(),
                options=tuple(sorted((k, str(v)) for k, v in options.items())),
            )
    elif "fence_options" in data:
        problems.append(Problem("fence_options", "set without fence_agent"))

    if problems:
        raise ConfigError(source, problems)

    config = Config(**values)

    # Local import: timing depends on Config, and these checks belong to loading.
    from halizard.core.timing import check_timing

    findings = check_timing(config)
    errors = [p for level, p in findings if level == "error"]
    if errors:
        raise ConfigError(source, errors)
    return Loaded(config, tuple(p for level, p in findings if level == "warning"))


def config_to_table(config: Config) -> Dict[str, Any]:
    """The TOML table that loads back into ``config`` (durations written with units)."""
    table: Dict[str, Any] = {}
    for f in fields(Config):
        value = getattr(config, f.name)
        if f.name in _DURATION_KEYS:
            table[f.name] = format_duration(value)
        elif f.name == "fence_agent":
            if value is not None:
                table["fence_agent"] = value.command
                table["fence_options"] = dict(value.options)
        elif isinstance(value, tuple):
            table[f.name] = list(value)
        else:
            table[f.name] = value
    return table
