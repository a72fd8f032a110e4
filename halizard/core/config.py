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

from halizard.core.units import UnitError, format_duration, parse_duration

GATEWAY_POLICIES = ("any", "all", "majority")


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
                "host_reset", "system_state_command")
_KNOWN = tuple(f.name for f in fields(Config)) + ("fence_options",) + RUNTIME_KEYS


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
