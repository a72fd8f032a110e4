"""The HTML report of a simulation matrix: one self-contained index.html.

A summary table (one row per scenario), then one section per scenario with a representative run
(its first failing seed, else its first seed) re-run with a timeline and drawn as an inline SVG:
per host its xapi role and daemon mode, per VM the host running it, faults as shaded bands,
fences and notable decisions as markers. No JavaScript, no external assets, and nothing that
depends on when or where the report was written: the same runs give the same bytes. The page is
also well-formed XML (void elements closed, no named entities), so tests can parse it whole.
"""
import bisect
import html
import os
import re
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar

from simulations.invariants import Violation
from simulations.matrix import ScenarioSummary, expectation_text, percentile, replay_command
from simulations.runner import RunResult, run_scenario
from simulations.scenario import INSTANT, Scenario

# rerun(scenario, seed, base, base_source, keep_timeline=True) -> RunResult
Rerun = Callable[..., RunResult]
T = TypeVar("T")
State = Tuple[str, str, str]  # (layer, state, why): layer "power", "daemon" or "mode"

WIDTH = 1000
LEFT = 130  # the label column
RIGHT = 16
PLOT = WIDTH - LEFT - RIGHT
ROW = 14  # a row of labels (faults at the top, annotations under a host)
ROLE_H = 8
MODE_H = 16
LANE_H = 14
CHAR_W = 6.4  # rough width of a character at the SVG's 11px sans-serif
ZOOM_BEFORE = 30.0
ZOOM_AFTER = 90.0
MARK_REPEAT = 30.0  # the same decision again within this many seconds is labelled once, "×n"
ZOOM_IF_UNDER = 0.4  # zoom only when the action fits in under 40% of the run

MODE_COLOURS = (
    ("starting", "#b9dcb0"), ("normal", "#3a9d5d"), ("rejoining", "#84c7a8"),
    ("survivor", "#f2b53a"), ("takeover", "#e07b00"), ("isolated", "#e05252"),
    ("self-fenced", "#8b1a1a"), ("maintenance", "#4f86d0"), ("disabled", "#9aa5b8"),
    ("stopping", "#c9c9c9"),
)
ROLE_COLOURS = (
    ("master", "#1d3557"), ("slave", "#a8c5e6"), ("emergency", "#b5651d"), ("hung", "#c0392b"),
    ("restarting", "#d0d0d0"), ("down", "#b0b0b0"), ("off", "#7a7a7a"),
)
HATCHED_ROLES = ("hung", "restarting", "down")
HOST_COLOURS = ("#3d6fb5", "#8e5bb5", "#5f7f3f", "#a0522d")
UNKNOWN = "#999999"
FAULT_FILL = "#f4a261"
FAULT_INK = "#9a4a00"
RED = "#d00000"
HALO = ' stroke="#ffffff" stroke-width="3" stroke-opacity="0.8" paint-order="stroke"'  # legible on lines
DARK_FILLS = ("#3a9d5d", "#e07b00", "#e05252", "#8b1a1a", "#4f86d0", "#1d3557", "#b5651d",
              "#c0392b", "#7a7a7a", "#777777", "#333333") + HOST_COLOURS
MARK_LABELS = {
    "emergency_transition_to_master": "emergency \u2192 master",
    "declare_dead": "declare dead",
    "designate_new_master": "designate master",
    "emergency_reset_master": "reset master",
    "StartFence": "fence agent",
    "DestroyGuests": "destroy guests",
}
FENCE_LABELS = {"agent": "powered off by fence agent", "watchdog": "watchdog reset",
                "self-fence": "self-fence"}
SYMBOLS = {
    "fault": "fault (shaded until healed)", "instant": "instant fault", "fence": "fence",
    "mark": "decision", "violation": "invariant violated",
}
DAEMON_DOWN = ("daemon killed", "daemon exited")
DAEMON_UP = "daemon started"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 1.5em;
       max-width: 1060px; }
h1 { margin-bottom: 0.2em; }
.meta { color: #444; }
table.summary { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
table.summary th, table.summary td { padding: 3px 9px; border-bottom: 1px solid #ddd; text-align: left; }
table.summary th { background: #f0f0f0; }
table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fde2e2; }
.pass { color: #1b7a3a; font-weight: bold; }
.fail { color: #b00000; font-weight: bold; }
section { border-top: 3px solid #3a9d5d; margin-top: 2.2em; padding-top: 0.3em; }
section.failed { border-top-color: #b00000; }
section h2 { margin: 0.3em 0; }
.tags, .run { color: #555; font-size: 13px; margin: 0.2em 0; }
.problems { background: #fde2e2; border-left: 4px solid #b00000; padding: 0.4em 0.8em; font-size: 13px; }
.fences { font-size: 13px; }
.unjustified { color: #b00000; font-weight: bold; }
code { background: #f3f3f3; padding: 0 3px; }
figure { margin: 0.6em 0; }
figcaption { font-size: 12px; color: #555; }
details { font-size: 13px; }
pre { font-size: 12px; background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
a.top { font-size: 12px; float: right; }
"""


# --- escaping and formatting ----------------------------------------------------------------------

def esc(text: Any) -> str:
    """Text or attribute value, safe in HTML and in (XML) SVG alike."""
    return html.escape(str(text), quote=True)


def _secs(value: Optional[float]) -> str:
    return "-" if value is None else "%.1f s" % value


def _num(value: float) -> str:
    return "%.1f" % value


def _plural(n: int, word: str) -> str:
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def _width(text: str) -> float:
    return len(text) * CHAR_W


def _anchor(text: str, used: Set[str]) -> str:
    base = "scenario-" + (re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_")
    name, n = base, 2
    while name in used:
        name, n = "%s-%d" % (base, n), n + 1
    used.add(name)
    return name


# --- the report -----------------------------------------------------------------------------------

def write_report(directory: str, summaries: Sequence[ScenarioSummary],
                 base: Optional[Mapping[str, Any]], base_source: str, wall: float,
                 rerun: Optional[Rerun] = None) -> str:
    """Write ``directory``/index.html and return its path.

    ``rerun`` re-runs a scenario's representative seed with a timeline (by default
    simulations.runner.run_scenario); a run that already carries a timeline is not re-run.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "index.html")
    text = render_report(summaries, base, base_source, wall, rerun)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return path


def render_report(summaries: Sequence[ScenarioSummary], base: Optional[Mapping[str, Any]],
                  base_source: str, wall: float, rerun: Optional[Rerun] = None) -> str:
    ordered = sorted(summaries, key=lambda s: (s.scenario.id, s.scenario.source))
    used: Set[str] = set()
    anchors = [_anchor(s.scenario.id, used) for s in ordered]
    config_path = base_source if base is not None else None
    runs = sum(len(s.runs) for s in ordered)
    failed = sum(1 for s in ordered if not s.passed)
    failed_text = ('<span class="fail">%d failed</span>' % failed if failed
                   else '<span class="pass">0 failed</span>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        "<title>halizard simulation report</title>",
        "<style>%s</style></head><body>" % CSS,
        '<h1 id="summary">halizard simulation report</h1>',
        '<p class="meta">Configuration: <code>%s</code> \u00b7 %s \u00b7 %s \u00b7 %s '
        "\u00b7 wall time %.1f s</p>" % (esc(base_source), _plural(len(ordered), "scenario"),
                                          _plural(runs, "run"), failed_text, wall),
        summary_table(ordered, anchors),
    ]
    for i, (summary, anchor) in enumerate(zip(ordered, anchors)):
        parts.append(scenario_section(summary, anchor, "t%d" % i, base, base_source, config_path,
                                      rerun or run_scenario))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def summary_table(summaries: Sequence[ScenarioSummary], anchors: Sequence[str]) -> str:
    rows = ['<table class="summary"><thead><tr><th>scenario</th><th>title</th><th>expectation</th>'
            "<th>runs</th><th>result</th><th>failover p50 / p99</th><th>min margin</th>"
            "<th>unjustified fences</th></tr></thead><tbody>"]
    for s, anchor in zip(summaries, anchors):
        f = s.failovers
        failover = "-" if not f else "%s / %s" % (_secs(percentile(f, 50)), _secs(percentile(f, 99)))
        bad = sum(1 for r in s.runs if not r.passed)
        result = ('<span class="pass">pass</span>' if s.passed
                  else '<span class="fail">FAIL %d</span>' % bad)
        unjustified = ('<span class="unjustified">%d</span>' % s.unjustified if s.unjustified
                       else "0")
        rows.append(
            '<tr%s><td><a href="#%s">%s</a></td><td>%s</td><td>%s</td><td class="num">%d</td>'
            '<td>%s</td><td class="num">%s</td><td class="num">%s</td><td class="num">%s</td></tr>'
            % ("" if s.passed else ' class="failed"', anchor, esc(s.scenario.id),
               esc(s.scenario.title), esc(expectation_text(s.scenario)), len(s.runs), result,
               esc(failover), esc(_secs(s.min_margin)), unjustified))
    rows.append("</tbody></table>")
    return "\n".join(rows)


def representative(summary: ScenarioSummary) -> Optional[RunResult]:
    """The run to draw: the first failing seed, else the first seed run."""
    runs = sorted(summary.runs, key=lambda r: r.seed)
    failing = [r for r in runs if not r.passed]
    chosen = failing or runs
    return chosen[0] if chosen else None


def scenario_section(summary: ScenarioSummary, anchor: str, uid: str,
                     base: Optional[Mapping[str, Any]], base_source: str,
                     config_path: Optional[str], rerun: Rerun) -> str:
    sc = summary.scenario
    out = ['<section id="%s"%s>' % (anchor, "" if summary.passed else ' class="failed"'),
           '<a class="top" href="#summary">\u2191 summary</a>',
           "<h2>%s \u2014 %s %s</h2>" % (
               esc(sc.id), esc(sc.title),
               '<span class="pass">pass</span>' if summary.passed
               else '<span class="fail">FAIL</span>')]
    out.append('<p class="tags">tags: %s \u00b7 expectation: %s \u00b7 file: <code>%s</code></p>'
               % (esc(", ".join(sorted(sc.tags)) or "-"), esc(expectation_text(sc)), esc(sc.source)))
    run = representative(summary)
    if run is None:
        out.append('<p class="run">No runs.</p></section>')
        return "\n".join(out)
    bad = sorted(r.seed for r in summary.runs if not r.passed)
    if bad:
        why = "the first failing seed; %d of %s failed: seed %s" % (
            len(bad), _plural(len(summary.runs), "run"), ", ".join(map(str, bad)))
    else:
        why = "all %s passed" % _plural(len(summary.runs), "run")
    out.append('<p class="run">Showing seed %d (%s).</p>' % (run.seed, esc(why)))
    if not run.passed:
        out.append(_problems(sc, run, config_path))
    if run.fences:
        out.append(_fences(run))
    timeline = run.timeline
    error: Optional[str] = None
    if timeline is None:
        try:
            timeline = rerun(sc, run.seed, base, base_source, keep_timeline=True).timeline
        except Exception as exc:  # one broken re-run must not lose the whole report
            error = "%s: %s" % (type(exc).__name__, exc)
    if timeline is None:
        out.append('<p class="problems">Timeline unavailable%s.</p>'
                   % (": " + esc(error) if error else ""))
    else:
        svg, caption = timeline_svg(sc, timeline, uid, run.violations)
        out.append("<figure>%s<figcaption>%s</figcaption></figure>" % (svg, esc(caption)))
        out.append(_alerts(timeline))
        out.append(_log(timeline))
    out.append("</section>")
    return "\n".join(out)


def _problems(scenario: Scenario, run: RunResult, config_path: Optional[str]) -> str:
    items = []
    for v in sorted(run.violations, key=lambda v: (v.t, v.invariant, v.host, v.detail)):
        items.append("<li><b>%s</b> at %s on %s: %s</li>"
                     % (esc(v.invariant), esc(_secs(v.t)), esc(v.host), esc(v.detail)))
    for u in run.unmet:
        items.append("<li><b>expectation</b>: %s</li>" % esc(u))
    return ('<div class="problems"><ul>%s</ul><p>Replay: <code>%s</code></p></div>'
            % ("".join(items), esc(replay_command(scenario, run.seed, config_path))))


def _fences(run: RunResult) -> str:
    items = []
    for f in sorted(run.fences, key=lambda f: (f.t, f.host, f.kind)):
        verdict = esc(f.verdict)
        if f.verdict != "justified":
            verdict = '<span class="unjustified">%s</span>' % verdict
        items.append("<li><b>%s</b> at %s: %s by %s \u2014 %s (%s)</li>"
                     % (esc(f.host), esc(_secs(f.t)), esc(FENCE_LABELS.get(f.kind, f.kind)),
                        esc(f.by), verdict, esc(f.why)))
    return '<div class="fences">Fences:<ul>%s</ul></div>' % "".join(items)


def _alerts(timeline: Mapping[str, Any]) -> str:
    """What the operator would have been told (halizard.core.alerts), in order."""
    alerts = sorted(timeline.get("alerts", ()), key=lambda e: e[0])
    if not alerts:
        return '<p class="run">Alerts: none.</p>'
    body = "\n".join("%10.3f s  %-10s %-9s %s" % (t, host, state, subject)
                     for t, host, state, subject in alerts)
    return ("<details><summary>Alerts the administrator receives (%d)</summary><pre>%s</pre>"
            "</details>" % (len(alerts), esc(body)))


def _log(timeline: Mapping[str, Any]) -> str:
    lines = sorted(timeline.get("log", ()), key=lambda e: e[0])
    body = "\n".join("%10.3f s  %-10s %s" % (t, host, line) for t, host, line in lines)
    return ("<details><summary>Decision log (%d lines)</summary><pre>%s</pre></details>"
            % (len(lines), esc(body)))


# --- the timeline ---------------------------------------------------------------------------------

def steps(changes: Sequence[Tuple[float, T]], end: float) -> List[Tuple[float, float, T]]:
    """A piecewise-constant state from its (time, state) changes: [(start, stop, state)].

    Changes at the same instant keep their recorded order (the last one wins)."""
    out: List[Tuple[float, float, T]] = []
    ordered = sorted(changes, key=lambda c: c[0])
    for i, (t, state) in enumerate(ordered):
        stop = ordered[i + 1][0] if i + 1 < len(ordered) else end
        if stop > t:
            out.append((t, stop, state))
    return out


def daemon_down(log: Sequence[Tuple[float, str, str]], host: str, end: float) -> List[Tuple[float, float]]:
    """When the host's daemon was not running (killed or exited, until started again)."""
    out: List[Tuple[float, float]] = []
    since: Optional[float] = None
    for t, who, line in sorted(log, key=lambda e: e[0]):
        if who != host:
            continue
        if line in DAEMON_DOWN and since is None:
            since = t
        elif line == DAEMON_UP and since is not None:
            out.append((since, t))
            since = None
    if since is not None and end > since:
        out.append((since, end))
    return out


class _Lookup(Generic[T]):
    """The state at a time of sorted, disjoint intervals (start, stop, state), or None."""

    def __init__(self, intervals: Sequence[Tuple[float, float, T]]) -> None:
        self.intervals = intervals
        self.starts = [start for start, _, _ in intervals]

    def __call__(self, t: float) -> Optional[T]:
        i = bisect.bisect_right(self.starts, t) - 1
        return self.intervals[i][2] if i >= 0 and t < self.intervals[i][1] else None


def host_states(timeline: Mapping[str, Any], host: str, end: float
                ) -> List[Tuple[float, float, State]]:
    """What the host's mode strip shows: its power state when not on, else "no daemon" while
    its daemon is not running, else the daemon's mode (with the reason it gave)."""
    power = steps([(0.0, "on")] + [(t, s) for t, h, s in timeline.get("power", ()) if h == host], end)
    down = daemon_down(timeline.get("log", ()), host, end)
    modes = steps([(t, (m, why)) for t, h, m, why in timeline.get("modes", ()) if h == host], end)
    cuts = sorted({0.0, end} | {t for a, b, _ in power + modes for t in (a, b)}
                  | {t for span in down for t in span})
    power_at, mode_at, down_at = _Lookup(power), _Lookup(modes), _Lookup([(a, b, True) for a, b in down])
    out: List[Tuple[float, float, State]] = []
    for a, b in zip(cuts, cuts[1:]):
        if not 0.0 <= a < b <= end:
            continue
        mid = (a + b) / 2
        on = power_at(mid)
        mode = mode_at(mid)
        if on is not None and on != "on":
            state: State = ("power", on, "")
        elif down_at(mid):
            state = ("daemon", "no daemon", "")
        elif mode is not None:
            state = ("mode", mode[0], mode[1])
        else:
            continue
        if out and out[-1][1] == a and out[-1][2] == state:
            out[-1] = (out[-1][0], b, state)
        else:
            out.append((a, b, state))
    return out


def vm_segments(events: Sequence[Tuple[float, str, str]], home: str, end: float
                ) -> List[Tuple[float, float, Tuple[str, ...]]]:
    """Where a VM runs over time from its (t, host, event) records: [(start, stop, hosts)].

    Domains created when the pool is built are not recorded: a host whose first record is a
    stop was running the VM from the start, and so was the home host if it has no records."""
    ordered = sorted(events, key=lambda e: e[0])
    first: Dict[str, str] = {}
    for _, host, event in ordered:
        first.setdefault(host, event)
    running = {h for h, event in first.items() if event != "start"}
    if home not in first:
        running.add(home)
    out: List[Tuple[float, float, Tuple[str, ...]]] = []
    last = 0.0

    def emit(stop: float) -> None:
        if stop > last and running:
            hosts = tuple(sorted(running))
            if out and out[-1][1] == last and out[-1][2] == hosts:
                out[-1] = (out[-1][0], stop, hosts)
            else:
                out.append((last, stop, hosts))

    for t, host, event in ordered:
        t = min(t, end)
        emit(t)
        last = max(last, t)
        if event == "start":
            running.add(host)
        else:
            running.discard(host)
    emit(end)
    return out


def repeats(marks: Sequence[Tuple[float, str]], gap: float = MARK_REPEAT) -> List[Tuple[float, str, int]]:
    """Runs of the same decision (a retried call) as one: (first time, action, count)."""
    out: List[Tuple[float, str, int]] = []
    last = 0.0
    for t, action in sorted(marks):
        if out and out[-1][1] == action and t - last <= gap:
            out[-1] = (out[-1][0], action, out[-1][2] + 1)
        else:
            out.append((t, action, 1))
        last = t
    return out


def fault_spans(timeline: Mapping[str, Any]) -> List[Tuple[float, Optional[float], str]]:
    """(onset, heal or None, label) per fault; heal None for instant faults (drawn as a line)."""
    end = float(timeline.get("end") or 0.0)
    onsets: Dict[int, Tuple[float, str]] = {}
    heals: Dict[int, float] = {}
    for t, phase, label, index in timeline.get("faults", ()):
        if phase == "onset":
            onsets.setdefault(index, (t, label))
        else:
            heals.setdefault(index, t)
    out: List[Tuple[float, Optional[float], str]] = []
    for index in sorted(onsets):
        t, label = onsets[index]
        kind = label.split(" ", 1)[0]
        heal: Optional[float] = heals.get(index)
        if heal is None and (kind in INSTANT or kind in ("host.crash", "host.shutdown")):
            out.append((t, None, label))
        else:
            out.append((t, end if heal is None else heal, label))
    return sorted(out, key=lambda f: (f[0], f[2]))


def window(timeline: Mapping[str, Any]) -> Tuple[float, float, bool]:
    """The time range to draw: the whole run, or around the faults when the run is long."""
    end = float(timeline.get("end") or 0.0)
    onsets = [f[0] for f in timeline.get("faults", ()) if f[1] == "onset"]
    if not onsets or end <= 0:
        return 0.0, end, False
    times = [e[0] for key in ("modes", "roles", "power", "vms", "faults", "fences", "marks", "log")
             for e in timeline.get(key, ())]
    start = max(0.0, min(onsets) - ZOOM_BEFORE)
    stop = min(end, max(times) + ZOOM_AFTER)
    if stop <= start or stop - start >= ZOOM_IF_UNDER * end:
        return 0.0, end, False
    return start, stop, True


def _ticks(t0: float, t1: float) -> List[float]:
    span = t1 - t0
    step = 3600.0
    for candidate in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / candidate <= 12:
            step = float(candidate)
            break
    first = -(-t0 // step) * step
    out = []
    t = first
    while t <= t1 + 1e-9:
        out.append(t)
        t += step
    return out


def _pack(items: Sequence[Tuple[float, str]], rows: int, limit: float
          ) -> List[Optional[Tuple[int, str]]]:
    """Place labels (x, text) in at most ``rows`` rows without overlap: per item (row, anchor).

    A label that fits nowhere gets None (its glyph keeps the text as a tooltip)."""
    ends: List[float] = []
    out: List[Optional[Tuple[int, str]]] = [None] * len(items)
    for i in sorted(range(len(items)), key=lambda k: (items[k], k)):
        x, text = items[i]
        w = _width(text) + 8
        lo, anchor = x, "start"
        if x + w > limit:
            lo, anchor = x - w, "end"
        for row in range(rows):
            if row == len(ends):
                ends.append(-1e9)
            if ends[row] < lo:
                ends[row] = lo + w
                out[i] = (row, anchor)
                break
    return out


def _rows(placed: Sequence[Optional[Tuple[int, str]]]) -> int:
    return 1 + max([p[0] for p in placed if p is not None] or [-1])


def _rect(x0: float, x1: float, y: float, h: float, fill: str, extra: str = "",
          title: str = "") -> str:
    tip = "<title>%s</title>" % esc(title) if title else ""
    return '<rect x="%s" y="%s" width="%s" height="%s" fill="%s"%s>%s</rect>' % (
        _num(x0), _num(y), _num(max(x1 - x0, 0.5)), _num(h), fill, extra, tip)


def _text(x: float, y: float, text: str, extra: str = "") -> str:
    return '<text x="%s" y="%s"%s>%s</text>' % (_num(x), _num(y), extra, esc(text))


def _ink(fill: str) -> str:
    return "#ffffff" if fill in DARK_FILLS else "#222222"


def _label_inside(x0: float, x1: float, y: float, h: float, text: str, fill: str) -> str:
    if x1 - x0 < _width(text) + 6:
        return ""
    return _text((x0 + x1) / 2, y + h / 2 + 4, text,
                 ' text-anchor="middle" fill="%s" pointer-events="none"' % _ink(fill))


def timeline_svg(scenario: Scenario, timeline: Mapping[str, Any], uid: str,
                 violations: Sequence[Violation] = ()) -> Tuple[str, str]:
    """The run drawn as an SVG, and a caption saying which time range it shows.

    ``uid`` prefixes the SVG's element ids: inline SVGs share the HTML document's ids."""
    return Chart(scenario, timeline, uid).render(violations)


class Chart:
    """The drawing of one timeline: layout first (label rows decide heights), then layers."""

    def __init__(self, scenario: Scenario, timeline: Mapping[str, Any], uid: str) -> None:
        self.scenario = scenario
        self.tl = timeline
        self.end = float(timeline.get("end") or 0.0)
        self.t0, self.t1, self.zoomed = window(timeline)
        self.span = (self.t1 - self.t0) or 1.0
        self.hatch = uid + "-hatch"
        hosts = list(scenario.hosts)
        for key in ("roles", "modes", "power"):
            for event in timeline.get(key, ()):
                if event[1] not in hosts:
                    hosts.append(event[1])
        self.hosts = hosts
        self.host_colour = {h: HOST_COLOURS[i] if i < len(HOST_COLOURS) else UNKNOWN
                            for i, h in enumerate(hosts)}
        named = [vm.name for vm in scenario.vms]
        self.vms = named + sorted({e[1] for e in timeline.get("vms", ())} - set(named))
        self.out: List[str] = []
        self.seen_modes: Set[str] = set()
        self.seen_roles: Set[str] = set()
        self.symbols: Set[str] = set()

    def x(self, t: float) -> float:
        return LEFT + (min(max(t, self.t0), self.t1) - self.t0) / self.span * PLOT

    def shown(self, t: float) -> bool:
        return self.t0 <= t <= self.t1

    def clip(self, a: float, b: float) -> Optional[Tuple[float, float]]:
        a, b = max(a, self.t0), min(b, self.t1)
        return (self.x(a), self.x(b)) if b > a else None

    def render(self, violations: Sequence[Violation]) -> Tuple[str, str]:
        faults = [f for f in fault_spans(self.tl)
                  if self.shown(f[0]) or (f[1] is not None and f[1] >= self.t0 and f[0] <= self.t1)]
        # the same fault again and again (a flapping link) is labelled once, "\u00d7n"
        firsts: List[int] = []
        for i, f in enumerate(faults):
            firsts.append(firsts[-1] if i and faults[i - 1][2] == f[2] else i)
        heads = sorted(set(firsts))
        texts = {i: faults[i][2] + ("" if firsts.count(i) == 1 else " \u00d7%d" % firsts.count(i))
                 for i in heads}
        spots = dict(zip(heads, _pack([(self.x(faults[i][0]), texts[i]) for i in heads], 8, WIDTH)))
        rows = _rows(list(spots.values()))
        drawn: List[Tuple[float, Optional[float], str, int, str, str]] = []
        for i, (onset, heal, label) in enumerate(faults):
            where = spots[firsts[i]]
            row, anchor = where if where is not None else (max(rows - 1, 0), "")
            text = texts[i] if i == firsts[i] and where is not None else ""
            drawn.append((onset, heal, label, row, text, anchor))
        top = 6 + max(1, rows) * ROW
        fences = sorted(self.tl.get("fences", ()), key=lambda f: (f[0], f[1], f[2]))
        marks = sorted(self.tl.get("marks", ()), key=lambda m: (m[0], m[1], m[2]))
        y = top + 4
        bands = []  # (host, y, notes, their places)
        for host in self.hosts:
            notes = [(self.x(t), FENCE_LABELS.get(kind, kind), RED)
                     for t, h, kind in fences if h == host and self.shown(t)]
            mine = [(t, a) for t, h, a in marks if h == host and self.shown(t)]
            for t, action, n in repeats(mine):
                label = MARK_LABELS.get(action, action) + ("" if n == 1 else " \u00d7%d" % n)
                notes.append((self.x(t), label, "#222"))
            placed = _pack([(n[0], n[1]) for n in notes], 3, WIDTH)
            bands.append((host, y, notes, placed))
            y += ROLE_H + 2 + MODE_H + 4 + _rows(placed) * ROW + 8
        vm_top = y + 4
        bottom = vm_top + len(self.vms) * (LANE_H + 6) + 2
        axis = bottom + 4

        self.axis(top, axis)
        self.faults(drawn, bottom, under=True)
        for host, yb, notes, placed in bands:
            self.host_band(host, yb, fences, marks, notes, placed)
        self.out.append('<line x1="6" y1="%s" x2="%d" y2="%s" stroke="#bbb"/>'
                        % (_num(vm_top - 4), LEFT + PLOT, _num(vm_top - 4)))
        for i, name in enumerate(self.vms):
            self.vm_lane(name, vm_top + i * (LANE_H + 6))
        self.faults(drawn, bottom, under=False)
        self.violations(violations, axis)
        legend, height = self.legend(axis + 30)
        svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
               'font-family="sans-serif" font-size="11" role="img" aria-label="%s">'
               '<defs><pattern id="%s" width="5" height="5" patternUnits="userSpaceOnUse" '
               'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="5" stroke="#666" '
               'stroke-width="1.5"/></pattern></defs>'
               '<rect width="100%%" height="100%%" fill="#ffffff"/><g class="chart">%s</g>'
               '<g class="legend">%s</g></svg>'
               % (WIDTH, height, WIDTH, height, esc("timeline of " + self.scenario.id), self.hatch,
                  "".join(self.out), legend))
        if self.zoomed:
            caption = "showing %.0f s to %.0f s of %.0f s (around the faults)" % (
                self.t0, self.t1, self.end)
        else:
            caption = "showing the whole run, %.0f s" % self.end
        return svg, caption

    def axis(self, top: float, y: float) -> None:
        for t in _ticks(self.t0, self.t1):
            xt = _num(self.x(t))
            self.out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e6e6e6"/>'
                            % (xt, _num(top), xt, _num(y)))
            self.out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#555"/>'
                            % (xt, _num(y), xt, _num(y + 4)))
            anchor = "end" if self.x(t) > LEFT + PLOT - 12 else "middle"
            self.out.append(_text(self.x(t), y + 15, "%g s" % t, ' text-anchor="%s" fill="#444"' % anchor))
        self.out.append('<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#555"/>'
                        % (LEFT, _num(y), LEFT + PLOT, _num(y)))

    def host_band(self, host: str, yr: float, fences: Sequence[Tuple[float, str, str]],
                  marks: Sequence[Tuple[float, str, str]], notes: Sequence[Tuple[float, str, str]],
                  placed: Sequence[Optional[Tuple[int, str]]]) -> None:
        """The xapi role strip, the daemon mode strip, power, fences and decisions of a host."""
        out, end = self.out, self.end
        ym = yr + ROLE_H + 2
        ya = ym + MODE_H + 4
        out.append(_text(6, ym + 12, host[:16], ' font-weight="bold" font-size="12"'))
        out.append(_text(LEFT - 6, yr + ROLE_H, "xapi", ' text-anchor="end" fill="#777" font-size="9"'))
        out.append(_text(LEFT - 6, ym + 12, "daemon", ' text-anchor="end" fill="#777" font-size="9"'))
        roles = dict(ROLE_COLOURS)
        for a, b, role in steps([(t, r) for t, h, r in self.tl.get("roles", ()) if h == host], end):
            c = self.clip(a, b)
            if c is None:
                continue
            self.seen_roles.add(role)
            tip = "%s xapi %s from %s to %s" % (host, role, _secs(a), _secs(b))
            out.append(_rect(c[0], c[1], yr, ROLE_H, roles.get(role, UNKNOWN), title=tip))
            if role in HATCHED_ROLES:
                out.append(_rect(c[0], c[1], yr, ROLE_H, "url(#%s)" % self.hatch))
        modes = dict(MODE_COLOURS)
        for a, b, (layer, state, why) in host_states(self.tl, host, end):
            c = self.clip(a, b)
            if c is None:
                continue
            if layer == "power":
                self.symbols.add("power")
                text = "power off" if state == "off" else state
                fill = "#333333" if state == "off" else "#777777"
                tip = "%s %s from %s to %s" % (host, text, _secs(a), _secs(b))
                out.append(_rect(c[0], c[1], yr, ROLE_H + 2 + MODE_H, fill, title=tip))
                out.append(_label_inside(c[0], c[1], ym, MODE_H, text, "#333333"))
            elif layer == "daemon":
                self.symbols.add("daemon")
                tip = "%s: daemon not running from %s to %s" % (host, _secs(a), _secs(b))
                out.append(_rect(c[0], c[1], ym, MODE_H, "#ffffff", ' stroke="#999"', tip))
                out.append(_rect(c[0], c[1], ym, MODE_H, "url(#%s)" % self.hatch))
                out.append(_label_inside(c[0], c[1], ym, MODE_H, "no daemon", "#ffffff"))
            else:
                self.seen_modes.add(state)
                fill = modes.get(state, UNKNOWN)
                tip = "%s %s from %s to %s: %s" % (host, state, _secs(a), _secs(b), why)
                out.append(_rect(c[0], c[1], ym, MODE_H, fill, title=tip))
                out.append(_label_inside(c[0], c[1], ym, MODE_H, state, fill))
        for t, h, kind in fences:
            if h == host and self.shown(t):
                self.symbols.add("fence")
                xf = self.x(t)
                out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.5"/>'
                           % (_num(xf), _num(yr - 2), _num(xf), _num(ya), RED))
                out.append(_bolt(xf, ym + MODE_H / 2, "%s of %s at %s" % (kind, host, _secs(t))))
        for t, h, action in marks:
            if h == host and self.shown(t):
                self.symbols.add("mark")
                out.append(_triangle(self.x(t), ya - 5, "%s by %s at %s" % (action, host, _secs(t))))
        for (xn, text, colour), where in zip(notes, placed):
            if where is not None:
                row, anchor = where
                out.append(_text(xn + (6 if anchor == "start" else -6), ya + 12 + row * ROW, text,
                                 ' text-anchor="%s" fill="%s" font-size="10"%s' % (anchor, colour, HALO)))

    def vm_lane(self, name: str, y: float) -> None:
        """Which host runs the VM: a bar per host coloured by host; two hosts at once in red."""
        out = self.out
        policy = {vm.name: vm.restart for vm in self.scenario.vms}.get(name, "?")
        home = {vm.name: vm.host for vm in self.scenario.vms}.get(name, "")
        label = name if len(name) <= 18 else name[:17] + "\u2026"
        out.append('<text x="6" y="%s"><title>%s</title>%s</text>' % (
            _num(y + LANE_H - 3), esc("%s (restart policy: %s)" % (name, policy)), esc(label)))
        out.append(_rect(LEFT, LEFT + PLOT, y, LANE_H, "#000000", ' fill-opacity="0.05"'))
        events = [(t, h, e) for t, n, h, e in self.tl.get("vms", ()) if n == name]
        bars: List[Tuple[float, float]] = []
        for a, b, on in vm_segments(events, home, self.end):
            c = self.clip(a, b)
            if c is None:
                continue
            bars.append(c)
            if len(on) == 1:
                fill = self.host_colour.get(on[0], UNKNOWN)
                tip = "%s on %s from %s to %s" % (name, on[0], _secs(a), _secs(b))
                out.append(_rect(c[0], c[1], y, LANE_H, fill, title=tip))
                out.append(_label_inside(c[0], c[1], y, LANE_H, on[0], fill))
                continue
            self.symbols.add("twice")
            tip = "SAFETY: %s running on %s at once, from %s to %s" % (
                name, " and ".join(on), _secs(a), _secs(b))
            h = LANE_H / len(on)
            for k, host in enumerate(on):
                out.append(_rect(c[0], c[1], y + k * h, h, self.host_colour.get(host, UNKNOWN),
                                 ' stroke="%s" stroke-width="2"' % RED, tip))
        # why a copy stopped, written after the bar where the lane is free
        for xs, reason in sorted((self.x(t), e) for t, _, e in events if e != "start" and self.shown(t)):
            w = _width(reason) * 0.85 + 6
            if xs + w < LEFT + PLOT and not any(a < xs + w and b > xs + 1 for a, b in bars):
                out.append(_text(xs + 3, y + LANE_H - 3, reason,
                                 ' fill="#777" font-size="9" font-style="italic"'))

    def faults(self, faults: Sequence[Tuple[float, Optional[float], str, int, str, str]],
               bottom: float, under: bool) -> None:
        """Translucent bands from onset to heal (or the end) under everything; over everything
        their edges, dashed lines for instant faults, and the labels (in their rows at the top).

        Each fault comes as (onset, heal, label, row, text to write or "", text-anchor)."""
        for onset, heal, label, row, text, anchor in faults:
            xo = self.x(onset)
            yt = 6 + row * ROW
            if under:
                if heal is not None:
                    self.symbols.add("fault")
                    self.out.append(_rect(xo, self.x(heal), yt, bottom - yt, FAULT_FILL,
                                          ' fill-opacity="0.3"',
                                          "%s from %s to %s" % (label, _secs(onset), _secs(heal))))
                continue
            if heal is None:
                self.symbols.add("instant")
                lines = [(onset, ' stroke-width="1.5" stroke-dasharray="5,3"')]
            else:
                lines = [(t, ' stroke-opacity="0.7"') for t in (onset, heal) if t < self.end]
            for t, style in lines:
                if self.shown(t):
                    xt = _num(self.x(t))
                    self.out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"%s/>'
                                    % (xt, _num(yt), xt, _num(bottom), FAULT_INK, style))
            if text:
                self.out.append(_text(xo + (3 if anchor == "start" else -3), yt + 10, text,
                                      ' text-anchor="%s" fill="%s" font-size="10"%s'
                                      % (anchor, FAULT_INK, HALO)))

    def violations(self, violations: Sequence[Violation], y: float) -> None:
        for v in sorted(violations, key=lambda v: (v.t, v.invariant, v.host)):
            if self.shown(v.t):
                self.symbols.add("violation")
                self.out.append(_diamond(self.x(v.t), y, RED, "%s at %s on %s: %s"
                                         % (v.invariant, _secs(v.t), v.host, v.detail)))

    def legend(self, y: float) -> Tuple[str, int]:
        """Swatches for what this chart uses, in rows; returns the SVG and the chart's height."""
        known_modes, known_roles = dict(MODE_COLOURS), dict(ROLE_COLOURS)
        symbols = self.symbols
        groups: List[Tuple[str, List[Tuple[str, str, str]]]] = [
            ("daemon mode", [(m, c, "") for m, c in MODE_COLOURS if m in self.seen_modes]
             + [(m, UNKNOWN, "") for m in sorted(self.seen_modes - set(known_modes))]
             + ([("no daemon", "#ffffff", "hatch")] if "daemon" in symbols else [])
             + ([("power off", "#333333", "")] if "power" in symbols else [])),
            ("xapi role", [(r, c, "hatch" if r in HATCHED_ROLES else "") for r, c in ROLE_COLOURS
                           if r in self.seen_roles]
             + [(r, UNKNOWN, "") for r in sorted(self.seen_roles - set(known_roles))]),
            ("VM running on", [(h, self.host_colour[h], "") for h in self.hosts]
             + ([("on two hosts at once", "#ffffff", "twice")] if "twice" in symbols else [])),
            ("symbols", [(SYMBOLS[s], "", s) for s in sorted(SYMBOLS) if s in symbols]),
        ]
        out: List[str] = []
        for title, entries in groups:
            if not entries:
                continue
            out.append(_text(6, y + 10, title + ":", ' fill="#555" font-size="10"'))
            xl = float(LEFT)
            for text, colour, style in entries:
                w = 18 + _width(text) * 0.9 + 14
                if xl + w > WIDTH:
                    y += 16
                    xl = LEFT
                out.append(_swatch(xl, y, colour, style, self.hatch))
                out.append(_text(xl + 18, y + 10, text, ' font-size="10"'))
                xl += w
            y += 18
        return "".join(out), int(y + 6)


def _bolt(xc: float, yc: float, title: str = "") -> str:
    points = ((2, -8), (-4, 1), (0, 1), (-2, 8), (4, -1), (0, -1))
    return _polygon([(xc + dx, yc + dy) for dx, dy in points], RED, title,
                    ' stroke="#fff" stroke-width="0.8"')


def _triangle(xc: float, y: float, title: str = "") -> str:
    return _polygon([(xc, y), (xc - 4.5, y + 8), (xc + 4.5, y + 8)], "#222222", title)


def _diamond(xc: float, yc: float, fill: str, title: str = "") -> str:
    return _polygon([(xc, yc - 6), (xc + 5, yc), (xc, yc + 6), (xc - 5, yc)], fill, title)


def _polygon(points: Sequence[Tuple[float, float]], fill: str, title: str = "", extra: str = "") -> str:
    tip = "<title>%s</title>" % esc(title) if title else ""
    return '<polygon points="%s" fill="%s"%s>%s</polygon>' % (
        " ".join("%s,%s" % (_num(px), _num(py)) for px, py in points), fill, extra, tip)


def _swatch(xs: float, y: float, colour: str, style: str, hatch: str) -> str:
    if style == "fault":
        return _rect(xs, xs + 14, y, 12, FAULT_FILL, ' fill-opacity="0.35" stroke="%s"' % FAULT_INK)
    if style == "instant":
        return ('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.5" '
                'stroke-dasharray="4,2"/>' % (_num(xs + 7), _num(y), _num(xs + 7), _num(y + 12),
                                              FAULT_INK))
    if style == "fence":
        return _bolt(xs + 7, y + 6)
    if style == "mark":
        return _triangle(xs + 7, y + 2)
    if style == "violation":
        return _diamond(xs + 7, y + 6, RED)
    if style == "twice":
        return (_rect(xs, xs + 14, y, 6, HOST_COLOURS[0], ' stroke="%s" stroke-width="2"' % RED)
                + _rect(xs, xs + 14, y + 6, 6, HOST_COLOURS[1], ' stroke="%s" stroke-width="2"' % RED))
    out = _rect(xs, xs + 14, y, 12, colour, ' stroke="#999" stroke-width="0.5"')
    if style == "hatch":
        out += _rect(xs, xs + 14, y, 12, "url(#%s)" % hatch)
    return out
