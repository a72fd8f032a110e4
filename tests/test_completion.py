"""Bash completion (completion/halizard.bash): bash itself runs the completion function with
COMP_WORDS and COMP_CWORD set, and the names come from the simulated pool through the hidden
`halizard _complete` helper."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.poolcli import run, start_pool

pytestmark = [pytest.mark.runtime,
              pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "completion", "halizard.bash")
VMS = [{"name": "my web server", "host": "xs1"}, {"name": "my db", "host": "xs2"},
       {"name": "evil $(touch PWNED)", "host": None}]


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """Environment for a bash whose `halizard` is this checkout, on the pool's local socket."""
    base = tmp_path_factory.mktemp("completion")
    pool = start_pool(VMS, unix_dir=str(base))
    bin_dir = base / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "halizard"
    wrapper.write_text('#!/bin/sh\nexec "%s" -m halizard "$@"\n' % sys.executable)
    os.chmod(str(wrapper), 0o755)
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ.get("PATH", "")),
               PYTHONPATH=ROOT, HALIZARD_XAPI="unix:" + pool.unix_path("xs1"))
    yield env, base
    pool.stop()


def complete(shell, *words):
    """COMPREPLY for the command line ``words`` (the last one is being completed)."""
    env, cwd = shell
    script = ". %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_halizard\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n" % (
        shlex.quote(SCRIPT), " ".join(shlex.quote(w) for w in words), len(words) - 1)
    out = subprocess.run(["bash", "--norc", "-c", script], env=env, cwd=str(cwd),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=30)
    assert out.stderr == ""
    return [line for line in out.stdout.splitlines() if line]


def test_subcommands_and_options(shell):
    assert {"status", "maintenance", "vm", "config", "import-ha-lizard", "simulate"} <= set(
        complete(shell, "halizard", ""))
    assert complete(shell, "halizard", "st") == ["status"]
    assert complete(shell, "halizard", "status", "--j") == ["--json"]
    assert complete(shell, "halizard", "vm", "") == ["list", "set"]
    assert complete(shell, "halizard", "maintenance", "o") == ["on", "off"]
    assert complete(shell, "halizard", "vm", "set", "db", "--restart", "b") == ["best-effort"]
    assert complete(shell, "halizard", "import-ha-lizard", "--d") == ["--dry-run"]
    assert complete(shell, "halizard", "al") == ["alert"]
    assert complete(shell, "halizard", "alert", "test", "--channel", "e") == ["email"]


def test_vm_names_with_spaces_come_back_quoted(shell):
    assert complete(shell, "halizard", "vm", "set", "my") == ["my\\ db", "my\\ web\\ server"]
    assert complete(shell, "halizard", "vm", "set", "my\\ w") == ["my\\ web\\ server"]
    assert complete(shell, "halizard", "vm", "set", '"my w') == ["my\\ web\\ server"]
    assert complete(shell, "halizard", "vm", "set", "my web server", "my\\ d") == ["my\\ db"]


def test_a_name_is_never_run_as_a_command(shell):
    assert complete(shell, "halizard", "vm", "set", "ev") == ["evil\\ \\$\\(touch\\ PWNED\\)"]
    assert not os.path.exists(os.path.join(str(shell[1]), "PWNED"))


def test_config_keys_values_and_host_names(shell):
    assert complete(shell, "halizard", "config", "set", "take") == ["takeover_delay"]
    assert complete(shell, "halizard", "config", "unset", "gateway_p") == ["gateway_policy"]
    assert complete(shell, "halizard", "config", "set", "gateway_policy", "m") == ["majority"]
    assert complete(shell, "halizard", "maintenance", "on", "--host", "") == ["xs1", "xs2"]


def test_the_helper_is_quiet_when_there_is_no_pool(capsys, tmp_path):
    code, out, err = run(capsys, "_complete", "vms", "--xapi", "unix:" + str(tmp_path / "none"))
    assert (code, out, err) == (1, "", "")
    assert run(capsys, "_complete", "what")[0] == 2
    assert "takeover_delay\n" in run(capsys, "_complete", "keys")[1]
