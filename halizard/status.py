"""The `halizard status` document: pure, from the pool view, what each host's xapi answered just
now, and what each daemon last published (halizard.core.pool.DaemonReport).

Its JSON keys are documented in the README and stable. Health, like `crm_mon -s`:
``healthy`` (exit 0), ``degraded`` (1: HA is on but something needs the operator),
``unprotected`` (2: halizard's switch is off, or XenServer's own HA is on). Warnings (the
topology caveats of this host's configuration) are shown without changing the health.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from halizard.core.pool import RESTART, PoolView, parse_report

HEALTHY, DEGRADED, UNPROTECTED = "healthy", "degraded", "unprotected"
HEALTH_EXIT = {HEALTHY: 0, DEGRADED: 1, UNPROTECTED: 2}

# Daemon states of a host that is doing its job (the daemon's modes, halizard.core.state; a
# daemon may also say which role it holds). Every other state while HA is on needs a look.
SETTLED_STATES = ("normal", "master", "slave")

CURRENT, STALE, ABSENT, UNREADABLE = "current", "stale", "absent", "unreadable"


def daemon_entry(raw: Any, now: float) -> Dict[str, Any]:
    """One host's ``daemon`` object in the document, from its raw published value (None when
    there is none). A malformed value is reported as unreadable, never raised."""
    entry: Dict[str, Any] = {"report": ABSENT, "state": None, "reason": None, "age": None,
                             "peer_seen_ago": None, "gateway_seen_ago": None, "version": None}
    if raw is None:
        return entry
    report = parse_report(raw)
    if report is None:
        entry["report"] = UNREADABLE
        return entry
    entry.update(report=STALE if report.stale(now) else CURRENT, state=report.state,
                 reason=report.reason, age=round(report.age(now), 1),
                 peer_seen_ago=report.peer_seen_ago, gateway_seen_ago=report.gateway_seen_ago,
                 version=report.version)
    return entry


def daemon_problem(name: str, daemon: Mapping[str, Any]) -> Optional[str]:
    """Why this host's daemon needs a look while HA is on, or None."""
    if daemon["report"] == ABSENT:
        return "host %s: no report from its daemon (daemon not running?)" % name
    if daemon["report"] == UNREADABLE:
        return "host %s: its daemon's report is unreadable" % name
    if daemon["report"] == STALE:
        return "host %s: its daemon's last report is stale (%s old): daemon stopped or hung?" % (
            name, _ago(daemon["age"]))
    if daemon["state"] not in SETTLED_STATES:
        return "host %s: daemon %s: %s" % (name, daemon["state"], daemon["reason"])
    return None


def status_report(view: PoolView, answers: Optional[Mapping[str, str]] = None,
                  reports: Optional[Mapping[str, Any]] = None, now: float = 0.0,
                  config: Tuple[Sequence[str], Sequence[str]] = ((), ())) -> Dict[str, Any]:
    """The `status --json` document. ``answers``: host uuid -> what its xapi said when asked
    just now (admin.roles); ``reports``: host uuid -> its daemon's raw published report
    (halizard.core.pool.daemon_reports); ``now``: this host's wall clock; ``config``: the
    configuration's (problems, warnings) (cli_config.findings)."""
    names = {h.uuid: h.name for h in view.hosts}
    answers = answers or {}
    reports = reports or {}
    protecting = view.ha_enabled and not view.native_ha
    problems: List[str] = list(config[0])
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
        daemon = daemon_entry(reports.get(h.uuid), now)
        hosts.append({"name": h.name, "uuid": h.uuid, "address": h.address,
                      "role": "master" if h.uuid == view.master_uuid else "slave",
                      "xapi": answer, "live": h.live, "enabled": h.enabled,
                      "maintenance": maintenance, "daemon": daemon})
        if answer is not None and answer not in ("master", "slave"):
            problems.append("host %s: its xapi does not answer (%s)" % (h.name, answer))
        elif not h.live:
            problems.append("host %s is not live" % h.name)
        elif maintenance:
            problems.append("host %s is in maintenance" % h.name)
        elif not h.enabled:
            problems.append("host %s is disabled" % h.name)
        trouble = daemon_problem(h.name, daemon)
        if protecting and trouble and not (maintenance and daemon["state"] == "maintenance"):
            problems.append(trouble)
    vms = []
    for v in view.vms:
        host = names.get(v.resident_on) if v.running and v.resident_on else None
        vms.append({"name": v.name, "uuid": v.uuid, "restart": v.policy,
                    "power_state": v.power_state, "host": host, "order": v.order,
                    "start_delay": v.start_delay})
        if v.policy == RESTART and not v.running:
            problems.append("protected VM %s is %s" % (v.name, v.power_state.lower()))
    if not protecting:
        health = UNPROTECTED
    elif problems:
        health = DEGRADED
    else:
        health = HEALTHY
    return {"health": health, "ha_enabled": view.ha_enabled, "native_ha": view.native_ha,
            "master": names.get(view.master_uuid or ""), "hosts": hosts, "vms": vms,
            "problems": problems, "warnings": list(config[1])}


def _ago(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return "%.1fs" % seconds
    if seconds < 7200:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)


def render_daemon(daemon: Mapping[str, Any]) -> str:
    if daemon["report"] == ABSENT:
        return "no report (daemon not running?)"
    if daemon["report"] == UNREADABLE:
        return "unreadable report"
    seen = "peer seen %s before, gateway %s before" % (
        _ago(daemon["peer_seen_ago"]), _ago(daemon["gateway_seen_ago"]))
    return "%s%s (report %s old; %s): %s" % (
        "STALE " if daemon["report"] == STALE else "", daemon["state"], _ago(daemon["age"]),
        seen, daemon["reason"])


def render_status(report: Mapping[str, Any]) -> str:
    lines = ["pool: %s; halizard %s; XenServer HA %s" % (
        report["health"], "enabled" if report["ha_enabled"] else "disabled",
        "on" if report["native_ha"] else "off"), "hosts:"]
    for h in report["hosts"]:
        lines.append("  %-12s %-6s %s%s%s%s  %s" % (
            h["name"], h["role"], "live" if h["live"] else "NOT LIVE",
            "" if h["xapi"] in (None, "master", "slave") else ", xapi: %s" % h["xapi"],
            "" if h["enabled"] else ", disabled", ", maintenance" if h["maintenance"] else "",
            h["address"]))
        lines.append("  %-12s daemon: %s" % ("", render_daemon(h["daemon"])))
    protected = [v for v in report["vms"] if v["restart"] != "never"]
    lines.append("protected VMs: %s" % ("none" if not protected else ""))
    for v in protected:
        where = "running on %s" % v["host"] if v["host"] else v["power_state"].lower()
        lines.append("  %-24s %-11s %s" % (v["name"], v["restart"], where))
    lines.append("problems: %s" % ("none" if not report["problems"] else ""))
    lines.extend("  " + p for p in report["problems"])
    if report.get("warnings"):
        lines.append("warnings:")
        lines.extend("  " + w for w in report["warnings"])
    return "\n".join(lines)
