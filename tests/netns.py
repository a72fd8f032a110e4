"""Network namespaces for the runtime tests: built by the test, torn down by it, even on failure.

Every address lives in 198.18.0.0/15 (the benchmarking range) inside namespaces this helper
creates; nothing here touches the machine's own interfaces. ``in_netns`` runs a function in a
short-lived thread that has entered a namespace: a socket opened there (raw ICMP, netlink)
stays in that namespace for its whole life, while the test's own threads never leave the
machine's namespace.
"""
import itertools
import os
import subprocess
import threading
from typing import Any, Callable, Dict, List

import pytest

from simulations.lab.netns import enter, run  # one implementation for the lab and tests

_counter = itertools.count(1)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def in_netns(name: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` called in a thread that entered namespace ``name``; its result, or its error."""
    box: Dict[str, Any] = {}

    def body() -> None:
        try:
            enter(name)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body, name="netns-%s" % name)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        raise RuntimeError("setting up in namespace %s took over 10 s" % name)
    if "error" in box:
        raise box["error"]
    return box["value"]


class Namespaces:
    """Namespaces created for one test; ``close`` deletes them all (and their veths)."""

    def __init__(self) -> None:
        self.prefix = "hzt%d-%d" % (os.getpid(), next(_counter))
        self.names: List[str] = []

    def add(self, role: str) -> str:
        name = "%s-%s" % (self.prefix, role)
        run("ip", "netns", "add", name)
        self.names.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair from ``ns_a``/``if_a`` to ``ns_b``/``if_b`` (may be one namespace), up."""
        run("ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b,
            "netns", ns_b)
        run("ip", "-n", ns_a, "link", "set", if_a, "up")
        run("ip", "-n", ns_b, "link", "set", if_b, "up")

    def address(self, ns: str, interface: str, cidr: str) -> None:
        assert cidr.startswith("198.18.") or cidr.startswith("198.19."), cidr
        run("ip", "-n", ns, "addr", "add", cidr, "dev", interface)

    def ip(self, ns: str, *argv: str) -> str:
        return run("ip", "-n", ns, *argv)

    def run_in(self, ns: str, *argv: str) -> str:
        """A command run inside namespace ``ns`` (``ip netns exec``)."""
        return run("ip", "netns", "exec", ns, *argv)

    def close(self) -> None:
        errors = []
        for name in reversed(self.names):
            try:
                run("ip", "netns", "del", name)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        self.names = []
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture
def netns():
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.close()
