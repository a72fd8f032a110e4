"""The self-fence ladder: how the executor performs DestroyGuests on a real host.

The decision core only says "no guest may run here after ``valid_until``". The executor climbs
three rungs, each one harder than the last, within the effect's timeout:

1. On a pool master, through its own xapi: ``VM.hard_shutdown`` of every guest found running
   here. xapi records the VMs as halted, so nothing is left for the survivor to clear. Skipped
   on a slave: a slave cut off from its master has a xapi whose database calls hang.
2. Through the local toolstack (``xl destroy``), for whatever the first rung left.
3. Host reset, the last resort, when guests survive rung 2 (or the toolstack cannot say) and no
   watchdog device is armed. With one armed, its expiry is the last rung: the core stops feeding
   it when the lease expires, which is the moment the timing proof counts on, and until then
   each cycle tries rungs 1 and 2 again (a slow toolstack is no reason to reset early). Never
   when the decision went stale meanwhile: the next cycle decides again.

Each rung is bounded; the first gets at most half of the time, the toolstack the rest.
"""
import logging
import threading
import time
from typing import Callable, Dict, List, Optional

from halizard.effects import (
    LOCAL,
    POOL_SESSION,
    DestroyGuests,
    GuestList,
    ListGuests,
    PoolRole,
    XapiCall,
    XapiResult,
    is_stale,
)
from halizard.runtime.guests import Toolstack
from halizard.runtime.watchdog import HostReset
from halizard.runtime.xapi import XapiAdapter

log = logging.getLogger("halizard.selffence")

XAPI_SHARE = 0.5  # of the effect's time for rung 1
LIST_TIMEOUT = 1.0  # s for the listing that starts rung 1


class SelfFence:
    def __init__(self, toolstack: Toolstack, xapi: XapiAdapter,
                 role: Callable[[], Optional[PoolRole]], reset: HostReset,
                 watchdog_armed: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.toolstack = toolstack
        self.xapi = xapi
        self.role = role
        self.reset = reset
        self.watchdog_armed = watchdog_armed
        self.clock = clock

    def perform(self, effect: DestroyGuests) -> GuestList:
        if is_stale(effect, self.clock()):
            return GuestList((), ok=False)
        deadline = self.clock() + effect.timeout
        role = self.role()
        if role is not None and role.is_master:
            self._through_xapi(effect, self.clock() + effect.timeout * XAPI_SHARE)
        remaining = self.toolstack.destroy_guests(
            DestroyGuests(valid_until=effect.valid_until,
                          timeout=max(0.1, deadline - self.clock())))
        if is_stale(effect, self.clock()):
            return remaining
        if self.watchdog_armed():
            return remaining
        if remaining.uuids:
            self._reset("self-fence: %d guest domains survived xl destroy (%s) and no watchdog "
                        "is armed" % (len(remaining.uuids), ", ".join(remaining.uuids)))
        elif not remaining.ok:
            self._reset("self-fence: the toolstack cannot say whether guests still run, and no "
                        "watchdog is armed")
        return remaining

    def _reset(self, reason: str) -> None:
        log.critical("%s: resetting the host", reason)
        self.reset.reset(reason)

    def _through_xapi(self, effect: DestroyGuests, deadline: float) -> None:
        listed = self.toolstack.list_guests(ListGuests(timeout=min(LIST_TIMEOUT, max(
            0.1, deadline - self.clock()))))
        if not listed.ok or not listed.uuids:
            return
        results: Dict[str, XapiResult] = {}
        threads: List[threading.Thread] = []

        def shut_down(uuid: str) -> None:
            remaining = deadline - self.clock()
            ref = self.xapi.perform(XapiCall("VM.get_by_uuid", (uuid,), LOCAL, POOL_SESSION,
                                             timeout=max(0.1, min(1.0, remaining))))
            if not ref.ok:
                results[uuid] = ref
                return
            results[uuid] = self.xapi.perform(XapiCall(
                "VM.hard_shutdown", (ref.value,), LOCAL, POOL_SESSION,
                timeout=max(0.1, deadline - self.clock()), valid_until=effect.valid_until))

        for uuid in listed.uuids:
            thread = threading.Thread(target=shut_down, args=(uuid,), daemon=True,
                                      name="self-fence-%s" % uuid[:8])
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(max(0.0, deadline - self.clock()) + 0.5)
        for uuid in listed.uuids:
            result = results.get(uuid)
            if result is None or not result.ok:
                log.warning("self-fence: VM.hard_shutdown %s through xapi: %s; xl destroy next",
                            uuid, "no answer" if result is None else result.code)
            else:
                log.warning("self-fence: VM %s shut down hard through xapi", uuid)
