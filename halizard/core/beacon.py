"""The beacon: what a daemon says about itself in the payload of every echo request it sends.

The peer hears these requests anyway (the passive heartbeat), so it learns, without any other
channel, whether this host's pool.conf says master (which flips the instant a promotion is
requested, long before xapi restarts as master) and which mode its daemon is in. A rejoining
host uses it to avoid resuming as master while the peer has a promotion in flight.

A beacon is only ever a reason to wait: nothing is done *because* of a beacon that would not
be safe without it, so a lost, late or forged beacon can delay a decision but never make it
unsafe. (Both functions are pure and see a handful of distinct values: they are memoized,
because the loop calls them every cycle.)
"""
from functools import lru_cache
from typing import NamedTuple, Optional

PREFIX = "halizard/1"


class PeerState(NamedTuple):
    claims_master: bool
    mode: str


@lru_cache(maxsize=64)
def beacon(is_master: bool, mode: str) -> str:
    return "%s %s %s" % (PREFIX, "master" if is_master else "slave", mode)


@lru_cache(maxsize=64)
def parse_beacon(text: Optional[str]) -> Optional[PeerState]:
    """The peer's state from a beacon, or None for no beacon or one that is not ours."""
    if not text:
        return None
    parts = text.split()
    if len(parts) != 3 or parts[0] != PREFIX or parts[1] not in ("master", "slave"):
        return None
    return PeerState(parts[1] == "master", parts[2])
