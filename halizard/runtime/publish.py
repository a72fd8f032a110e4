"""The daemon's report in the pool database, for `halizard status` on either host.

Each daemon writes one JSON value, ``halizard.status.<host uuid>`` in the pool's other-config
(visible in XenCenter and Xen Orchestra too): its mode, the reason, when, and how long ago it
last heard the peer and the gateway. It is reporting, not deciding: written from a background
thread, never holding up a cycle, on every change of mode and every INTERVAL seconds otherwise
(so a report older than a few intervals means the daemon is not running or cannot reach the
master). A slave writes through its master; an orphaned slave cannot write, and its report
goes stale, which is itself the news.
"""
import json
import logging
import threading
import time
from typing import Callable, Optional

from halizard import __version__
from halizard.core.state import Decision
from halizard.effects import LOCAL, POOL_SESSION, PoolRole, XapiCall
from halizard.runtime.xapi import XapiAdapter

log = logging.getLogger("halizard.publish")

KEY_PREFIX = "halizard.status."
INTERVAL = 240.0  # s between reports of an unchanged mode
RETRY = 30.0  # s after a failed write
CALL_TIMEOUT = 5.0  # s per call: reporting may be slow, it is never waited on


def status_key(host_uuid: str) -> str:
    return KEY_PREFIX + host_uuid


def report_value(decision: Decision, wall: float) -> str:
    s = decision.state
    return json.dumps({
        "state": decision.mode.value,
        "reason": decision.reason,
        "at": round(wall, 1),
        "peer_seen_ago": None if s.peer_upper is None else round(max(0.0, decision.at -
                                                                     s.peer_upper), 1),
        "gateway_seen_ago": None if s.gateway_upper is None else round(max(
            0.0, decision.at - s.gateway_upper), 1),
        "version": __version__,
    }, sort_keys=True)


class StatusPublisher:
    def __init__(self, xapi: XapiAdapter, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.xapi = xapi
        self.monotonic = monotonic
        self.wall = wall
        self._busy = False
        self._mode: Optional[str] = None
        self._due = 0.0
        self._pool_ref: Optional[str] = None
        self._lock = threading.Lock()
        self.writes = 0

    def offer(self, decision: Decision, role: Optional[PoolRole]) -> None:
        """Called with every decision; starts a write when one is due and none is running."""
        if role is None:
            return
        now = self.monotonic()
        with self._lock:
            if self._busy or (decision.mode.value == self._mode and now < self._due):
                return
            self._busy = True
        value = report_value(decision, self.wall())
        address = LOCAL if role.is_master else role.master_address
        threading.Thread(target=self._write, args=(role.host_uuid, value, address,
                                                   decision.mode.value),
                         name="publish-status", daemon=True).start()

    def _call(self, method: str, *args: object, address: Optional[str]) -> object:
        result = self.xapi.perform(XapiCall(method, args, address, POOL_SESSION, CALL_TIMEOUT))
        if not result.ok:
            if method != "pool.remove_from_other_config":
                raise RuntimeError("%s: %s" % (method, " ".join(result.error)))
        return result.value

    def _write(self, host_uuid: str, value: str, address: Optional[str], mode: str) -> None:
        ok = False
        try:
            if self._pool_ref is None:
                refs = self._call("pool.get_all", address=address)
                if not isinstance(refs, list) or not refs:
                    raise RuntimeError("pool.get_all: no pool")
                self._pool_ref = refs[0]
            key = status_key(host_uuid)
            self._call("pool.remove_from_other_config", self._pool_ref, key, address=address)
            self._call("pool.add_to_other_config", self._pool_ref, key, value, address=address)
            ok = True
            self.writes += 1
        except RuntimeError as exc:
            self._pool_ref = None
            log.info("status report not written (%s); retrying in %.0f s", exc, RETRY)
        finally:
            with self._lock:
                self._busy = False
                if ok:
                    self._mode = mode
                    self._due = self.monotonic() + INTERVAL
                else:
                    self._due = self.monotonic() + RETRY
                    self._mode = mode  # a failed write waits RETRY even if the mode moves on
