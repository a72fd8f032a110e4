"""What the pool database says, reduced to what HA decisions need.

The parsing here is pure: it turns the records returned by xapi's ``get_all_records`` calls
(as the XenAPI binding returns them: ints as strings, refs as "OpaqueRef:...") into frozen views.
Refs are only meaningful on the master that issued them; UUIDs are the stable identities.

Pool-wide halizard settings live in the pool's ``other_config`` so both hosts, XenCenter and
Xen Orchestra see the same values; each VM's restart policy lives in the VM's ``other_config``.
"""
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

NULL_REF = "OpaqueRef:NULL"

# Keys an administrator sets are XenCenter custom fields (``XenCenter.CustomFields.<name>``), so
# XenCenter and Xen Orchestra show and edit them beside the pool and each VM. Maintenance flags
# are the daemon's own bookkeeping, set through `halizard maintenance`.
CUSTOM_FIELD = "XenCenter.CustomFields."
KEY_ENABLED = CUSTOM_FIELD + "halizard-enabled"
KEY_DEFAULT_RESTART = CUSTOM_FIELD + "halizard-default-restart"
KEY_VM_RESTART = CUSTOM_FIELD + "halizard-restart"
KEY_MAINTENANCE_PREFIX = "halizard.maintenance."
# Each daemon publishes what it is doing (a DaemonReport as JSON) under its host's UUID, so the
# operator's `halizard status` on either host sees both daemons; pool-wide settings both hosts
# must agree on (halizard.core.config.POOL_WIDE_KEYS) are stored as text under their names.
KEY_STATUS_PREFIX = "halizard.status."
KEY_CONFIG_PREFIX = "halizard.config."

RESTART = "restart"
BEST_EFFORT = "best-effort"
NEVER = "never"
POLICIES = (RESTART, BEST_EFFORT, NEVER)

RUNNING_STATES = ("Running", "Paused")

# A daemon publishes on every change of mode and at least every REPORT_INTERVAL seconds; a
# report older than REPORT_STALE_AFTER (three intervals: room for a failed write and its retry)
# says its daemon stopped publishing (dead, hung, or cut off from the master), and `halizard
# status` calls it stale.
REPORT_INTERVAL = 120.0  # seconds: each write costs the pool about two XenAPI calls a minute
REPORT_STALE_AFTER = 3 * REPORT_INTERVAL


def maintenance_key(host_uuid: str) -> str:
    return KEY_MAINTENANCE_PREFIX + host_uuid


def status_key(host_uuid: str) -> str:
    return KEY_STATUS_PREFIX + host_uuid


@dataclass(frozen=True)
class DaemonReport:
    """What one host's daemon last said about itself, as published in the pool's other_config.

    ``at`` is the wall clock (epoch seconds) of the report: readers on another host compare it
    with their own wall clock, which in a pool is kept in step by NTP. The ``*_seen_ago`` are
    seconds from the daemon's last evidence of its peer and of the gateway to ``at``; None when
    it has had none since it started."""

    state: str  # a mode of halizard.core.state, e.g. "normal", "survivor", "disabled"
    reason: str
    at: float
    peer_seen_ago: Optional[float] = None
    gateway_seen_ago: Optional[float] = None
    version: str = ""

    def encode(self) -> str:
        """The text a daemon stores under ``status_key(its host uuid)``."""
        return json.dumps({"state": self.state, "reason": self.reason, "at": self.at,
                           "peer_seen_ago": self.peer_seen_ago,
                           "gateway_seen_ago": self.gateway_seen_ago, "version": self.version},
                          sort_keys=True, separators=(",", ":"))

    def age(self, now: float) -> float:
        """Seconds since the report, never negative (a peer's clock may run slightly ahead)."""
        return max(0.0, now - self.at)

    def stale(self, now: float) -> bool:
        return self.age(now) > REPORT_STALE_AFTER


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_report(value: Any) -> Optional[DaemonReport]:
    """A published report, or None when it is unreadable (not JSON, not an object, no state or
    time, a field of the wrong type). Never raises: the pool database is shared with every API
    client, and a garbled value must show as garbled, not stop the reader. Unknown fields (a
    newer daemon's) are ignored."""
    if not isinstance(value, str):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    state, reason, version = data.get("state"), data.get("reason", ""), data.get("version", "")
    at = _finite(data.get("at"))
    if not isinstance(state, str) or not state or at is None:
        return None
    if not isinstance(reason, str) or not isinstance(version, str):
        return None
    seen = []
    for key in ("peer_seen_ago", "gateway_seen_ago"):
        raw = data.get(key)
        number = None if raw is None else _finite(raw)
        if raw is not None and (number is None or number < 0):
            return None
        seen.append(number)
    return DaemonReport(state, reason, at, seen[0], seen[1], version)


def daemon_reports(pool_other_config: Mapping[str, Any]) -> Dict[str, Any]:
    """host uuid -> the raw published value (parse it with ``parse_report``)."""
    return {key[len(KEY_STATUS_PREFIX):]: value for key, value in pool_other_config.items()
            if isinstance(key, str) and key.startswith(KEY_STATUS_PREFIX)}


@dataclass(frozen=True)
class HostView:
    ref: str
    uuid: str
    name: str
    address: str
    enabled: bool
    live: bool
    memory_total: int
    memory_overhead: int


@dataclass(frozen=True)
class VmView:
    ref: str
    uuid: str
    name: str
    power_state: str
    resident_on: Optional[str]  # host uuid, or None
    policy: str
    order: int
    start_delay: float
    memory: int
    busy: bool  # an operation is in progress on it

    @property
    def running(self) -> bool:
        return self.power_state in RUNNING_STATES

    @property
    def protected(self) -> bool:
        return self.policy != NEVER


@dataclass(frozen=True)
class PoolView:
    master_uuid: Optional[str]
    ha_enabled: bool  # halizard's switch
    native_ha: bool  # XenServer's own HA: halizard stands down while it is on
    maintenance: FrozenSet[str]  # host uuids
    hosts: Tuple[HostView, ...]
    vms: Tuple[VmView, ...]

    def host(self, uuid: Optional[str]) -> Optional[HostView]:
        for h in self.hosts:
            if h.uuid == uuid:
                return h
        return None

    def host_by_address(self, address: str) -> Optional[HostView]:
        for h in self.hosts:
            if h.address == address:
                return h
        return None

    def vm(self, uuid: str) -> Optional[VmView]:
        for v in self.vms:
            if v.uuid == uuid:
                return v
        return None


@dataclass(frozen=True)
class Settings:
    """The pool-wide settings a host keeps in its local cache, for when it cannot reach the
    master."""

    ha_enabled: bool = False
    native_ha: bool = False
    maintenance: FrozenSet[str] = frozenset()

    @property
    def ha_active(self) -> bool:
        """halizard protects the pool: its switch is on and XenServer's own HA is off."""
        return self.ha_enabled and not self.native_ha

    def to_dict(self) -> Dict[str, Any]:
        return {
            "ha_enabled": self.ha_enabled,
            "native_ha": self.native_ha,
            "maintenance": sorted(self.maintenance),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "Settings":
        try:
            return Settings(
                ha_enabled=bool(data.get("ha_enabled", False)),
                native_ha=bool(data.get("native_ha", False)),
                maintenance=frozenset(str(u) for u in data.get("maintenance", ())),
            )
        except (TypeError, AttributeError):
            return Settings()


@dataclass(frozen=True)
class KnownVm:
    """A protected VM as this host last saw it. Kept on disk with the settings, so that a host
    that has lost its master (whose own xapi then hangs on database calls) and a daemon that
    restarts meanwhile still know which protected VMs ran where."""

    uuid: str
    name: str
    host: Optional[str]  # host uuid it was running on, None when halted
    policy: str

    def to_dict(self) -> Dict[str, Any]:
        return {"uuid": self.uuid, "name": self.name, "host": self.host, "policy": self.policy}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "KnownVm":
        host = data.get("host")
        return KnownVm(str(data["uuid"]), str(data.get("name", "")),
                       None if host is None else str(host), str(data.get("policy", NEVER)))


def known_vms(view: PoolView) -> Tuple[KnownVm, ...]:
    return tuple(KnownVm(v.uuid, v.name, v.resident_on if v.running else None, v.policy)
                 for v in view.vms if v.protected)


def load_known_vms(data: Any) -> Tuple[KnownVm, ...]:
    """The cache as saved (an empty one when it does not parse: it is only a cache)."""
    try:
        return tuple(KnownVm.from_dict(item) for item in data)
    except (TypeError, KeyError, AttributeError):
        return ()


def settings_of(view: PoolView) -> Settings:
    return Settings(view.ha_enabled, view.native_ha, view.maintenance)


def parse_settings(pools: Mapping[str, Any]) -> Settings:
    """The pool-wide settings from ``pool.get_all_records`` alone (what a slave reads)."""
    try:
        pool = _the_pool(pools)
        other = pool.get("other_config") or {}
        return Settings(
            ha_enabled=_bool(other.get(KEY_ENABLED, "false")),
            native_ha=_bool(pool.get("ha_enabled", False)),
            maintenance=_maintenance(other),
        )
    except (AttributeError, TypeError) as exc:
        raise PoolParseError("malformed pool record: %r" % (exc,)) from None


def _maintenance(other: Mapping[str, Any]) -> FrozenSet[str]:
    return frozenset(
        key[len(KEY_MAINTENANCE_PREFIX):]
        for key, value in other.items()
        if key.startswith(KEY_MAINTENANCE_PREFIX) and _bool(value)
    )


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


class PoolParseError(ValueError):
    """Records that do not have the shape xapi gives them (a garbage reply)."""


def _the_pool(pools: Mapping[str, Any]) -> Mapping[str, Any]:
    """The one pool record of ``pool.get_all_records``."""
    if len(pools) != 1:
        raise PoolParseError("expected exactly one pool object, got %d" % len(pools))
    record = next(iter(pools.values()))
    if not isinstance(record, Mapping):
        raise PoolParseError("the pool record is not a struct")
    return record


def parse_pool(
    pools: Mapping[str, Any],
    hosts: Mapping[str, Any],
    metrics: Mapping[str, Any],
    vms: Mapping[str, Any],
) -> PoolView:
    """Build a PoolView from ``pool``, ``host``, ``host_metrics`` and ``VM`` get_all_records."""
    try:
        pool = _the_pool(pools)
        other = pool.get("other_config") or {}
        host_uuid_by_ref: Dict[str, str] = {}
        host_views = []
        for ref in sorted(hosts):
            rec = hosts[ref]
            m = metrics.get(rec.get("metrics", NULL_REF), {})
            host_uuid_by_ref[ref] = rec["uuid"]
            host_views.append(
                HostView(
                    ref=ref,
                    uuid=rec["uuid"],
                    name=rec.get("name_label", ""),
                    address=rec.get("address", ""),
                    enabled=_bool(rec.get("enabled", False)),
                    live=_bool(m.get("live", False)),
                    memory_total=_int(m.get("memory_total")),
                    memory_overhead=_int(rec.get("memory_overhead")),
                )
            )
        default_policy = other.get(KEY_DEFAULT_RESTART, NEVER)
        if default_policy not in POLICIES:
            default_policy = NEVER
        vm_views = []
        for ref in sorted(vms):
            rec = vms[ref]
            if _bool(rec.get("is_control_domain")) or _bool(rec.get("is_a_template")) or _bool(
                rec.get("is_a_snapshot")
            ):
                continue
            vm_other = rec.get("other_config") or {}
            policy = vm_other.get(KEY_VM_RESTART, default_policy)
            if policy not in POLICIES:
                policy = NEVER
            resident = rec.get("resident_on", NULL_REF)
            vm_views.append(
                VmView(
                    ref=ref,
                    uuid=rec["uuid"],
                    name=rec.get("name_label", ""),
                    power_state=rec.get("power_state", "Halted"),
                    resident_on=host_uuid_by_ref.get(resident),
                    policy=policy,
                    order=_int(rec.get("order")),
                    start_delay=_float(rec.get("start_delay")),
                    memory=_int(rec.get("memory_static_max")),
                    busy=bool(rec.get("current_operations")),
                )
            )
        settings = parse_settings(pools)
        return PoolView(
            master_uuid=host_uuid_by_ref.get(pool.get("master", NULL_REF)),
            ha_enabled=settings.ha_enabled,
            native_ha=settings.native_ha,
            maintenance=settings.maintenance,
            hosts=tuple(host_views),
            vms=tuple(sorted(vm_views, key=lambda v: (v.name, v.uuid))),
        )
    except (KeyError, AttributeError, TypeError) as exc:
        raise PoolParseError("malformed pool records: %r" % (exc,)) from None
