"""The HTML report: built from synthetic runs and timelines, never from the simulator itself."""
import random
import re
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from simulations import report
from simulations.invariants import FenceRecord, Violation
from simulations.matrix import ScenarioSummary
from simulations.runner import RunResult
from simulations.scenario import Scenario, parse_scenario

pytestmark = pytest.mark.runtime

SVG = "{http://www.w3.org/2000/svg}"


def scenario(sid: str = "T01", title: str = "Master loses power", tags: Sequence[str] = ("host",),
             faults: Optional[List[Dict[str, Any]]] = None) -> Scenario:
    data = {
        "id": sid,
        "title": title,
        "tags": list(tags),
        "cluster": {
            "hosts": ["xs1", "xs2"],
            "master": "xs1",
            "vms": [{"name": "vm-a", "host": "xs1", "restart": "restart"},
                    {"name": "vm-b", "host": "xs2", "restart": "restart"}],
        },
        "fault": faults if faults is not None else [{"at": "60s", "kind": "host.crash", "target": "xs1"}],
        "expect": {"master_at_end": "xs2"},
    }
    return parse_scenario(data, source="scenarios/%s.toml" % sid)


def rich_timeline(reason: str = "peer silent 4.6s", label: str = "link.down xs1-gw for 30s"
                  ) -> Dict[str, Any]:
    """A run with a bit of everything: a healed fault, an instant fault, a host crash, a
    self-fence, decisions, a power cycle, a daemon restart, a migration and a VM on two hosts."""
    return {
        "end": 300.0,
        "modes": [(0.5, "xs1", "normal", "peer visible"), (0.8, "xs2", "normal", "slave"),
                  (62.0, "xs1", "isolated", "gateway lost"), (64.0, "xs2", "survivor", reason),
                  (70.0, "xs2", "takeover", reason), (75.0, "xs1", "self-fenced", "lease expired"),
                  (90.0, "xs2", "survivor", "peer certainly dead")],
        "roles": [(0.2, "xs1", "master"), (0.2, "xs2", "slave"), (80.0, "xs2", "restarting"),
                  (85.0, "xs2", "master"), (100.0, "xs1", "off")],
        "power": [(100.0, "xs1", "off"), (200.0, "xs1", "booting"), (260.0, "xs1", "on")],
        "vms": [(75.0, "vm-a", "xs1", "self-fence"), (92.0, "vm-a", "xs2", "start"),
                (120.0, "vm-b", "xs1", "start"), (150.0, "vm-b", "xs1", "crash")],
        "faults": [(60.0, "onset", label, 0), (90.0, "heal", label, 0),
                   (100.0, "onset", "host.crash xs1", 1), (110.0, "onset", "daemon.crash xs2", 2)],
        "fences": [(75.0, "xs1", "self-fence")],
        "marks": [(70.0, "xs2", "emergency_transition_to_master"), (88.0, "xs2", "declare_dead")],
        "log": [(0.1, "xs1", "daemon started"), (0.3, "xs2", "daemon started"),
                (64.0, "xs2", "survivor: " + reason), (100.0, "xs1", "daemon killed"),
                (110.0, "xs2", "daemon killed"), (115.0, "xs2", "daemon started")],
        "alerts": [(64.0, "xs2", "raised", "halizard xs2: peer lost: xs1 silent for 4.6 s"),
                   (92.0, "xs2", "event", "halizard xs2: takeover finished: 1 VM <restarted>")],
    }


def run(seed: int, passed: bool = True, timeline: Optional[Dict[str, Any]] = None,
        detail: str = "vm-b runs on xs1 and xs2", unmet: Sequence[str] = ()) -> RunResult:
    violations = [] if passed else [Violation("I1", 120.0, "xs1", detail)]
    fences = [FenceRecord(75.0, "xs1", "self-fence", "xs1", "justified", "isolated 13 s")]
    return RunResult(scenario="T01", seed=seed, violations=violations, unmet=list(unmet),
                     failover=30.0 + seed, margin=2.0 + seed, fences=fences, trace_hash="0" * 64,
                     events=100, wall=0.1, sim_seconds=300.0, timeline=timeline)


class Rerun:
    """Stands in for run_scenario: records the seeds asked for, answers with a timeline."""

    def __init__(self, timeline: Optional[Dict[str, Any]] = None) -> None:
        self.calls: List[Tuple[str, int, bool]] = []
        self.timeline = timeline

    def __call__(self, sc: Scenario, seed: int, base: Any, base_source: str,
                 keep_timeline: bool = False) -> RunResult:
        self.calls.append((sc.id, seed, keep_timeline))
        return run(seed, timeline=self.timeline if self.timeline is not None else rich_timeline())


def svgs_of(page: str) -> List[ET.Element]:
    """Every inline SVG, each parsed on its own (each must be well-formed)."""
    return [ET.fromstring(text) for text in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def chart(svg: ET.Element) -> ET.Element:
    """The drawing without its legend."""
    (group,) = [g for g in svg.iter(SVG + "g") if g.get("class") == "chart"]
    return group


def titles(svg: ET.Element, tag: str) -> List[str]:
    return [el.findtext(SVG + "title") or "" for el in svg.iter(SVG + tag)]


def texts(svg: ET.Element) -> List[str]:
    return ["".join(el.itertext()) for el in svg.iter(SVG + "text")]


def render(summaries: Sequence[ScenarioSummary], rerun: Any = None, base: Any = None,
           base_source: str = "built-in configuration") -> str:
    return report.render_report(summaries, base, base_source, 12.5, rerun or Rerun())


def test_write_report_writes_index_html(tmp_path: Any) -> None:
    target = str(tmp_path / "nested" / "report")
    path = report.write_report(target, [ScenarioSummary(scenario(), [run(0)])], None,
                               "built-in configuration", 3.0, rerun=Rerun())
    assert path == str(tmp_path / "nested" / "report" / "index.html")
    with open(path, encoding="utf-8") as handle:
        page = handle.read()
    assert "halizard simulation report" in page
    ET.fromstring(page)  # the whole page is well-formed too


def test_index_lists_every_scenario_with_its_result() -> None:
    good = ScenarioSummary(scenario("A01", "Slave crashes"), [run(0), run(1)])
    bad = ScenarioSummary(scenario("B02", "Master freezes"), [run(0), run(1, passed=False), run(2)])
    page = render([bad, good], base={"peer_addresses": ["10.0.0.2"]}, base_source="/etc/halizard.toml")
    root = ET.fromstring(page)
    rows = [tr for tr in root.iter("tr") if tr.find("td") is not None]
    cells = [["".join(td.itertext()) for td in tr.findall("td")] for tr in rows]
    assert [c[0] for c in cells] == ["A01", "B02"]  # sorted by id
    assert cells[0][4] == "pass" and cells[1][4] == "FAIL 1"
    assert [tr.get("class") for tr in rows] == [None, "failed"]
    assert cells[0][2] == "master xs2"  # expectation_text
    assert cells[0][5] == "30.0 s / 31.0 s" and cells[0][6] == "2.0 s"
    links = [a.get("href") for tr in rows for a in tr.iter("a")]
    sections = [s.get("id") or "" for s in root.iter("section")]
    assert links == ["#" + s for s in sections] == ["#scenario-A01", "#scenario-B02"]
    header = "".join(next(p for p in root.iter("p") if p.get("class") == "meta").itertext())
    assert "/etc/halizard.toml" in header
    assert "2 scenarios" in header and "5 runs" in header and "1 failed" in header
    assert "12.5 s" in header
    assert len(svgs_of(page)) == 2


def test_failing_scenario_shows_its_first_failing_seed_and_replay() -> None:
    rerun = Rerun()
    runs = [run(0), run(1), run(2, passed=False, unmet=["master_at_end: expected xs2, got xs1"]),
            run(3, passed=False)]
    page = render([ScenarioSummary(scenario(), runs)], rerun=rerun)
    assert rerun.calls == [("T01", 2, True)]
    assert "Showing seed 2" in page and "2 of 4 runs failed: seed 2, 3" in page
    assert "halizard simulate scenarios/T01.toml --seed 2" in page
    assert "master_at_end: expected xs2, got xs1" in page
    assert "vm-b runs on xs1 and xs2" in page
    with_config = render([ScenarioSummary(scenario(), runs)], base={}, base_source="site.toml")
    assert "halizard simulate scenarios/T01.toml --seed 2 --config site.toml" in with_config


def test_passing_scenario_shows_its_first_seed() -> None:
    rerun = Rerun()
    page = render([ScenarioSummary(scenario(), [run(4), run(3)])], rerun=rerun)
    assert rerun.calls == [("T01", 3, True)]
    assert "Showing seed 3 (all 2 runs passed)" in page
    assert "Replay" not in page


def test_timeline_draws_faults_vms_fences_and_marks() -> None:
    page = render([ScenarioSummary(scenario(), [run(0)])])
    (svg,) = svgs_of(page)
    assert svg.get("width") == "1000"
    rects = titles(svg, "rect")
    words = texts(svg)
    # a healed fault: a shaded band from onset to heal, labelled at the top
    band = [r.findtext(SVG + "title") for r in chart(svg).iter(SVG + "rect")
            if r.get("fill") == report.FAULT_FILL]
    assert band == ["link.down xs1-gw for 30s from 60.0 s to 90.0 s"]
    assert "link.down xs1-gw for 30s" in words
    # instant faults (and a host crash, which is not shaded): dashed lines, labelled
    dashed = [line for line in chart(svg).iter(SVG + "line") if line.get("stroke-dasharray")]
    assert len(dashed) == 2
    assert "daemon.crash xs2" in words and "host.crash xs1" in words
    # VM bars coloured by host, the host written inside; a VM on two hosts stacked in red
    assert "vm-a on xs1 from 0.0 s to 75.0 s" in rects
    assert "vm-a on xs2 from 92.0 s to 300.0 s" in rects
    twice = [r for r in chart(svg).iter(SVG + "rect") if r.get("stroke") == report.RED]
    assert len(twice) == 2
    assert all("SAFETY: vm-b running on xs1 and xs2 at once" in (r.findtext(SVG + "title") or "")
               for r in twice)
    assert {r.get("fill") for r in twice} == set(report.HOST_COLOURS[:2])
    assert "xs2" in words and "self-fence" in words  # host in a bar, why vm-a stopped
    # fences and decisions on the host bands
    polygons = titles(svg, "polygon")
    assert "self-fence of xs1 at 75.0 s" in polygons
    assert "emergency_transition_to_master by xs2 at 70.0 s" in polygons
    assert "declare_dead by xs2 at 88.0 s" in polygons
    assert "emergency \u2192 master" in words and "declare dead" in words
    # roles, modes, power and the daemon
    assert "xs1 xapi master from 0.2 s to 100.0 s" in rects
    assert any(t.startswith("xs2 takeover from 70.0 s to 90.0 s: peer silent") for t in rects)
    assert "xs1 power off from 100.0 s to 200.0 s" in rects
    assert "xs1 booting from 200.0 s to 260.0 s" in rects
    assert "xs2: daemon not running from 110.0 s to 115.0 s" in rects
    # a legend naming what is used, and only that
    legend = [g for g in svg.iter(SVG + "g") if g.get("class") == "legend"][0]
    names = texts(legend)
    for name in ("normal", "isolated", "self-fenced", "takeover", "master", "restarting",
                 "on two hosts at once", "instant fault", "fence", "decision", "no daemon",
                 "power off"):
        assert name in names, name
    assert "maintenance" not in names and "invariant violated" not in names
    assert "showing the whole run, 300 s" in page


def test_violations_are_marked_on_the_time_axis() -> None:
    page = render([ScenarioSummary(scenario(), [run(0, passed=False)])])
    (svg,) = svgs_of(page)
    assert "I1 at 120.0 s on xs1: vm-b runs on xs1 and xs2" in titles(svg, "polygon")


def test_text_is_escaped() -> None:
    nasty = "<&> \"quoted\" 'single' ]]>"
    sc = scenario("E<1>", "A <b>bold</b> & odd title", tags=("x<y", "a&b"))
    timeline = rich_timeline(reason=nasty, label="link.down xs1-gw " + nasty)
    runs = [run(0, passed=False, detail=nasty, unmet=["liveness: " + nasty], timeline=timeline)]
    page = render([ScenarioSummary(sc, runs)], base={}, base_source="conf <&>.toml")
    assert "<&>" not in page and "<b>bold" not in page
    assert "&lt;&amp;&gt;" in page
    root = ET.fromstring(page)  # the whole page, SVG and all, is well-formed
    (svg,) = svgs_of(page)
    assert ("link.down xs1-gw " + nasty) in texts(svg)
    assert any(nasty in t for t in titles(svg, "rect"))
    assert any(nasty in "".join(pre.itertext()) for pre in root.iter("pre"))
    assert [s.get("id") for s in root.iter("section")] == ["scenario-E_1_"]
    assert any(a.get("href") == "#scenario-E_1_" for a in root.iter("a"))


def test_long_run_is_zoomed_around_the_faults() -> None:
    timeline = {
        "end": 7320.0,
        "modes": [(0.5, "xs1", "normal", "ok"), (0.8, "xs2", "normal", "ok"),
                  (7190.0, "xs2", "survivor", "peer silent")],
        "roles": [(0.2, "xs1", "master"), (0.2, "xs2", "slave")],
        "power": [(7200.0, "xs1", "off")],
        "vms": [(7200.0, "vm-a", "xs1", "crash")],
        "faults": [(7200.0, "onset", "host.crash xs1", 0)],
        "fences": [], "marks": [], "log": [],
    }
    assert report.window(timeline) == (7170.0, 7290.0, True)
    page = render([ScenarioSummary(scenario(), [run(0, timeline=timeline)])])
    assert "showing 7170 s to 7290 s of 7320 s" in page
    (svg,) = svgs_of(page)
    assert "7200 s" in texts(svg)
    assert "0 s" not in texts(svg)
    # vm-a ran on xs1 since the start: its bar is clipped to the window, not lost
    assert "vm-a on xs1 from 0.0 s to 7200.0 s" in titles(svg, "rect")


def test_short_run_is_not_zoomed() -> None:
    assert report.window(rich_timeline()) == (0.0, 300.0, False)
    assert report.window({"end": 300.0, "faults": []}) == (0.0, 300.0, False)


def test_output_is_deterministic() -> None:
    summaries = [ScenarioSummary(scenario(sid), [run(0), run(1, passed=sid == "C3")])
                 for sid in ("A1", "B2", "C3", "D4")]
    first = render(summaries)
    shuffled = list(summaries)
    random.Random(7).shuffle(shuffled)
    assert render(shuffled) == first
    assert first.index('id="scenario-A1"') < first.index('id="scenario-D4"')


def test_a_run_with_a_timeline_is_not_rerun() -> None:
    def refuse(*args: Any, **kwargs: Any) -> RunResult:
        raise AssertionError("re-ran a run that had a timeline")

    page = render([ScenarioSummary(scenario(), [run(0, timeline=rich_timeline())])], rerun=refuse)
    assert len(svgs_of(page)) == 1


def test_a_failing_rerun_does_not_lose_the_report() -> None:
    def broken(*args: Any, **kwargs: Any) -> RunResult:
        raise RuntimeError("model <unfinished>")

    summaries = [ScenarioSummary(scenario("A1"), [run(0)]),
                 ScenarioSummary(scenario("B2"), [run(0, timeline=rich_timeline())])]
    page = render(summaries, rerun=broken)
    assert "Timeline unavailable: RuntimeError: model &lt;unfinished&gt;" in page
    assert len(svgs_of(page)) == 1
    ET.fromstring(page)


def test_scenario_without_runs() -> None:
    page = render([ScenarioSummary(scenario(), [])])
    assert "No runs." in page
    ET.fromstring(page)


def test_decision_log_is_collapsed_and_sorted() -> None:
    timeline = rich_timeline()
    timeline["log"] = list(reversed(timeline["log"]))
    page = render([ScenarioSummary(scenario(), [run(0, timeline=timeline)])])
    root = ET.fromstring(page)
    details = [d for d in root.iter("details")
               if (d.findtext("summary") or "").startswith("Decision log")][0]
    assert details.get("open") is None
    assert details.findtext("summary") == "Decision log (6 lines)"
    lines = (details.findtext("pre") or "").splitlines()
    assert lines[0].split() == ["0.100", "s", "xs1", "daemon", "started"]
    assert lines[-1].split()[:3] == ["115.000", "s", "xs2"]


def test_vm_segments() -> None:
    # domains created with the pool are not recorded: a first stop means "running since 0"
    assert report.vm_segments([(60.0, "xs1", "crash"), (90.0, "xs2", "start")], "xs1", 300.0) == [
        (0.0, 60.0, ("xs1",)), (90.0, 300.0, ("xs2",))]
    assert report.vm_segments([], "xs2", 300.0) == [(0.0, 300.0, ("xs2",))]
    # a start recorded at 0 on the home host is the same thing
    assert report.vm_segments([(0.0, "xs1", "start")], "xs1", 300.0) == [(0.0, 300.0, ("xs1",))]
    # two hosts at once
    assert report.vm_segments([(120.0, "xs1", "start"), (150.0, "xs1", "crash")], "xs2", 300.0) == [
        (0.0, 120.0, ("xs2",)), (120.0, 150.0, ("xs1", "xs2")), (150.0, 300.0, ("xs2",))]
    # a VM first started late was halted before
    assert report.vm_segments([(30.0, "xs1", "start")], "xs1", 300.0) == [(30.0, 300.0, ("xs1",))]


def test_host_states_layer_power_over_daemon_over_mode() -> None:
    states = report.host_states(rich_timeline(), "xs1", 300.0)
    assert states == [
        (0.5, 62.0, ("mode", "normal", "peer visible")),
        (62.0, 75.0, ("mode", "isolated", "gateway lost")),
        (75.0, 100.0, ("mode", "self-fenced", "lease expired")),
        (100.0, 200.0, ("power", "off", "")),
        (200.0, 260.0, ("power", "booting", "")),
        (260.0, 300.0, ("daemon", "no daemon", "")),
    ]


def test_fault_spans() -> None:
    spans = report.fault_spans({
        "end": 300.0,
        "faults": [(10.0, "onset", "nic.down xs1", 3), (20.0, "onset", "clock.jump xs1 by=5.0", 1),
                   (30.0, "onset", "link.down xs1-xs2 for 5s", 2),
                   (35.0, "heal", "link.down xs1-xs2 for 5s", 2), (40.0, "onset", "host.crash xs2", 0)],
    })
    assert spans == [(10.0, 300.0, "nic.down xs1"), (20.0, None, "clock.jump xs1 by=5.0"),
                     (30.0, 35.0, "link.down xs1-xs2 for 5s"), (40.0, None, "host.crash xs2")]


def test_labels_do_not_overlap() -> None:
    placed = report._pack([(100.0, "a long label here"), (105.0, "another"), (990.0, "edge")], 2, 1000.0)
    assert placed[0] == (0, "start") and placed[1] == (1, "start")
    assert placed[2] == (0, "end")  # would run off the right edge
    assert report._pack([(1.0, "x"), (2.0, "y")], 1, 1000.0) == [(0, "start"), None]


def test_a_retried_decision_is_labelled_once() -> None:
    marks = [(60.0 + 1.5 * i, "emergency_transition_to_master") for i in range(5)]
    assert report.repeats(marks + [(70.0, "declare_dead"), (200.0, "declare_dead")]) == [
        (60.0, "emergency_transition_to_master", 5), (70.0, "declare_dead", 1),
        (200.0, "declare_dead", 1)]
    timeline = rich_timeline()
    timeline["marks"] = [(t, "xs2", a) for t, a in marks]
    page = render([ScenarioSummary(scenario(), [run(0, timeline=timeline)])])
    (svg,) = svgs_of(page)
    assert texts(chart(svg)).count("emergency \u2192 master \u00d75") == 1
    assert len([t for t in titles(svg, "polygon") if t.startswith("emergency_transition")]) == 5


def test_a_flapping_fault_is_labelled_once() -> None:
    timeline = rich_timeline()
    label = "link.down xs1-xs2 for 3.5s"
    timeline["faults"] = [event for i in range(6) for event in (
        (60.0 + 5 * i, "onset", label, i), (63.5 + 5 * i, "heal", label, i))]
    page = render([ScenarioSummary(scenario(), [run(0, timeline=timeline)])])
    (svg,) = svgs_of(page)
    assert [t for t in texts(chart(svg)) if t.startswith("link.down")] == [label + " \u00d76"]
    bands = [r for r in chart(svg).iter(SVG + "rect") if r.get("fill") == report.FAULT_FILL]
    assert len(bands) == 6 and len({b.get("y") for b in bands}) == 1


def test_each_scenario_lists_the_alerts_its_administrator_receives() -> None:
    page = render([ScenarioSummary(scenario(), [run(0, timeline=rich_timeline())])])
    assert "Alerts the administrator receives (2)" in page
    assert "xs2        raised    halizard xs2: peer lost: xs1 silent for 4.6 s" in page
    assert "takeover finished: 1 VM &lt;restarted&gt;" in page
    quiet = dict(rich_timeline(), alerts=[])
    assert "Alerts: none." in render([ScenarioSummary(scenario(), [run(0, timeline=quiet)])])
