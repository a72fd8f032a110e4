"""Contact bookkeeping: what a probe round proves, and when.

Each piece of evidence is recorded twice, and each rule uses the bound that is safe for it:

* the **lower** bound (the round's start, or when listening began) feeds the host's own lease:
  the lease may only be shorter than the truth, never longer, so a host never believes it was in
  contact later than it was (a stall after the reply arrived cannot stretch the lease);
* the **upper** bound (the round's end) feeds the survivor's silence clock: the peer may have
  been alive until then, so the survivor never counts silence from too early.
"""
from typing import Any, Dict, NamedTuple, Optional

from halizard.core.config import Config
from halizard.core.state import DaemonState, evolve
from halizard.effects import ProbeReport


def gateway_policy_satisfied(policy: str, answered: int, total: int) -> bool:
    """The one definition of "sees the gateway", for the daemon and the simulator's oracle."""
    if total == 0:
        return False
    if policy == "all":
        return answered == total
    if policy == "majority":
        return answered * 2 > total
    return answered > 0


def probe_changes(config: Config, state: DaemonState, report: ProbeReport,
                  changes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The state fields a probe round moves forward (only ever forward), added to ``changes``."""
    if changes is None:
        changes = {}
    replied = heard = False
    upper: Optional[float] = None
    for p in report.peer:
        if p.replies > 0 or p.heard:
            replied = replied or p.replies > 0
            heard = heard or p.heard
            stamp = report.finished if p.last_at is None else p.last_at
            if upper is None or stamp > upper:
                upper = stamp
    contact = state.contact_lower
    if upper is not None:
        lower = report.started if replied else report.heard_since
        if state.peer_lower is None or lower > state.peer_lower:
            changes["peer_lower"] = lower
        if state.peer_upper is None or upper > state.peer_upper:
            changes["peer_upper"] = upper
        if contact is None or lower > contact:
            contact = lower
    answered = 0
    gw_upper: Optional[float] = None
    for g in report.gateways:
        if g.replies > 0:
            answered += 1
            stamp = report.finished if g.last_at is None else g.last_at
            if gw_upper is None or stamp > gw_upper:
                gw_upper = stamp
    if gw_upper is not None and gateway_policy_satisfied(config.gateway_policy, answered,
                                                         len(report.gateways)):
        if state.gateway_upper is None or gw_upper > state.gateway_upper:
            changes["gateway_upper"] = gw_upper
        if contact is None or report.started > contact:
            contact = report.started
    if contact is not None and contact != state.contact_lower:
        changes["contact_lower"] = contact
    return changes


def record_probe(config: Config, state: DaemonState, report: ProbeReport) -> DaemonState:
    changes = probe_changes(config, state, report)
    return evolve(state, **changes) if changes else state


def heard_in_discarded_round(config: Config, state: DaemonState, report: ProbeReport
                             ) -> DaemonState:
    """What a probe round thrown away after a pause (halizard.loop) still proves: when the peer
    and the gateway were last heard (the upper bounds). The survivor's silence clock must count
    from its last evidence of the peer, wherever it came from: the timing proof bounds the
    peer's last contact by it (without this, a round discarded just as the peer fell silent hid
    up to a cycle of evidence, and the fence agent started before peer_timeout after the last
    packet from the peer: I7, found by the explorer). The lower bounds are not kept: the lease,
    and the lease gap of R006, are measured between rounds decided on."""
    changes = probe_changes(config, state, report)
    kept = {k: v for k, v in changes.items() if k in ("peer_upper", "gateway_upper")}
    return evolve(state, **kept) if kept else state


def lease_gap(config: Config, before: DaemonState, after: DaemonState) -> bool:
    """True when this host's own contact has a hole between two decisions: the newest evidence
    begins after the lease held at the previous decision had expired. Nothing but a stall or a
    freeze longer than the lease produces one (the daemon decides every cycle, and any lapse
    seen at a decision is recorded then). While in the hole this host heard nothing, so its
    silence clock must start again, as after any loss of contact (regression R006)."""
    old = before.contact_lower
    new = after.contact_lower
    return old is not None and new is not None and new > old + config.lease_timeout


class Facts(NamedTuple):
    """What the evidence means at one moment."""

    now: float
    lease_held: bool
    lease_expires: Optional[float]
    isolated: bool  # lease lost (or never gained within lease_timeout of starting)
    peer_visible: bool
    gateway_visible: bool
    silence: float  # how long the peer has certainly been silent (from the upper bound)
    since_contact: Optional[float]


def facts(config: Config, state: DaemonState, now: float) -> Facts:
    if state.contact_lower is not None:
        expires: Optional[float] = state.contact_lower + config.lease_timeout
        held = now <= expires  # type: ignore[operator]
        isolated = not held
        since_contact: Optional[float] = now - state.contact_lower
    else:
        expires = None
        held = False
        isolated = now - state.started_at > config.lease_timeout
        since_contact = None
    peer_visible = state.peer_upper is not None and now - state.peer_upper <= config.peer_timeout
    gateway_visible = (
        state.gateway_upper is not None and now - state.gateway_upper <= config.peer_timeout
    )
    seen = state.peer_upper if state.peer_upper is not None else state.started_at
    silence = now - max(seen, state.silence_floor)
    return Facts(now, held, expires, isolated, peer_visible, gateway_visible, silence,
                 since_contact)
