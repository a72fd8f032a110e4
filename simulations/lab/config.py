"""The lab's configuration: timing presets and each host's daemon configuration file.

Both hosts get the same timings (the rules are agreed in advance). ``short`` keeps the whole
lab suite within minutes while passing halizard.core.timing's inequalities with the lab's
margins; ``default`` is halizard's own defaults, the numbers an operator gets.
"""
import os
import shlex
import sys
from typing import Any, Dict, List

from halizard.core.config import Config, Loaded, load_config
from halizard.toml import dumps
from simulations.lab.layout import GATEWAY, HOSTS, XAPI_PORT, Layout, host_address, nic, peer_of

# Short lab timings. A cycle is at most 0.8 s (probe window 0.3 s, xapi reads 0.4 s, twice);
# lease and watchdog keep 3 s so that a busy two-core machine does not fence a healthy host.
SHORT: Dict[str, Any] = {
    "probe_interval": "500ms",
    "probe_count": 3,
    "probe_spacing": "50ms",
    "probe_timeout": "200ms",
    "xapi_timeout": "400ms",
    "peer_timeout": "3s",
    "lease_timeout": "3s",
    "watchdog_timeout": "3s",
    "promote_delay": "6s",
    "takeover_delay": "8s",
    "safety_margin": "500ms",
}
TIMINGS: Dict[str, Dict[str, Any]] = {"short": SHORT, "default": {}}
# Boot of a crashed or reset host, real seconds (the simulator's default is about a minute).
# Longer than the takeover delay, as on real hardware: a reset host that came back before its
# peer noticed would test nothing.
BOOT_TIME = {"short": (15.0, 16.0), "default": (30.0, 35.0)}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XL_SCRIPT = os.path.join(REPO, "simulations", "lab", "xl.py")
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def timing_table(timings: str) -> Dict[str, Any]:
    if timings not in TIMINGS:
        raise ValueError("timings must be one of %s, not %r" % (", ".join(TIMINGS), timings))
    return dict(TIMINGS[timings])


def core_config(timings: str, second_link: bool = False) -> Loaded:
    """The timings validated as halizard.core.config does (the daemon's file holds more keys,
    which the daemon's own loader reads)."""
    table: Dict[str, Any] = {"peer_addresses": [host_address(HOSTS[1], n)
                                                for n in ([0, 1] if second_link else [0])],
                             "gateway_addresses": [GATEWAY]}
    table.update(timing_table(timings))
    return load_config(table, source="lab timings %r" % timings)


def host_table(layout: Layout, host: str, timings: str, python: str) -> Dict[str, Any]:
    """The daemon configuration of ``host`` (see the daemon's configuration reference)."""
    peer = peer_of(host)
    xl = [python, "-S", XL_SCRIPT, "--control", layout.control_socket, "--host", host]
    table: Dict[str, Any] = {
        "peer_addresses": [host_address(peer, n) for n in layout.networks],
        "gateway_addresses": [GATEWAY],
        "interfaces": [nic(n) for n in layout.networks],
        "watchdog_device": layout.host_file(host, "watchdog"),
        "xapi_url": "unix:" + layout.host_file(host, "xapi"),
        "xapi_peer_url": "http://{address}:%d/" % XAPI_PORT,
        "xapi_user": "root",
        "xapi_password_file": layout.password_file,
        "state_file": layout.host_file(host, "state.json"),
        "inventory_file": layout.host_file(host, "inventory"),
        "pool_conf_file": layout.host_file(host, "pool.conf"),
        "xl_command": " ".join(shlex.quote(a) for a in xl),
        "host_reset": "record:" + layout.host_file(host, "reset"),
        "system_state_command": "cat " + shlex.quote(layout.host_file(host, "system-state")),
    }
    table.update(timing_table(timings))
    return table


def check_paths(layout: Layout) -> List[str]:
    """Problems with the lab directory: the Unix sockets must fit in sun_path."""
    longest = max(len(layout.host_file(h, "xapi")) for h in HOSTS)
    longest = max(longest, len(layout.control_socket))
    if longest > UNIX_PATH_MAX:
        return ["lab directory %s is too deep: its Unix socket paths would be %d bytes, the "
                "kernel takes %d" % (layout.dir, longest, UNIX_PATH_MAX)]
    return []


def write_host_config(layout: Layout, host: str, timings: str, python: str = sys.executable
                      ) -> str:
    path = layout.config_file(host)
    with open(path, "w") as handle:
        handle.write("# halizard lab host %s (written by python -m simulations.lab up)\n" % host)
        handle.write(dumps(host_table(layout, host, timings, python)))
    return path


def liveness_bound(config: Config) -> float:
    """How long after a fault the protected VMs must run again: the simulator's default
    liveness bound (simulations.runner), the slowest takeover path plus a minute of slack."""
    from simulations.runner import default_liveness_bound

    return default_liveness_bound(config)
