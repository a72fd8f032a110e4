"""systemd integration (halizard.runtime.systemd): sd_notify datagrams received on sockets the
tests bind, both through the pure-Python fallback and through systemd-python; journal records
as stderr lines, and as journald's native protocol on a socket in a private mount namespace."""
import io
import os
import socket
import subprocess
import sys

import pytest

from halizard.runtime import systemd
from halizard.runtime.systemd import Journal, Notifier, one_line, watchdog_interval
from tests.netns import needs_root

pytestmark = pytest.mark.runtime
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINDINGS = [False] + ([True] if systemd.HAVE_BINDING else [])


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path, monkeypatch):
    """A datagram socket playing systemd's notify socket; NOTIFY_SOCKET names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = "@halizard-test-%d-%d" % (os.getpid(), id(sock))
        sock.bind("\0" + name[1:])
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    yield sock
    sock.close()


def received(sock):
    return sock.recv(4096).decode()


@pytest.mark.parametrize("binding", BINDINGS, ids=lambda b: "binding" if b else "fallback")
def test_notifications_arrive(notify_socket, binding):
    notifier = Notifier(use_binding=binding)
    assert notifier.enabled
    assert notifier.ready("starting: no contact yet")
    assert received(notify_socket) == "READY=1\nSTATUS=starting: no contact yet"
    assert notifier.status("survivor: peer silent for 3.2 s\n(gateway visible)")
    assert received(notify_socket) == "STATUS=survivor: peer silent for 3.2 s (gateway visible)"
    assert notifier.watchdog()
    assert received(notify_socket) == "WATCHDOG=1"
    assert notifier.stopping()
    assert received(notify_socket) == "STOPPING=1"


@pytest.mark.parametrize("binding", BINDINGS, ids=lambda b: "binding" if b else "fallback")
def test_without_systemd_nothing_is_sent_and_nothing_fails(monkeypatch, tmp_path, binding):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier(use_binding=binding)
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))  # systemd's socket vanished
    assert not notifier.watchdog()
    with pytest.raises(ValueError):
        notifier.notify("READY=1\nMAINPID=1")


def test_status_text_is_one_bounded_line():
    assert one_line("  a\tb\n c ") == "a b c"
    long = one_line("x" * 5000)
    assert len(long) == 1024 and long.endswith("...")


def test_watchdog_interval_is_half_of_watchdog_sec():
    mine = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": mine}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_journal_lines_without_the_binding():
    out = io.StringIO()
    journal = Journal(use_binding=False, stream=out)
    journal.decision("survivor", "peer silent for 3.2 s; takeover at 12 s", 3.2, 0.25)
    journal.record("watchdog refused", systemd.WARNING, HALIZARD_DETAIL="STALE")
    assert out.getvalue().splitlines() == [
        "<6>survivor: peer silent for 3.2 s; takeover at 12 s [HALIZARD_GATEWAY_SEEN_AGO=0.250 "
        "HALIZARD_MODE=survivor HALIZARD_PEER_SEEN_AGO=3.200]",
        "<4>watchdog refused [HALIZARD_DETAIL=STALE]",
    ]
    plain = io.StringIO()
    Journal(use_binding=False, stream=plain, priority_prefix=False).decision(
        "starting", "no contact yet", None, None)
    assert plain.getvalue().startswith("starting: no contact yet [")
    assert "HALIZARD_PEER_SEEN_AGO=never" in plain.getvalue()
    with pytest.raises(ValueError, match="field names"):
        journal.record("x", halizard_mode="lower case")
    with pytest.raises(ValueError, match="field names"):
        journal.record("x", PRIORITY="2")


JOURNALD = r"""
import socket, sys
from halizard.runtime.systemd import Journal
server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
import os
os.makedirs("/run/systemd/journal")
server.bind("/run/systemd/journal/socket")
server.settimeout(5)
Journal(use_binding=True).decision("isolated", "lease expired\nno peer, no gateway", 6.5, None)
sys.stdout.buffer.write(server.recv(65536))
"""


@needs_root
@pytest.mark.skipif(not systemd.HAVE_BINDING, reason="systemd-python is not installed")
def test_journal_records_carry_structured_fields():
    """A private mount namespace with a tmpfs on /run, where a socket plays journald."""
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs halizard-test /run && exec "$0" -c "$1"', sys.executable, JOURNALD],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    fields = _native(done.stdout)
    assert fields["MESSAGE"] == "isolated: lease expired\nno peer, no gateway"
    assert fields["HALIZARD_MODE"] == "isolated"
    assert fields["HALIZARD_REASON"] == "lease expired\nno peer, no gateway"
    assert fields["HALIZARD_PEER_SEEN_AGO"] == "6.500"
    assert fields["HALIZARD_GATEWAY_SEEN_AGO"] == "never"
    assert fields["PRIORITY"] == "6" and fields["SYSLOG_IDENTIFIER"] == "halizard"


def _native(data):
    """journald's native protocol: KEY=value lines, or KEY, a 64-bit length and the value."""
    fields = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            data = rest
        else:
            key, size = line, int.from_bytes(rest[:8], "little")
            value, data = rest[8:8 + size], rest[8 + size + 1:]
        fields[key.decode()] = value.decode()
    return fields
