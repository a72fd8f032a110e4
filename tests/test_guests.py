"""The local toolstack (halizard.runtime.guests) against a fake ``xl`` on PATH that keeps its
domains in files, and the parser against xl's real output formats."""
import os
import time

import pytest

from halizard.effects import DestroyGuests, GuestList, ListGuests
from halizard.runtime.guests import XlError, XlToolstack, parse_xl_list

pytestmark = pytest.mark.runtime

HEADER = ("Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID"
          "                            Reason-Code\tSecurity Label")
DOM0 = "00000000-0000-0000-0000-000000000000"
WEB = "3f2a9c1e-6b1d-4c55-9a0e-0d6d1c2b7a11"
DB = "8c0e5b7d-2f4a-4e1b-b3c9-5a6f7e8d9c02"
PAUSED = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e53"
DYING = "d4c3b2a1-0f9e-4d8c-b7a6-958473625104"


def row(name, domid, state, uuid, reason="       -"):
    return "%-40s %5d %5d %5d     %s  %8.1f %s %s" % (name, domid, 4096, 2, state, 12.5, uuid,
                                                     reason)


DOMAINS = [
    (0, row("Domain-0", 0, "r-----", DOM0)),
    (3, row("web server (prod)", 3, "-b----", WEB)),
    (7, row("db", 7, "r-----", DB)),
    (9, row("(null)", 9, "--p---", PAUSED)),
    (11, row("old", 11, "---s-d", DYING, "       0")),
]

FAKE_XL = r"""#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/calls"
mode=$(cat "$here/mode" 2>/dev/null)
case "$1" in
  list)
    case "$mode" in
      hang) exec sleep 60 ;;
      hang-child) sleep 60; exit 0 ;;
      fail) echo "libxl: error: cannot connect to xenstore" >&2; exit 1 ;;
      garbage) echo "Name ID"; echo "something else entirely"; exit 0 ;;
    esac
    cat "$here/header" "$here"/domains/*
    ;;
  destroy)
    [ "$2" = 0 ] && { echo "cannot destroy privileged domain 0" >&2; exit 1; }
    grep -qx "$2" "$here/hang-destroy" 2>/dev/null && exec sleep 60
    grep -qx "$2" "$here/stubborn" 2>/dev/null && exit 0
    rm "$here/domains/$(printf %03d "$2")"
    ;;
  *) exit 2 ;;
esac
"""


class FakeXl:
    def __init__(self, path):
        self.dir = path
        self.write("header", HEADER + "\n")
        os.mkdir(os.path.join(path, "domains"))  # one file per domain: destroys run in parallel
        for domid, line in DOMAINS:
            self.write(os.path.join("domains", "%03d" % domid), line + "\n")
        script = os.path.join(path, "xl")
        with open(script, "w") as f:
            f.write(FAKE_XL)
        os.chmod(script, 0o755)

    def write(self, name, text):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def calls(self):
        try:
            with open(os.path.join(self.dir, "calls")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []


@pytest.fixture
def xl(tmp_path, monkeypatch):
    fake = FakeXl(str(tmp_path))
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    return fake


def test_the_guests_are_the_live_domains_but_domain_0(xl):
    guests = XlToolstack().list_guests(ListGuests(timeout=2.0))
    assert guests == GuestList(tuple(sorted([WEB, DB, PAUSED])), ok=True)
    assert xl.calls() == ["list -v"]


def test_the_parser_reads_names_with_spaces_states_and_newer_columns():
    text = "\n".join([HEADER] + [r for _, r in DOMAINS]) + "\n"
    domains = parse_xl_list(text)
    assert [(d.name, d.domid, d.guest) for d in domains] == [
        ("Domain-0", 0, False), ("web server (prod)", 3, True), ("db", 7, True),
        ("(null)", 9, True), ("old", 11, False)]
    assert domains[4].dying and not domains[2].dying
    # Newer xl adds a capabilities column; a crashed domain shows 'c' in the fifth flag.
    newer = HEADER + "      Capabilities\n" + row("Domain-0", 0, "r-----", DOM0) + \
        " privileged hardware\n" + row("crashed", 4, "---sc-", WEB) + "                 -\n"
    assert [d.uuid for d in parse_xl_list(newer) if d.guest] == [WEB]
    for bad in ("", "Name\nDomain-0 0 4096 2 r----- 1.0\n",  # no UUID: not -v output
                HEADER + "\n" + row("db", 7, "r-----", DB) + "\n"):  # no domain 0
        with pytest.raises(XlError):
            parse_xl_list(bad)


def test_the_self_fence_destroys_every_guest_and_never_domain_0(xl):
    toolstack = XlToolstack(clock=lambda: 100.0)
    remaining = toolstack.destroy_guests(DestroyGuests(valid_until=100.0, timeout=5.0))
    assert remaining == GuestList((), ok=True)
    calls = xl.calls()
    assert calls[0] == "list -v" and calls[-1] == "list -v"
    assert sorted(calls[1:-1]) == ["destroy 3", "destroy 7", "destroy 9"]
    assert XlToolstack().list_guests(ListGuests(2.0)).uuids == ()


def test_a_guest_that_survives_is_reported(xl):
    xl.write("stubborn", "7\n")
    remaining = XlToolstack().destroy_guests(DestroyGuests(valid_until=1e12, timeout=5.0))
    assert remaining == GuestList((DB,), ok=True)


def test_a_stale_self_fence_does_nothing(xl):
    toolstack = XlToolstack(clock=lambda: 100.0)
    assert toolstack.destroy_guests(DestroyGuests(99.0, 5.0)) == GuestList((), ok=False)
    assert xl.calls() == []


def test_a_hung_destroy_is_killed_and_the_rest_still_reported_by_the_deadline(xl):
    xl.write("hang-destroy", "3\n")
    began = time.monotonic()
    remaining = XlToolstack().destroy_guests(DestroyGuests(valid_until=1e12, timeout=1.2))
    elapsed = time.monotonic() - began
    assert remaining == GuestList((WEB,), ok=True)
    assert elapsed < 1.2 + 0.5


@pytest.mark.parametrize("mode", ["hang", "hang-child", "fail", "garbage"])
def test_a_toolstack_that_hangs_fails_or_babbles_is_not_an_answer(xl, mode):
    xl.write("mode", mode)
    began = time.monotonic()
    assert XlToolstack().list_guests(ListGuests(timeout=0.4)) == GuestList((), ok=False)
    assert time.monotonic() - began < 0.4 + 0.5  # the hung one and its child were killed
    assert XlToolstack().destroy_guests(DestroyGuests(1e12, 0.6)) == GuestList((), ok=False)
    assert not [c for c in xl.calls() if c.startswith("destroy")]


def test_a_missing_xl_is_not_an_answer(tmp_path):
    missing = XlToolstack(xl=str(tmp_path / "no-xl"))
    assert missing.list_guests(ListGuests(1.0)) == GuestList((), ok=False)
    assert missing.destroy_guests(DestroyGuests(1e12, 1.0)) == GuestList((), ok=False)
