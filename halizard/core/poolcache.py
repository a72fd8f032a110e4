"""The pool database as an ``event.from`` watcher sees it: records kept current by deltas. Pure.

A watcher asks xapi for the changes since its token (``""``: everything, as one ``add`` per
object) and applies each reply here; the view is then built by the same parser as the one for
``get_all_records`` (halizard.core.pool.parse_pool), so a view from events and a view from reads
cannot differ. Replies that do not have xapi's shape raise PoolParseError and change nothing.

The watched classes are those whose records change only when an administrator or a VM's
lifecycle changes something: ``pool``, ``host`` and ``VM``. ``host_metrics`` is noisy (xapi
rewrites it as memory figures move, research/xenapi.md 2.6) and gives the view only ``live`` and
``memory_total``: the caller passes it in from its last full read (halizard.core.watch).
"""
from typing import Any, Dict, Mapping, NamedTuple, Tuple

from halizard.core.pool import PoolParseError, PoolView, parse_pool

WATCHED = ("pool", "host", "VM")
_CLASS = {cls.lower(): cls for cls in WATCHED}

Records = Mapping[str, Mapping[str, Any]]  # ref -> record


class PoolRecords(NamedTuple):
    """The watched tables, and the token to ask for the next changes with."""

    token: str
    tables: Tuple[Tuple[str, Records], ...]  # in WATCHED order

    def table(self, cls: str) -> Records:
        return dict(self.tables)[cls]

    def view(self, metrics: Records) -> PoolView:
        """The view, with ``metrics`` (``host_metrics.get_all_records``) from a full read."""
        tables = dict(self.tables)
        return parse_pool(tables["pool"], tables["host"], metrics, tables["VM"])


EMPTY = PoolRecords("", tuple((cls, {}) for cls in WATCHED))


def apply_events(records: PoolRecords, asked_with: str, reply: Any) -> PoolRecords:
    """The records after one event.from reply to a call made with token ``asked_with`` (``""``
    restarts from nothing: the reply then holds every object)."""
    if not isinstance(reply, Mapping):
        raise PoolParseError("event.from reply is not a struct")
    events = reply.get("events")
    token = reply.get("token")
    if not isinstance(events, list) or not isinstance(token, str) or not token:
        raise PoolParseError("event.from reply without events or token")
    base = EMPTY if asked_with == "" else records
    if not events and base is records:
        return records._replace(token=token)  # nothing changed: the same tables
    tables: Dict[str, Dict[str, Any]] = {}
    for event in events:
        if not isinstance(event, Mapping):
            raise PoolParseError("an event is not a struct")
        cls = _CLASS.get(str(event.get("class", "")).lower())
        if cls is None:
            continue  # a class we did not ask for (or a newer xapi's extra): not ours
        ref = event.get("ref")
        operation = event.get("operation")
        if not isinstance(ref, str):
            raise PoolParseError("an event without a ref")
        table = tables.get(cls)
        if table is None:
            table = tables[cls] = dict(base.table(cls))
        if operation in ("add", "mod"):
            snapshot = event.get("snapshot")
            if not isinstance(snapshot, Mapping):
                raise PoolParseError("%s event for %s without a snapshot" % (operation, ref))
            table[ref] = snapshot
        elif operation == "del":
            table.pop(ref, None)
        else:
            raise PoolParseError("unknown event operation %r" % (operation,))
    return PoolRecords(token, tuple((cls, tables.get(cls, base.table(cls))) for cls in WATCHED))
