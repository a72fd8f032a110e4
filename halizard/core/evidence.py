"""Contact bookkeeping: what a probe round proves, and when.

Each piece of evidence is recorded twice, and each rule uses the bound that is safe for it:

* the **lower** bound (the round's start, or when listening began) feeds the host's own lease:
  the lease may only be shorter than the truth, never longer, so a host never believes it was in
  contact later than it was (a stall after the reply arrived cannot stretch the lease);
* the **upper** bound (the round's end) feeds the survivor's silence clock: the peer may have
  been alive until then, so the survivor never counts silence from too early.
"""
from dataclasses import dataclass
from typing import Optional

from halizard.core.config import Config
from halizard.core.state import DaemonState, evolve
from halizard.effects import PathReport, ProbeReport


def gateway_policy_satisfied(policy: str, answered: int, total: int) -> bool:
    """The one definition of "sees the gateway", for the daemon and the simulator's oracle."""
    if total == 0:
        return False
    if policy == "all":
        return answered == total
    if policy == "majority":
        return answered * 2 > total
    return answered > 0


def _stamp(path: PathReport, report: ProbeReport) -> float:
    return report.finished if path.last_at is None else path.last_at


def _later(a: Optional[float], b: float) -> float:
    return b if a is None or b > a else a


def record_probe(config: Config, state: DaemonState, report: ProbeReport) -> DaemonState:
    changes = {}
    replied = any(p.replies > 0 for p in report.peer)
    heard = any(p.heard for p in report.peer)
    if replied or heard:
        lower = report.started if replied else report.heard_since
        upper = max(_stamp(p, report) for p in report.peer if p.replies > 0 or p.heard)
        changes["peer_lower"] = _later(state.peer_lower, lower)
        changes["peer_upper"] = _later(state.peer_upper, upper)
        changes["contact_lower"] = _later(state.contact_lower, lower)
    answering = [g for g in report.gateways if g.replies > 0]
    if gateway_policy_satisfied(config.gateway_policy, len(answering), len(report.gateways)):
        upper = max(_stamp(g, report) for g in answering)
        changes["gateway_upper"] = _later(state.gateway_upper, upper)
        changes["contact_lower"] = _later(changes.get("contact_lower", state.contact_lower),
                                          report.started)
    return evolve(state, **changes) if changes else state


@dataclass(frozen=True)
class Facts:
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
