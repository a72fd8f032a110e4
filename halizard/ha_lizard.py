"""What an HA-Lizard installation's settings mean for halizard: a pure mapping into a plan of
pool-database writes, with every setting accounted for (mapped, not needed, or not mapped and
why). `halizard import-ha-lizard` prints the plan and, unless --dry-run, applies it.

HA-Lizard keeps its settings in the pool's other_config as ``HA_<NAME>`` and uses one XenCenter
custom field (``HA_XC_FIELD_NAME``, by default ``ha-lizard-enabled``) for its pool-wide switch
and each VM's flag ("true"/"false"); with ``HA_GLOBAL_VM_HA=1`` every VM is protected whatever
its flag (research: halizard.md sections 2.2 and 2.4, read for meaning only; HA-Lizard is GPL).

Decisions: settings that would make halizard unsafe are refused (FENCE_HA_ONFAIL=1 starts VMs
when fencing failed); timings are not mapped (HA-Lizard's pace a 15-second polling loop and no
mapping keeps halizard's timing rules; its checked defaults apply); host-local matters (the
heuristic address, fence devices) are left to each host's file, with what to write there;
secrets are never copied. HA-Lizard's switch is turned off before halizard's is turned on, so
that its daemons stand down (at their next iteration) rather than both managing the pool.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from halizard.core.pool import (
    BEST_EFFORT,
    CUSTOM_FIELD,
    KEY_DEFAULT_RESTART,
    KEY_ENABLED,
    KEY_VM_RESTART,
    NEVER,
    RESTART,
)

PREFIX = "HA_"
DEFAULT_FIELD = "ha-lizard-enabled"

TIMINGS = ("MONITOR_DELAY", "MONITOR_SCANRATE", "MONITOR_MAX_STARTS", "MONITOR_KILLALL",
           "XE_TIMEOUT", "XAPI_COUNT", "XAPI_DELAY", "MGT_LINK_LOSS_TOLERANCE")
REPLACED_BY_RULES = ("FENCE_ENABLED", "FENCE_ACTION", "FENCE_FILE_LOC", "FENCE_MIN_HOSTS",
                     "FENCE_QUORUM_REQUIRED", "FENCE_REBOOT_LONE_HOST", "FENCE_USE_IP_HEURISTICS")
NOT_NEEDED = ("SLAVE_VM_STAT", "HOST_SELECT_METHOD")
ALERTS = ("ENABLE_ALERTS", "ENABLE_LOGGING", "MAIL_ON", "MAIL_SUBJECT", "MAIL_FROM", "MAIL_TO",
          "SMTP_SERVER", "SMTP_PORT", "SMTP_USER", "SMTP_PASS", "DISK_MONITOR")
SECRETS = ("FENCE_PASSWD", "SMTP_PASS")
HANDLED = TIMINGS + REPLACED_BY_RULES + NOT_NEEDED + ALERTS + (
    "XC_FIELD_NAME", "OP_MODE", "GLOBAL_VM_HA", "DISABLED_VAPPS", "FENCE_HA_ONFAIL",
    "FENCE_HOST_FORGET", "FENCE_METHOD", "FENCE_IPADDRESS", "FENCE_PASSWD",
    "FENCE_HEURISTICS_IPS", "PROMOTE_SLAVE", "SLAVE_HA")


class NotInstalled(ValueError):
    """The pool holds no HA-Lizard settings."""


@dataclass(frozen=True)
class Guest:
    """A VM as the import needs it (no templates, snapshots or control domains)."""

    ref: str
    uuid: str
    name: str
    other_config: Mapping[str, Any]


@dataclass(frozen=True)
class Write:
    """One other_config change: on the pool (``vm`` None) or on one VM."""

    key: str
    value: Optional[str]  # None: remove
    was: Optional[str]
    vm: Optional[Guest] = None

    def describe(self) -> str:
        where = "pool" if self.vm is None else "VM %r" % self.vm.name
        return "%s %s = %s (was %s)" % (where, self.key, self.value,
                                        "unset" if self.was is None else self.was)


@dataclass(frozen=True)
class Plan:
    switch_field: str
    writes: Tuple[Write, ...]
    mapped: Tuple[str, ...]  # what maps, and to what
    unmapped: Tuple[str, ...]  # what does not, and why (refusals included)
    next_steps: Tuple[str, ...]


def guests(vm_records: Mapping[str, Any]) -> Tuple[Guest, ...]:
    """The VMs of ``VM.get_all_records`` that HA-Lizard could protect, by name."""
    out = []
    for ref, record in vm_records.items():
        if not isinstance(record, Mapping) or any(
                _true(record.get(k)) for k in ("is_control_domain", "is_a_template",
                                               "is_a_snapshot")):
            continue
        out.append(Guest(str(ref), str(record.get("uuid", "")), str(record.get("name_label", "")),
                         dict(record.get("other_config") or {})))
    return tuple(sorted(out, key=lambda g: (g.name, g.uuid)))


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def plan_import(pool_other: Mapping[str, Any], vms: Sequence[Guest], native_ha: bool) -> Plan:
    """The halizard equivalent of the HA-Lizard settings in ``pool_other`` (the pool's
    other_config) and on ``vms``. Raises NotInstalled when there are none."""
    settings = {k[len(PREFIX):]: str(v) for k, v in pool_other.items()
                if isinstance(k, str) and k.startswith(PREFIX)}
    field_name = settings.get("XC_FIELD_NAME") or DEFAULT_FIELD
    flag_key = CUSTOM_FIELD + field_name
    flag = pool_other.get(flag_key)
    if not settings and flag is None:
        raise NotInstalled("no HA-Lizard settings in this pool (no HA_* keys and no %s in the "
                           "pool's other-config)" % flag_key)
    writes: List[Write] = []
    mapped: List[str] = []
    unmapped: List[str] = []
    steps: List[str] = []

    def write(key: str, value: Optional[str], source: Mapping[str, Any],
              vm: Optional[Guest] = None) -> None:
        was = source.get(key)
        if was != value:
            writes.append(Write(key, value, None if was is None else str(was), vm))

    # The switch. HA-Lizard's goes off first (apply() keeps this order), then halizard's on.
    switch_on = False
    if flag == "true":
        write(flag_key, "false", pool_other)
        if native_ha:
            unmapped.append("switch: HA-Lizard was on, but XenServer's own HA is on too: "
                            "halizard's switch is left as it is (it stands down beside "
                            "XenServer's HA); disable that first, then `halizard enable`")
        else:
            switch_on = True
            mapped.append("switch: HA-Lizard on -> halizard on; HA-Lizard's switch %s goes off "
                          "first, so its daemons stand down at their next iteration" % flag_key)
    elif flag == "false":
        # Off by default too; and after an import HA-Lizard's switch is off because of it, so
        # running the import again must not switch halizard off.
        mapped.append("switch: HA-Lizard off -> halizard's switch left as it is (%s)"
                      % ("on" if pool_other.get(KEY_ENABLED) == "true" else "off"))
    else:
        unmapped.append("switch: %s is %r, which HA-Lizard treats as off: halizard's switch is "
                        "left as it is" % (flag_key, flag))

    _map_vms(settings, field_name, vms, pool_other, write, mapped, unmapped)
    _account(settings, mapped, unmapped)

    if switch_on:
        write(KEY_ENABLED, "true", pool_other)
    # Its watchdog first (it starts ha-lizard again); no --now, which upstream systemd 219 lacks.
    steps.append("stop and disable HA-Lizard on both hosts, its watchdog first: systemctl stop "
                 "ha-lizard-watchdog; systemctl stop ha-lizard; systemctl disable "
                 "ha-lizard-watchdog ha-lizard")
    steps.append("on each host, set peer_addresses and gateway_addresses in "
                 "/etc/halizard/halizard.toml, then `halizard config validate` and "
                 "`halizard simulate --config /etc/halizard/halizard.toml`")
    for secret in SECRETS:
        if settings.get(secret):
            steps.append("remove HA_%s, a password readable by every API client: xe "
                         "pool-param-remove uuid=<pool uuid> param-name=other-config "
                         "param-key=HA_%s" % (secret, secret))
    steps.append("check with `halizard status`%s" % (
        "" if switch_on or pool_other.get(KEY_ENABLED) == "true"
        else ", and `halizard enable` when ready"))
    return Plan(field_name, tuple(writes), tuple(mapped), tuple(unmapped), tuple(steps))


Writer = Callable[[str, Optional[str], Mapping[str, Any], Optional[Guest]], None]


def _map_vms(settings: Mapping[str, str], field_name: str, vms: Sequence[Guest],
             pool_other: Mapping[str, Any], write: Writer, mapped: List[str],
             unmapped: List[str]) -> None:
    """Per-VM protection: HA-Lizard's global setting to the default policy, its per-VM flags
    (which count only when it is off) to each VM's policy."""
    flag_key = CUSTOM_FIELD + field_name
    if settings.get("OP_MODE", "2") == "1":
        unmapped.append("HA_OP_MODE=1 (vApps%s): halizard protects VMs one by one; give each "
                        "VM a policy with `halizard vm set NAME --restart restart [--order N]`"
                        % (", HA_DISABLED_VAPPS=%s" % settings["DISABLED_VAPPS"]
                           if settings.get("DISABLED_VAPPS", "()") not in ("", "()") else ""))
        return
    if "OP_MODE" in settings:
        mapped.append("HA_OP_MODE=%s: VMs protected one by one, as in halizard"
                      % settings["OP_MODE"])
    if settings.get("GLOBAL_VM_HA", "1") == "1":
        write(KEY_DEFAULT_RESTART, RESTART, pool_other, None)
        mapped.append("HA_GLOBAL_VM_HA=%s -> every VM protected: the pool's default policy "
                      "is restart" % settings.get("GLOBAL_VM_HA", "1 (absent: HA-Lizard's "
                                                                  "default)"))
        for vm in vms:
            own = vm.other_config.get(KEY_VM_RESTART)
            if own not in (None, RESTART, BEST_EFFORT):
                unmapped.append("VM %r: HA-Lizard protected it (global), but it has halizard's "
                                "own policy %s, which is kept" % (vm.name, own))
        return
    write(KEY_DEFAULT_RESTART, NEVER, pool_other, None)
    mapped.append("HA_GLOBAL_VM_HA=0 -> only flagged VMs protected: the pool's default policy "
                  "is never")
    for vm in vms:
        flag = vm.other_config.get(flag_key)
        if flag == "true":
            write(KEY_VM_RESTART, RESTART, vm.other_config, vm)
            mapped.append("VM %r: %s=true -> restart" % (vm.name, field_name))
        elif flag == "false":
            write(KEY_VM_RESTART, NEVER, vm.other_config, vm)
            mapped.append("VM %r: %s=false -> never" % (vm.name, field_name))
        elif flag is not None:
            unmapped.append("VM %r: %s=%r, which HA-Lizard does not start: left at the "
                            "default (never)" % (vm.name, field_name, flag))


def _account(settings: Mapping[str, str], mapped: List[str], unmapped: List[str]) -> None:
    """Every other HA_* setting: matched by halizard's own rules, refused, or not mapped."""
    s = settings
    if "XC_FIELD_NAME" in s:
        mapped.append("HA_XC_FIELD_NAME=%s: HA-Lizard's flags read from %s%s"
                      % (s["XC_FIELD_NAME"], CUSTOM_FIELD, s["XC_FIELD_NAME"]))
    if s.get("FENCE_HA_ONFAIL") == "1":
        unmapped.append("HA_FENCE_HA_ONFAIL=1: refused as unsafe: it starts a failed host's VMs "
                        "when fencing that host failed, so they may run twice; halizard starts "
                        "them only once a fence agent confirmed the peer off or the peer's "
                        "self-fence deadline has passed")
    elif "FENCE_HA_ONFAIL" in s:
        mapped.append("HA_FENCE_HA_ONFAIL=%s: halizard never starts VMs after a failed fence"
                      % s["FENCE_HA_ONFAIL"])
    if s.get("FENCE_HOST_FORGET") == "1":
        unmapped.append("HA_FENCE_HOST_FORGET=1: refused: halizard never forgets a host or its "
                        "storage; a dead host's VMs are cleared with host.declare_dead")
    elif "FENCE_HOST_FORGET" in s:
        mapped.append("HA_FENCE_HOST_FORGET=%s: halizard never forgets a host either"
                      % s["FENCE_HOST_FORGET"])
    method = s.get("FENCE_METHOD")
    if method == "POOL":
        unmapped.append("HA_FENCE_METHOD=POOL: not mapped: POOL fencing does nothing; halizard "
                        "relies on each host's self-fence (lease and watchdog) and, if you "
                        "configure one, a fence agent")
    elif method:
        unmapped.append("HA_FENCE_METHOD=%s%s: not imported: fence devices are host-local; "
                        "configure a ClusterLabs agent (fence_ipmilan, fence_ilo, fence_idrac) "
                        "as fence_agent and fence_options in /etc/halizard/halizard.toml on "
                        "each host (mode 0600: it holds the password)" % (
                            method, ", HA_FENCE_IPADDRESS=%s" % s["FENCE_IPADDRESS"]
                            if s.get("FENCE_IPADDRESS") else ""))
    if s.get("FENCE_HEURISTICS_IPS"):
        ips = s["FENCE_HEURISTICS_IPS"]
        unmapped.append("HA_FENCE_HEURISTICS_IPS=%s: not imported as halizard's gateway: set "
                        "gateway_addresses in /etc/halizard/halizard.toml on each host to an "
                        "address both hosts reach on the management network, such as its "
                        "router%s" % (ips, "; 8.8.8.8 is HA-Lizard's default, an Internet "
                                      "address: a lost uplink would look like a lost network"
                                      if "8.8.8.8" in ips.split(":") else ""))
    present = [k for k in REPLACED_BY_RULES if k in s]
    if present:
        mapped.append("%s: replaced by halizard's rules (an isolated host always self-fences; a "
                      "survivor takes over only once the peer is certainly dead)"
                      % ", ".join("HA_%s=%s" % (k, s[k]) for k in present))
    timings = [k for k in TIMINGS if k in s]
    if timings:
        waited = ""
        try:
            waited = " (HA-Lizard declared a peer failed after XAPI_COUNT x XAPI_DELAY = %ds " \
                     "of retries)" % (int(s["XAPI_COUNT"]) * int(s["XAPI_DELAY"]))
        except (KeyError, ValueError):
            pass
        unmapped.append("%s: not mapped: they pace HA-Lizard's polling loop%s; halizard's "
                        "timings follow from its one-second probe cycle and must pass its "
                        "timing rules, so its checked defaults apply (takeover after 12s; "
                        "`halizard config show`, `halizard config set`)"
                        % (", ".join("HA_%s=%s" % (k, s[k]) for k in timings), waited))
    for key in ("PROMOTE_SLAVE", "SLAVE_HA"):
        if s.get(key) == "0":
            unmapped.append("HA_%s=0: not mapped: a halizard survivor always %s once the peer "
                            "is certainly dead; to keep a host from taking over, put the other "
                            "in maintenance or switch halizard off" % (
                                key, "promotes itself" if key == "PROMOTE_SLAVE"
                                else "restarts the protected VMs"))
        elif key in s:
            mapped.append("HA_%s=%s: halizard does the same" % (key, s[key]))
    present = [k for k in NOT_NEEDED if k in s]
    if present:
        mapped.append("%s: not needed: halizard's master places VMs by memory and start order"
                      % ", ".join("HA_%s" % k for k in present))
    present = [k for k in ALERTS if k in s]
    if present:
        unmapped.append(_alerts_note(s, present))
    unknown = sorted(k for k in s if k not in HANDLED)
    if unknown:
        unmapped.append("%s: unknown HA-Lizard settings: not imported"
                        % ", ".join("HA_%s" % k for k in unknown))


def _alerts_note(s: Mapping[str, str], present: Sequence[str]) -> str:
    """HA-Lizard's mail settings as halizard's [alerts.email], which is host-local (each host's
    file; the SMTP password in a 0600 file, never in the pool database)."""
    note = ("%s: alerts are host-local in halizard (they go to the journal and, as XenAPI "
            "messages, to the pool, always)" % ", ".join("HA_%s" % k for k in present))
    server = s.get("SMTP_SERVER", "").strip()
    if s.get("MAIL_ON") != "1" or not server:
        return note + "; for e-mail add [alerts.email] to each host's file"
    if server in ("127.0.0.1", "localhost"):
        return note + ("; HA-Lizard mailed through %s, where dom0 runs no mail server: its mail "
                       "never left; for e-mail add [alerts.email] with your mail server to each "
                       "host's file" % server)
    port = s.get("SMTP_PORT", "").strip() or "25"
    user = s.get("SMTP_USER", "").strip()
    security = "tls" if port == "465" else ("starttls" if user or port == "587" else "none")
    recipients = [r for r in s.get("MAIL_TO", "").replace(",", " ").split() if "@" in r]
    lines = ["[alerts.email]", "server = \"%s\"" % server, "port = %s" % port,
             "security = \"%s\"" % security,
             "from = \"%s\"" % s.get("MAIL_FROM", "").strip(),
             "to = [%s]" % ", ".join("\"%s\"" % r for r in recipients)]
    if user:
        lines += ["username = \"%s\"" % user,
                  "password_file = \"/etc/halizard/smtp-password\"  # mode 0600"]
    return note + "; to keep HA-Lizard's e-mail, add to each host's file: " + "; ".join(lines)


def render(plan: Plan) -> str:
    lines = ["HA-Lizard settings found (its switch and flags: %s%s)"
             % (CUSTOM_FIELD, plan.switch_field), "maps:"]
    lines.extend("  " + m for m in plan.mapped or ("nothing",))
    lines.append("cannot map:")
    lines.extend("  " + u for u in plan.unmapped or ("nothing",))
    lines.append("writes:")
    lines.extend("  " + w.describe() for w in plan.writes or ())
    if not plan.writes:
        lines.append("  nothing: the pool already says this")
    return "\n".join(lines)


def summary(writes: Sequence[Write]) -> Dict[str, int]:
    return {"pool": sum(1 for w in writes if w.vm is None),
            "vms": len({w.vm.uuid for w in writes if w.vm is not None})}
