"""Where everything of one lab lives: namespace names, addresses, interface names and files.

One object computes every name from the lab directory and a prefix, so that the `up` command,
the controller, the `down` command (possibly after the controller crashed) and the tests agree
without passing names around. The prefix is random per lab and starts every namespace name, so
parallel labs, or labs left behind by a crash, never clash; ``manifest.json`` in the lab
directory records it (and every namespace as it is created) for `down`.

Addressing (all in 198.18.0.0/15, the benchmarking range, only inside the lab's namespaces):
heartbeat network n (0: the management network, 1: the optional second link) is 198.18.n.0/24,
host i has 198.18.n.(11 + i), the gateway 198.18.0.1 on the management network. These are the
simulator's own lab addresses (simulations.runner.lab_address).
"""
import json
import os
import secrets
from typing import Any, Dict, List, NamedTuple, Optional

HOSTS = ("xs1", "xs2")
MASTER = "xs1"
GATEWAY = "198.18.0.1"
PREFIX_LENGTH = 24
XAPI_PORT = 80  # the forwarder's port in each host namespace (xapi's own plain-HTTP port)
MANIFEST = "manifest.json"
NETNS_DIR = "/run/netns"


def host_address(host: str, network: int = 0) -> str:
    return "198.18.%d.%d" % (network, 11 + HOSTS.index(host))


def peer_of(host: str) -> str:
    return HOSTS[1] if host == HOSTS[0] else HOSTS[0]


def nic(network: int) -> str:
    """The host's interface on heartbeat network ``network``."""
    return "eth%d" % network


class Layout:
    """Names and paths of one lab, from its directory and prefix."""

    def __init__(self, directory: str, prefix: str, second_link: bool = False) -> None:
        self.dir = os.path.abspath(directory)
        self.prefix = prefix
        self.second_link = second_link

    @property
    def networks(self) -> List[int]:
        return [0, 1] if self.second_link else [0]

    # --- namespaces and interfaces ------------------------------------------------------------

    def ns(self, role: str) -> str:
        """Namespace of ``role``: a host name, "sw" (the switch), "gw" or "ctl" (the
        controller, with only its loopback)."""
        return "%s-%s" % (self.prefix, role)

    @property
    def namespaces(self) -> List[str]:
        return [self.ns(r) for r in ("sw", "gw", "ctl") + HOSTS]

    @staticmethod
    def bridge(network: int) -> str:
        return "br%d" % network

    @staticmethod
    def port(owner: str, network: int) -> str:
        """The switch-side end of ``owner``'s veth on ``network`` (owner: a host or "gw")."""
        return "%sp%d" % (owner, network)

    # --- files ----------------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def host_file(self, host: str, suffix: str) -> str:
        return self.path("%s.%s" % (host, suffix))

    @property
    def control_socket(self) -> str:
        return self.path("control.sock")

    @property
    def domain_log(self) -> str:
        return self.path("domains.log")

    @property
    def events_log(self) -> str:
        return self.path("events.log")

    @property
    def controller_log(self) -> str:
        return self.path("controller.log")

    @property
    def password_file(self) -> str:
        return self.path("pool-password")

    def config_file(self, host: str) -> str:
        return self.host_file(host, "toml")


# --- the manifest ---------------------------------------------------------------------------------


def new_prefix() -> str:
    """Unique enough for labs on one machine, short enough for namespace names."""
    return "hzl" + secrets.token_hex(3)


def manifest_path(directory: str) -> str:
    return os.path.join(os.path.abspath(directory), MANIFEST)


def read_manifest(directory: str) -> Optional[Dict[str, Any]]:
    try:
        with open(manifest_path(directory)) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or "prefix" not in data:
        raise ValueError("%s: not a lab manifest" % manifest_path(directory))
    return data


def write_manifest(directory: str, data: Dict[str, Any]) -> None:
    """Atomically: `down` after a crash must never read half a manifest."""
    path = manifest_path(directory)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Manifest(NamedTuple):
    layout: Layout
    data: Dict[str, Any]

    @classmethod
    def load(cls, directory: str) -> "Manifest":
        data = read_manifest(directory)
        if data is None:
            raise FileNotFoundError("%s: no lab here (no %s)" % (directory, MANIFEST))
        return cls(Layout(directory, data["prefix"], bool(data.get("second_link"))), data)
