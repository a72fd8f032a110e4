"""The timing rules both hosts agree on, and the inequalities that make them safe.

Notation (seconds on monotonic clocks; rho is the largest clock-rate error, from max_drift_ppm):

    Wp  probe window     = (probe_count - 1) * probe_spacing + probe_timeout
    C   longest cycle    = max(probe_interval, max(Wp, xapi_timeout) + xapi_timeout)
                           (probe and xapi reads run in parallel, then one batch of actions)
    K   detection skew   = C + probe_timeout
                           how much later than the survivor's last evidence of the peer the peer
                           itself may still have had contact with someone: the peer probes at
                           least once per cycle, and one-way latency stays under probe_timeout/2
    I   lease_timeout    an isolated host self-fences once it has had no contact for I
    W   watchdog_timeout the watchdog is fed only while the lease is held, so a hung isolated
                           host is reset at most W after its lease expired

Main inequality (the survivor's takeover delay T):

    T > (1 + rho) * (K + (I + W) / (1 - rho)) + safety_margin

Proof sketch: let x be the isolated host's last contact with anyone. It records contact at the
*start* of the round that saw it, so its lease expires by x + I/(1-rho) in true time; the
watchdog, fed only while the lease holds (checked again at the moment of feeding), resets the
host by x + (I + W)/(1 - rho). The survivor records its evidence of the peer at the *end* of the
round, r >= x - K, and acts only when its own clock shows T since then, which is at least
r + T/(1 + rho) in true time. The inequality makes that later than the guests' certain death.
The bound r >= x - K needs the survivor to have been able to hear all along, so silence is only
counted while the survivor itself holds its lease: a host that lost all contact starts its
silence clock again from the moment it regains it.

Promotion (a slave becoming pool master) needs only the isolated master to have stopped acting
as master, which it does at the first cycle after its lease expires:

    promote_delay > (1 + rho) * (K + I / (1 - rho) + C) + safety_margin

The remaining rules keep healthy hosts quiet: the watchdog outlasts a cycle, the lease and the
peer timeout outlast the gap between two rounds, and with a fence agent the non-master waits long
enough for the master's fence to land first.
"""
from dataclasses import dataclass
from typing import List, Tuple

from halizard.core.config import Config, Problem
from halizard.core.units import format_duration

QUICK_WAIT = 0.1  # how long a round waits for replies from a peer that is already silent


def deadline_lead(config: Config) -> float:
    """How long before a deadline (lease expiry, promotion, takeover, fence) the round that
    decides on it begins: its last request goes out QUICK_WAIT before the deadline, so that its
    decision, made when the round ends, falls on the deadline."""
    return (config.probe_count - 1) * config.probe_spacing + QUICK_WAIT


@dataclass(frozen=True)
class TimingBounds:
    rho: float
    probe_window: float
    cycle_max: float
    skew: float
    takeover_required: float
    promote_required: float
    keep_up_required: float  # what watchdog, lease and peer timeouts must exceed: one cycle
    fence_delay_required: float
    isolation_tolerance: float
    freeze_tolerance: float
    fence_tolerance: float  # with a fence agent: a peer silent shorter than this is never fenced


def bounds(config: Config) -> TimingBounds:
    rho = config.max_drift_ppm * 1e-6
    window = config.probe_window
    cycle = max(config.probe_interval, max(window, config.xapi_timeout) + config.xapi_timeout)
    skew = cycle + config.probe_timeout
    margin = config.safety_margin
    stretch = (1.0 + rho) / (1.0 - rho)
    lead = deadline_lead(config)
    reads = max(window, config.xapi_timeout)
    return TimingBounds(
        rho=rho,
        probe_window=window,
        cycle_max=cycle,
        skew=skew,
        takeover_required=(1.0 + rho)
        * (skew + (config.lease_timeout + config.watchdog_timeout) / (1.0 - rho))
        + margin,
        promote_required=(1.0 + rho) * (skew + config.lease_timeout / (1.0 - rho) + cycle) + margin,
        keep_up_required=cycle * stretch + margin,
        fence_delay_required=config.fence_timeout + skew + margin,
        # Shortest isolation, freeze or stall that may cause a self-fence or watchdog reset, and
        # shortest silence of the peer that may make the fence agent fire: anything shorter
        # never does (docs/ARCHITECTURE.md section 6, "Tolerances"). The oracle classifies
        # fences with the first two; exploration expects no fence below all three.
        isolation_tolerance=(config.lease_timeout - lead) / (1.0 + rho) - cycle / (1.0 - rho),
        freeze_tolerance=config.watchdog_timeout / (1.0 + rho) - (cycle + reads) / (1.0 - rho),
        fence_tolerance=(config.peer_timeout - lead) / (1.0 + rho) - cycle / (1.0 - rho),
    )


KEEP_UP = (
    ("watchdog_timeout", "a healthy host would be reset between two feeds"),
    ("lease_timeout", "a host with working links could lose its lease between two rounds"),
    ("peer_timeout", "a healthy peer could look lost between two rounds"),
)


def _f(value: float) -> str:
    return "%.3fs" % value


def check_timing(config: Config) -> List[Tuple[str, Problem]]:
    """Every timing rule as ("error" | "warning", Problem), each with its numbers."""
    b = bounds(config)
    out: List[Tuple[str, Problem]] = []
    margin = config.safety_margin

    for key in ("probe_interval", "probe_spacing", "probe_timeout", "peer_timeout",
                "lease_timeout", "watchdog_timeout", "promote_delay", "takeover_delay",
                "xapi_timeout", "task_timeout", "fence_timeout"):
        if getattr(config, key) <= 0:
            out.append(("error", Problem(key, "must be longer than zero")))
    if out:
        return out

    if config.watchdog_timeout != int(config.watchdog_timeout):
        out.append(("error", Problem(
            "watchdog_timeout", "must be whole seconds (the Linux watchdog takes integer seconds), "
            "got %s" % format_duration(config.watchdog_timeout))))

    if not config.takeover_delay > b.takeover_required:
        out.append(("error", Problem(
            "takeover_delay",
            "unsafe: the survivor could restart VMs while the isolated host may still run them.\n"
            "  need takeover_delay > (1 + rho) * (skew + (lease_timeout + watchdog_timeout) / (1 - rho))"
            " + safety_margin\n"
            "       %s > (1 + %g) * (%s + (%s + %s) / (1 - %g)) + %s = %s\n"
            "  raise takeover_delay or lower lease_timeout / watchdog_timeout"
            % (_f(config.takeover_delay), b.rho, _f(b.skew), _f(config.lease_timeout),
               _f(config.watchdog_timeout), b.rho, _f(margin), _f(b.takeover_required)))))

    if not config.promote_delay > b.promote_required:
        out.append(("error", Problem(
            "promote_delay",
            "unsafe: a slave could become pool master while the isolated master still acts as one.\n"
            "  need promote_delay > (1 + rho) * (skew + lease_timeout / (1 - rho) + cycle) + safety_margin\n"
            "       %s > (1 + %g) * (%s + %s / (1 - %g) + %s) + %s = %s"
            % (_f(config.promote_delay), b.rho, _f(b.skew), _f(config.lease_timeout), b.rho,
               _f(b.cycle_max), _f(margin), _f(b.promote_required)))))

    if config.promote_delay > config.takeover_delay:
        out.append(("error", Problem(
            "promote_delay", "must not exceed takeover_delay (%s > %s): a slave survivor must be "
            "pool master before it can take over" % (_f(config.promote_delay),
                                                     _f(config.takeover_delay)))))

    # A healthy host must outlast the gap between two of its own cycles.
    for key, consequence in KEEP_UP:
        value = getattr(config, key)
        if not value > b.keep_up_required:
            out.append(("error", Problem(
                key, "too short: %s.\n  need %s > cycle * (1 + rho) / (1 - rho) + safety_margin: "
                     "%s > %s" % (consequence, key, _f(value), _f(b.keep_up_required)))))

    if not config.peer_timeout < config.promote_delay:
        out.append(("error", Problem(
            "peer_timeout", "must be shorter than promote_delay (%s >= %s): a host first notices "
            "its peer is lost, then waits out the delays" % (_f(config.peer_timeout),
                                                              _f(config.promote_delay)))))

    if config.probe_timeout > config.probe_interval:
        out.append(("error", Problem(
            "probe_timeout", "must not exceed probe_interval (%s > %s)"
            % (_f(config.probe_timeout), _f(config.probe_interval)))))

    if config.fence_agent is not None:
        if not config.fence_delay > b.fence_delay_required:
            out.append(("error", Problem(
                "fence_delay",
                "too short for a deterministic tie-break: when the hosts lose each other but both "
                "see the gateway, the master's fence must land before the slave fires its own.\n"
                "  need fence_delay > fence_timeout + skew + safety_margin: %s > %s"
                % (_f(config.fence_delay), _f(b.fence_delay_required)))))
    elif len(config.peer_addresses) < 2:
        out.append(("warning", Problem(
            "peer_addresses",
            "only one heartbeat path and no fence agent: if the two hosts lose each other while "
            "both still reach the gateway (scenario N01: a broken inter-host link or switch ACL), "
            "each will take over the other's VMs and they will run twice. Add a second heartbeat "
            "path (peer_addresses on an independent network) or a fence_agent.")))
    return out


def explain(config: Config) -> str:
    """A human-readable account of the timing rules with this configuration's numbers."""
    b = bounds(config)
    lines = [
        "probe window            %s  ((probe_count - 1) * probe_spacing + probe_timeout)"
        % _f(b.probe_window),
        "longest cycle           %s" % _f(b.cycle_max),
        "detection skew          %s" % _f(b.skew),
        "takeover_delay          %s > %s required" % (_f(config.takeover_delay), _f(b.takeover_required)),
        "promote_delay           %s > %s required" % (_f(config.promote_delay), _f(b.promote_required)),
        "watchdog_timeout        %s > %s required" % (_f(config.watchdog_timeout), _f(b.keep_up_required)),
        "lease_timeout           %s > %s required" % (_f(config.lease_timeout), _f(b.keep_up_required)),
        "peer_timeout            %s > %s required" % (_f(config.peer_timeout), _f(b.keep_up_required)),
        "isolation never fenced  when shorter than %s" % _f(b.isolation_tolerance),
        "freeze never fenced     when shorter than %s" % _f(b.freeze_tolerance),
    ]
    if config.fence_agent is not None:
        lines.append("fence_delay             %s > %s required"
                     % (_f(config.fence_delay), _f(b.fence_delay_required)))
        lines.append("peer silence never fenced by the agent when shorter than %s"
                     % _f(b.fence_tolerance))
    return "\n".join(lines)


def read_budget(config: Config) -> float:
    """The longest a cycle's probe and reads can take without a stall."""
    return max(config.probe_window, config.xapi_timeout) + config.probe_interval
