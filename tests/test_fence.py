"""Fence agents (halizard.runtime.fence) against a fake agent that speaks the ClusterLabs
protocol: options on stdin, the action last, exit codes per action."""
import logging
import os
import time

import pytest

from halizard.core.config import FenceAgent
from halizard.effects import STALE, FenceOutcome, FenceStarted, StartFence
from halizard.runtime.fence import (
    FenceConfigError,
    FenceRunner,
    agent_input,
    redact,
    run_agent,
)

pytestmark = pytest.mark.runtime

SECRET = "s3cret-Pa55"
FAR = 1e9

# Reads key=value lines (comments and blank lines skipped, the last value wins), records them,
# then behaves as option "behaviour" says.
FAKE_AGENT = r"""#!/bin/sh
input=$(cat)
record=""; behaviour=""; action=""
while IFS= read -r line; do
  case "$line" in
    '#'*|'') continue ;;
    record=*) record=${line#record=} ;;
    behaviour=*) behaviour=${line#behaviour=} ;;
    action=*) action=${line#action=} ;;
  esac
done <<END
$input
END
[ -n "$record" ] || exit 9
printf '%s\n' "$input" > "$record.stdin"
case "$behaviour:$action" in
  powered-off:off) exit 0 ;;
  powered-off:status) echo "Status: OFF"; exit 2 ;;
  powered-on:status) echo "Status: ON"; exit 0 ;;
  no-bmc:status) echo "Failed: Unable to obtain correct plug status or plug is not available" >&2
                 exit 1 ;;
  refuses:*) echo "Failed: Unable to log in with password $(grep passwd= "$record.stdin")"
             exit 1 ;;
  hangs:*) sleep 60 & echo $! > "$record.child"; wait; exit 0 ;;
  garbage:*) head -c 200000 /dev/urandom; exit 7 ;;
  *:metadata) echo '<?xml version="1.0" ?><resource-agent name="fence_fake"/>'; exit 0 ;;
esac
exit 1
"""


@pytest.fixture
def fake(tmp_path):
    """A function that builds a FenceAgent for the fake agent with a given behaviour."""
    script = tmp_path / "fence_fake"
    script.write_text(FAKE_AGENT)
    script.chmod(0o755)

    def agent(behaviour, **extra):
        record = str(tmp_path / behaviour)
        options = dict(ipaddr="198.18.0.12", login="admin", passwd=SECRET, record=record,
                       behaviour=behaviour, **extra)
        return FenceAgent(str(script), tuple(sorted(options.items()))), record

    return agent


def outcome(runner, action, timeout=5.0):
    started = runner.start(StartFence(action, timeout, FAR))
    assert isinstance(started, FenceStarted)
    assert runner.wait(timeout + 5)
    (done,) = runner.collect()
    assert done.job == started.job and done.action == action
    return done.result


def test_the_agent_reads_the_options_then_the_action(fake):
    agent, record = fake("powered-off")
    assert agent_input(agent, "off").decode().splitlines()[-1] == "action=off"
    run = run_agent(agent, "off", 5.0)
    assert (run.exit_code, run.timed_out, run.error) == (0, False, "")
    with open(record + ".stdin") as f:
        lines = f.read().splitlines()
    assert lines == ["behaviour=powered-off", "ipaddr=198.18.0.12", "login=admin",
                     "passwd=" + SECRET, "record=" + record, "action=off"]


@pytest.mark.parametrize("behaviour, action, result", [
    ("powered-off", "off", "off"),
    ("powered-off", "status", "off"),
    ("powered-on", "status", "on"),
    ("no-bmc", "status", "unreachable"),
    ("refuses", "off", "failed"),
    ("garbage", "off", "failed"),
    ("garbage", "status", "failed"),
])
def test_exit_codes_become_outcomes(fake, behaviour, action, result):
    agent, _ = fake(behaviour)
    assert outcome(FenceRunner(agent), action) == result


def test_a_hung_agent_times_out_and_its_whole_process_group_dies(fake):
    agent, record = fake("hangs")
    runner = FenceRunner(agent)
    began = time.monotonic()
    started = runner.start(StartFence("off", 0.5, FAR))
    assert time.monotonic() - began < 0.2  # StartFence answers at once
    assert isinstance(started, FenceStarted) and runner.collect() == ()
    assert runner.wait(5.0)
    assert runner.collect() == (FenceOutcome(started.job, "off", "timeout"),)
    assert 0.5 <= time.monotonic() - began < 2.0
    with open(record + ".child") as f:
        child = int(f.read())
    deadline = time.monotonic() + 2.0  # SIGKILL is sent; the child's exit takes a moment
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(child)  # the agent's own child went with it
    assert runner.collect() == ()  # collected once


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_jobs_run_in_parallel_and_are_numbered(fake):
    slow, _ = fake("hangs")
    runner = FenceRunner(slow)
    first = runner.start(StartFence("status", 0.4, FAR))
    second = runner.start(StartFence("off", 0.4, FAR))
    assert (first.job, second.job) == (1, 2)
    assert runner.wait(5.0)
    assert sorted(runner.collect()) == [FenceOutcome(1, "status", "timeout"),
                                        FenceOutcome(2, "off", "timeout")]


def test_a_stale_start_is_refused_and_runs_nothing(fake):
    agent, record = fake("powered-off")
    runner = FenceRunner(agent, clock=lambda: 100.0)
    assert runner.start(StartFence("off", 5.0, valid_until=99.0)) == STALE
    assert runner.wait(0) and runner.collect() == ()
    assert not os.path.exists(record + ".stdin")


def test_secrets_never_reach_the_log(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="halizard.fence")
    agent, _ = fake("refuses")  # prints the password it was given
    run = run_agent(agent, "off", 5.0)
    assert run.exit_code == 1 and SECRET not in run.output and "passwd=***" in run.output
    assert outcome(FenceRunner(agent), "off") == "failed"
    text = caplog.text
    assert "passwd" in text and "Unable to log in" in text  # the keys and the output are there
    assert SECRET not in text and "198.18.0.12" not in text.split("output:")[0]
    assert redact("user admin pass %s" % SECRET, agent) == "user admin pass ***"


def test_garbage_output_is_kept_short_and_printable(fake):
    agent, _ = fake("garbage")
    run = run_agent(agent, "off", 5.0)
    assert run.exit_code == 7 and len(run.output) <= 2048
    assert all(c.isprintable() or c == "\n" for c in run.output)


def test_metadata_and_a_missing_agent(fake, tmp_path):
    agent, _ = fake("any")
    run = run_agent(agent, "metadata", 5.0)
    assert run.exit_code == 0 and "<resource-agent" in run.output
    missing = FenceAgent(str(tmp_path / "fence_absent"), (("passwd", SECRET),))
    run = run_agent(missing, "status", 5.0)
    assert run.exit_code is None and "cannot run" in run.error and SECRET not in run.error
    assert outcome(FenceRunner(missing), "status") == "failed"


def test_options_that_cannot_be_passed_on_are_refused(fake):
    agent, _ = fake("powered-off")
    for options, message in (
            ((("action", "reboot"),), "halizard chooses the action"),
            ((("passwd", "x\nsecret"),), "line break"),
            ((("pass word", "x"),), "not a key"),
    ):
        with pytest.raises(FenceConfigError, match=message) as caught:
            FenceRunner(FenceAgent(agent.command, options))
        assert "secret" not in str(caught.value)
    with pytest.raises(FenceConfigError, match="empty"):
        FenceRunner(FenceAgent("  ", ()))
    with pytest.raises(FenceConfigError, match="action"):
        run_agent(agent, "explode", 1.0)
    with pytest.raises(FenceConfigError, match="StartFence action"):
        FenceRunner(agent).start(StartFence("monitor", 1.0, FAR))
