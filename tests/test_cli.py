"""The `halizard` command: pinned JSON, exit status, replay commands, clear errors."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "simulations", "scenarios")

pytestmark = pytest.mark.runtime


def halizard(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "halizard"] + list(args), cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def test_version():
    out = halizard("--version")
    assert out.returncode == 0 and out.stdout.startswith("halizard ")


def test_json_summary_has_the_pinned_keys():
    out = halizard("simulate", os.path.join(SCENARIOS, "H02-master-crash.toml"), "--seeds", "3",
                   "--json", "--jobs", "1")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"scenarios", "summary"}
    s = data["scenarios"][0]
    assert set(s) >= {"id", "title", "runs", "passed", "violations", "failover_s",
                      "unjustified_fences", "min_margin_s"}
    assert s["id"] == "H02" and s["runs"] == 3 and s["passed"] is True
    assert set(s["failover_s"]) >= {"p50", "p99", "max"}
    assert set(data["summary"]) >= {"scenarios", "runs", "violations", "failed", "wall_s"}


def test_an_unmet_expectation_fails_and_prints_the_replay_command(tmp_path):
    text = open(os.path.join(SCENARIOS, "H02-master-crash.toml")).read()
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace('master_at_end = "xs2"', 'master_at_end = "xs1"'))
    out = halizard("simulate", str(wrong), "--seeds", "2", "--jobs", "1")
    assert out.returncode == 1
    assert "master_at_end: expected xs1, got xs2" in out.stdout
    assert "replay: halizard simulate %s --seed 0" % wrong in out.stdout
    out = halizard("simulate", str(wrong), "--seed", "1", "--json", "--jobs", "1")
    data = json.loads(out.stdout)
    assert data["scenarios"][0]["violations"][0]["replay"] == "halizard simulate %s --seed 1" % wrong


def test_unknown_fault_kind_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(open(os.path.join(SCENARIOS, "N04-gateway-down.toml")).read()
                   .replace('kind = "gw.down"', 'kind = "gw.explode"'))
    out = halizard("simulate", str(bad))
    assert out.returncode == 2
    assert "fault[0].kind: unknown fault kind 'gw.explode'" in out.stderr


def test_operator_config_replays_the_matrix_and_unsafe_timing_is_refused(tmp_path):
    good = tmp_path / "halizard.toml"
    good.write_text('peer_addresses = ["10.0.0.2", "172.16.0.2"]\n'
                    'gateway_addresses = ["10.0.0.1"]\n'
                    'takeover_delay = "15s"\n')
    out = halizard("simulate", os.path.join(SCENARIOS, "H01-slave-crash.toml"), "--seeds", "2",
                   "--config", str(good), "--jobs", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "unsafe.toml"
    bad.write_text('peer_addresses = ["10.0.0.2"]\ngateway_addresses = ["10.0.0.1"]\n'
                   'takeover_delay = "9s"\npromote_delay = "7500ms"\n')
    out = halizard("simulate", "--config", str(bad))
    assert out.returncode == 2
    assert "takeover_delay: unsafe" in out.stderr and str(bad) in out.stderr


def test_config_validate(tmp_path):
    good = tmp_path / "halizard.toml"
    good.write_text('peer_addresses = ["198.18.0.12"]\ngateway_addresses = ["198.18.0.1"]\n')
    out = halizard("config", "validate", str(good))
    assert out.returncode == 0
    assert "takeover_delay          12.000s > 11.310s required" in out.stdout
    assert "N01" in out.stderr  # the topology warning
    bad = tmp_path / "bad.toml"
    bad.write_text('peer_addresses = ["peer.example"]\ngateway_addresses = []\n')
    out = halizard("config", "validate", str(bad))
    assert out.returncode == 1
    assert "bad.toml: peer_addresses: 'peer.example' is not an IP address" in out.stderr
    assert "bad.toml: gateway_addresses: must be a non-empty list" in out.stderr


def test_report_is_written(tmp_path):
    out = halizard("simulate", os.path.join(SCENARIOS, "N02-master-nic-down.toml"), "--seeds", "2",
                   "--report", str(tmp_path / "report"), "--jobs", "1")
    assert out.returncode == 0, out.stderr
    index = tmp_path / "report" / "index.html"
    assert index.exists() and "N02" in index.read_text()
