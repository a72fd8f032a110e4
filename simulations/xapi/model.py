"""A deterministic, event-driven behaviour model of xapi for a pool (research/xenapi.md §1.6, 2-4).

Each host has one xapi: its pool.conf role, a process state, the sessions in its memory and a
local copy of the pool database (the live database if it runs as master, else the last backup the
master pushed to it). A master also keeps heartbeat timers in memory. Two masters, each with its
own database, can exist at once: nothing here prevents split brain, the invariant checker judges.

The model is passive. Clients call ``XapiPool.call``; the world reports power, boot, freeze and
domain deaths through the hooks; everything that takes time is an event scheduled on the Clock,
bound to the host whose xapi performs it (a frozen host's events wait for the thaw; a restarted
xapi's events vanish with it). All randomness comes from the fabric's named streams.

Database records are never changed in place: every write stores a new dict. A snapshot handed out
(``get_all_records`` is cached until its table changes) therefore stays valid, and a database copy
(the backup pushed to slaves) is a shallow copy of each table. Callers must not mutate results.
"""
import datetime
import functools
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from simulations.xapi.fabric import (
    Clock,
    Fabric,
    Failure,
    Ok,
    Outcome,
    RandomStream,
    Refused,
    Reply,
    Reset,
)

S = 1_000_000_000
MS = 1_000_000

NULL_REF = "OpaqueRef:NULL"
RUNNING = "Running"
HALTED = "Halted"
PAUSED = "Paused"
SUSPENDED = "Suspended"
_HAS_DOMAIN = (RUNNING, PAUSED)

Range = Tuple[int, int]
Record = Dict[str, Any]

_EPOCH = datetime.datetime(2025, 1, 1)
_EPOCH_UNIX = 1735689600
_NEVER = xmlrpc.client.DateTime("19700101T00:00:00Z")


@dataclass(frozen=True)
class XapiParams:
    """Timing knobs in integer nanoseconds (ranges are drawn uniformly). Defaults: xenapi.md 4.8."""

    call_latency: Range = (2 * MS, 20 * MS)
    start_latency: Range = (1 * S, 2 * S)  # VM.start*: until the domain exists
    shutdown_latency: Range = (500 * MS, 1 * S)  # VM.hard_shutdown
    clean_shutdown_latency: Range = (2 * S, 5 * S)  # a guest during an orderly host shutdown
    migrate_latency: Range = (2 * S, 4 * S)
    fuse: Range = (9 * S, 10 * S)  # emergency_* calls: reply, then xapi exits
    restart: Range = (1 * S, 3 * S)  # xapi down (refusing) before it starts again
    designate: Range = (2 * S, 4 * S)  # designate_new_master: reply until both restart
    xapi_start: int = 5 * S  # host booted -> xapi starts
    startup: int = 2 * S  # xapi started -> start-up complete (host re-enabled)
    host_contact_timeout: int = 3 * S  # connecting to a host that does not answer
    heartbeat: int = 30 * S
    gc: int = 30 * S
    dead_after: int = 600 * S
    db_push: int = 300 * S
    failed_login_delay: int = 5 * S
    emergency_probe: int = 5 * S


DEFAULT_PARAMS = XapiParams()


@dataclass(frozen=True)
class HostSpec:
    name: str
    uuid: str
    address: str
    memory_total: int
    dom0_memory: int


@dataclass(frozen=True)
class VmSpec:
    """A guest. ``start_delay`` is in nanoseconds; xapi stores (and blocks) whole seconds."""

    name: str
    uuid: str
    host: Optional[str]
    memory: int
    order: int = 0
    start_delay: int = 0
    other_config: Dict[str, str] = field(default_factory=dict)

    @property
    def power_state(self) -> str:
        return RUNNING if self.host else HALTED


# --- the database --------------------------------------------------------------------------------


class _Table:
    """One class's records, with the read caches the simulator's polling relies on."""

    __slots__ = ("cls", "records", "by_uuid", "_all", "_refs", "view", "stamps", "deleted")

    def __init__(self, cls: str) -> None:
        self.cls = cls
        self.records: Dict[str, Record] = {}
        self.by_uuid: Dict[str, str] = {}
        self._all: Optional[Dict[str, Record]] = None
        self._refs: Optional[List[str]] = None
        self.view: Any = None  # a derived read model, dropped on any write
        # for event.from: ref -> (generation created, generation last written), and the
        # objects deleted: (ref, generation created, generation deleted)
        self.stamps: Dict[str, Tuple[int, int]] = {}
        self.deleted: List[Tuple[str, int, int]] = []

    def all_records(self) -> Dict[str, Record]:
        if self._all is None:
            self._all = dict(self.records)
        return self._all

    def refs(self) -> List[str]:
        if self._refs is None:
            self._refs = list(self.records)
        return self._refs

    def put(self, ref: str, record: Record) -> None:
        if ref not in self.records:
            self._refs = None
            self.by_uuid[record["uuid"]] = ref
        self.records[ref] = record
        self._all = None
        self.view = None

    def remove(self, ref: str) -> None:
        record = self.records.pop(ref, None)
        if record is not None:
            self.by_uuid.pop(record["uuid"], None)
            self._refs = None
            self._all = None
            self.view = None

    def copy(self) -> "_Table":
        table = _Table(self.cls)
        table.records = dict(self.records)
        table.by_uuid = dict(self.by_uuid)
        table.stamps = dict(self.stamps)
        table.deleted = list(self.deleted)
        return table


class _Db:
    """A pool database: the master's live one, or a backup copy on disk of any host.

    ``lineage`` names the live database a copy descends from, so a push can tell "same data" from
    "same generation number of another master's data"."""

    __slots__ = ("generation", "lineage", "pool", "host", "host_metrics", "vm", "task", "tables",
                 "on_change", "messages")

    def __init__(self, lineage: int) -> None:
        self.generation = 0
        self.lineage = lineage
        self.on_change: Optional[Callable[[], None]] = None  # event.from waiters, if any
        self.pool = _Table("pool")
        self.host = _Table("host")
        self.host_metrics = _Table("host_metrics")
        self.vm = _Table("VM")
        self.task = _Table("task")
        self.tables = self._index()
        # Messages (message.create): kept beside the tables, as xapi keeps them beside its
        # database; not watched by event.from here (the daemon does not subscribe to them).
        self.messages: Dict[str, Record] = {}

    def _index(self) -> Dict[str, _Table]:
        return {t.cls: t for t in (self.pool, self.host, self.host_metrics, self.vm, self.task)}

    def put(self, table: _Table, ref: str, record: Record) -> None:
        table.put(ref, record)
        self.generation += 1
        stamp = table.stamps.get(ref)
        table.stamps[ref] = (self.generation if stamp is None else stamp[0], self.generation)
        if self.on_change is not None:
            self.on_change()

    def update(self, table: _Table, ref: str, **fields: Any) -> Record:
        record = dict(table.records[ref])
        record.update(fields)
        self.put(table, ref, record)
        return record

    def remove(self, table: _Table, ref: str) -> None:
        table.remove(ref)
        self.generation += 1
        stamp = table.stamps.pop(ref, None)
        if stamp is not None:
            table.deleted.append((ref, stamp[0], self.generation))
        if self.on_change is not None:
            self.on_change()

    def pool_ref(self) -> str:
        return self.pool.refs()[0]

    def copy(self) -> "_Db":
        db = _Db(self.lineage)
        db.generation = self.generation
        db.pool = self.pool.copy()
        db.host = self.host.copy()
        db.host_metrics = self.host_metrics.copy()
        db.vm = self.vm.copy()
        db.task = self.task.copy()
        db.tables = db._index()
        db.messages = dict(self.messages)
        return db


# --- calls, hosts' xapis, executing operations ---------------------------------------------------


class _Call:
    """A client call on one endpoint, answered at most once."""

    __slots__ = ("id", "host", "method", "params", "reply", "transport", "done")

    def __init__(self, call_id: int, host: "_Xapi", method: str, params: List[Any], reply: Reply,
                 transport: str) -> None:
        self.id = call_id
        self.host = host
        self.method = method
        self.params = params
        self.reply = reply
        self.transport = transport
        self.done = False


class _Xapi:
    """One host's xapi: its pool.conf, its process state and what lives in its memory."""

    def __init__(self, spec: HostSpec, ref: str, metrics_ref: str, dom0_ref: str) -> None:
        self.name = spec.name
        self.spec = spec
        self.address = spec.address
        self.ref = ref
        self.metrics_ref = metrics_ref
        self.dom0_ref = dom0_ref
        # pool.conf (survives restarts)
        self.is_master = False
        self.master_address: Optional[str] = None
        # the process: "off" | "down" | "restarting" | "up" | "emergency"
        self.state = "off"
        self.running_master = False  # the role this incarnation started with
        self.hung = False
        self.frozen = False
        self.power_epoch = 0
        self.incarnation = 0
        self.started = False  # start-up complete (host.enable allowed)
        self.fuse_lit = False
        self.emergency_error = ["HOST_STILL_BOOTING"]
        self.boot_time = 0
        self.agent_start_time = 0
        # local disk
        self.db = _Db(0)
        # memory
        self.sessions: Dict[str, str] = {}  # DB sessions (a master's): ref -> user
        self.local_sessions: Dict[str, str] = {}
        self.pending: Dict[int, _Call] = {}
        self.inflight: Dict[int, Tuple[_Ctx, str]] = {}  # work executing here
        self.heard: Dict[str, int] = {}  # master: host -> last heartbeat
        self.timers_from = 0  # master: when its heartbeat timers started
        self.ignoring: Set[str] = set()  # master: hosts that said "shutting down"
        self.backlog: List[Tuple[str, str]] = []  # DB writes waiting for the master
        self.event_waits: List[_EventWait] = []  # master: event.from calls waiting
        self.thaw_queue: List[Tuple[Optional[int], Callable[..., None], Tuple[Any, ...]]] = []


class _Ctx:
    """One call being executed: its answer goes to the caller, or into a task record.

    ``owner`` is the xapi whose death abandons the work (the master for DB operations, the
    endpoint for host-local ones)."""

    __slots__ = ("pool", "call", "endpoint", "master", "owner", "incarnation", "session", "task",
                 "_op_ref")

    def __init__(self, pool: "XapiPool", call: Optional[_Call], endpoint: "_Xapi",
                 master: Optional["_Xapi"], owner: "_Xapi", session: str) -> None:
        self.pool = pool
        self.call = call
        self.endpoint = endpoint
        self.master = master
        self.owner = owner
        self.incarnation = owner.incarnation
        self.session = session
        self.task: Optional[str] = None
        self._op_ref: Optional[str] = None

    @property
    def db(self) -> _Db:
        assert self.master is not None
        return self.master.db

    @property
    def op_ref(self) -> str:
        """The task ref current_operations names (sync calls have a task too, just no record)."""
        if self._op_ref is None:
            self._op_ref = self.task or self.pool._new_ref()
        return self._op_ref

    def alive(self) -> bool:
        return self.owner.incarnation == self.incarnation

    def ok(self, value: Any = "") -> None:
        self.pool._complete(self, Ok(value))

    def fail(self, description: Sequence[str], later: bool = False) -> None:
        self.pool._complete(self, Failure(list(description)), later)


Handler = Callable[[_Ctx, List[Any]], None]


class _EventWait:
    """An event.from call waiting on a master for a change it subscribed to."""

    __slots__ = ("ctx", "subscriptions", "since", "done", "replying")

    def __init__(self, ctx: _Ctx, subscriptions: Dict[str, Optional[Set[str]]], since: int) -> None:
        self.ctx = ctx
        self.subscriptions = subscriptions  # table class -> refs (None: every object)
        self.since = since
        self.done = False
        self.replying = False

LOGIN, LOCAL, DB = "login", "local", "db"


class _Method:
    __slots__ = ("handler", "low", "high", "kind", "emergency", "can_async")

    def __init__(self, handler: Handler, low: int, high: int, kind: str, emergency: bool,
                 can_async: bool) -> None:
        self.handler = handler
        self.low = low
        self.high = high
        self.kind = kind
        self.emergency = emergency
        self.can_async = can_async


_REFUSED = Refused()


def _datetime(t_ns: int) -> xmlrpc.client.DateTime:
    moment = _EPOCH + datetime.timedelta(microseconds=t_ns // 1000)
    return xmlrpc.client.DateTime(moment.strftime("%Y%m%dT%H:%M:%SZ"))


def _unix_seconds(t_ns: int) -> str:
    return "%.3f" % (_EPOCH_UNIX + t_ns / S)


def _encode(value: Any) -> str:
    """task.result: the XML-RPC encoding of the return value (all Async results here are
    strings or void)."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "<value>%s</value>" % text


def _known(table: _Table, ref: Any) -> bool:
    return isinstance(ref, str) and ref in table.records


def _allowed_operations(record: Record) -> List[str]:
    if record["is_control_domain"] or record["current_operations"]:
        return []
    return {
        HALTED: ["start", "start_on", "power_state_reset"],
        RUNNING: ["clean_shutdown", "hard_shutdown", "hard_reboot", "pool_migrate",
                  "power_state_reset"],
        PAUSED: ["hard_shutdown", "unpause", "power_state_reset"],
        SUSPENDED: ["resume", "resume_on", "hard_shutdown", "power_state_reset"],
    }.get(record["power_state"], [])


# --- event.from ----------------------------------------------------------------------------------

EVENT_CLASSES = ("pool", "host", "host_metrics", "VM", "task")
_EVENT_TABLES = {cls.lower(): cls for cls in EVENT_CLASSES}
# Classes xapi has events for that this model holds no records of: subscribing is valid, and
# quiet.
_QUIET_CLASSES = frozenset((
    "sr", "pbd", "vdi", "vbd", "vif", "network", "pif", "bond", "vlan", "message", "console",
    "vm_appliance", "vm_metrics", "vm_guest_metrics", "host_cpu", "pool_patch", "pool_update",
    "secret", "sm", "blob", "crashdump", "gpu_group", "pgpu", "vgpu", "vtpm", "certificate",
    "cluster", "cluster_host", "feature", "observer", "repository"))
EVENT_BATCHING = 50 * MS


def _subscriptions(classes: Any) -> Any:
    """table class -> refs (None: all) for event.from's class list, or the entry that does not
    parse (a string)."""
    if not isinstance(classes, list):
        return str(classes)
    subscriptions: Dict[str, Optional[Set[str]]] = {}
    for entry in classes:
        if not isinstance(entry, str):
            return str(entry)
        name, _, ref = entry.partition("/")
        name = name.lower()
        if name == "*" and not ref:
            return {cls: None for cls in EVENT_CLASSES}
        if name in _QUIET_CLASSES:
            continue
        cls = _EVENT_TABLES.get(name)
        if cls is None:
            return entry
        if ref:
            refs = subscriptions.get(cls, set())
            if refs is not None:
                refs.add(ref)
                subscriptions[cls] = refs
        else:
            subscriptions[cls] = None
    return subscriptions


def _parse_token(token: Any) -> Optional[int]:
    """The database generation a token names ("" = from the beginning); None if it does not
    parse."""
    if token == "":
        return 0
    if not isinstance(token, str):
        return None
    head = token.split(",", 1)[0]
    return int(head) if head.isdigit() else None


def _token(generation: int) -> str:
    return "%020d,%020d" % (generation, 0)


def _events(db: "_Db", subscriptions: Dict[str, Optional[Set[str]]], since: int
            ) -> List[Record]:
    """The changes since generation ``since``, one per object (its latest state): ``add`` for
    an object created since, ``mod`` for one written since, ``del`` (no snapshot) for one
    deleted since that existed before; an object created and deleted since is not there."""
    events: List[Record] = []
    for cls, refs in subscriptions.items():
        table = db.tables[cls]
        name = cls.lower()
        for ref, (created, modified) in table.stamps.items():
            if modified > since and (refs is None or ref in refs):
                events.append({"id": str(modified), "timestamp": "0.0", "class": name,
                               "operation": "add" if created > since else "mod", "ref": ref,
                               "snapshot": table.records[ref]})
        for ref, created, deleted in table.deleted:
            if deleted > since >= created and (refs is None or ref in refs):
                events.append({"id": str(deleted), "timestamp": "0.0", "class": name,
                               "operation": "del", "ref": ref})
    return events


# --- the pool ------------------------------------------------------------------------------------


class XapiPool:
    """The xapis of one pool's hosts, driven by the clock, seeing the world through the fabric."""

    def __init__(self, clock: Clock, fabric: Fabric, hosts: Sequence[HostSpec], master: str,
                 vms: Sequence[VmSpec], pool_other_config: Optional[Dict[str, str]] = None,
                 params: XapiParams = DEFAULT_PARAMS, username: str = "root",
                 password: str = "halizard-sim") -> None:
        self.clock = clock
        self.fabric = fabric
        self.params = params
        self.username = username
        self.password = password
        self._latency = fabric.stream("xapi.latency")
        self._fuse = fabric.stream("xapi.fuse")
        self._refs = fabric.stream("xapi.refs")
        self._ops = fabric.stream("xapi.start")
        self._ids = 0
        self._lineages = 0
        self._xapis: Dict[str, _Xapi] = {}
        self._by_address: Dict[str, str] = {}
        self._by_ref: Dict[str, _Xapi] = {}
        self._vm_names: Dict[str, str] = {}  # uuid -> name
        self._vm_uuids: Dict[str, str] = {}  # name -> uuid
        self._vm_refs: Dict[str, str] = {}  # name -> ref
        self._domids: Dict[str, int] = {}
        self._start_failures: Dict[str, List[List[str]]] = {}
        # Starts forwarded to a host whose xapi was hung: never answered (the master's
        # forwarding connection waits for good), so the VM keeps that operation until its
        # master's xapi restarts. vm uuid -> (op ref, target host name).
        self._lost_starts: Dict[str, Tuple[str, str]] = {}
        self._methods = self._method_table()
        db = self._initial_db(hosts, master, vms, pool_other_config or {})
        self._power_on_pool(self._xapis[master], db)

    # --- construction ----------------------------------------------------------------------------

    def _initial_db(self, hosts: Sequence[HostSpec], master: str, vms: Sequence[VmSpec],
                    pool_other_config: Dict[str, str]) -> _Db:
        self._lineages += 1
        db = _Db(self._lineages)
        for spec in hosts:
            x = _Xapi(spec, self._new_ref(), self._new_ref(), self._new_ref())
            self._xapis[spec.name] = x
            self._by_address[spec.address] = spec.name
            self._by_ref[x.ref] = x
            self._domids[spec.name] = 0
        master_ref = self._xapis[master].ref
        db.put(db.pool, self._new_ref(), self._pool_record(master_ref, pool_other_config))
        for x in self._xapis.values():
            db.put(db.host, x.ref, self._host_record(x))
            db.put(db.host_metrics, x.metrics_ref, self._metrics_record(x))
            db.put(db.vm, x.dom0_ref, self._vm_record(
                "Control domain on host: %s" % x.name, self._new_uuid(), x.spec.dom0_memory,
                x.ref, 0, 0, {}, control=True))
        for vm in vms:
            ref = self._new_ref()
            self._vm_names[vm.uuid] = vm.name
            self._vm_uuids[vm.name] = vm.uuid
            self._vm_refs[vm.name] = ref
            resident = self._xapis[vm.host].ref if vm.host else NULL_REF
            db.put(db.vm, ref, self._vm_record(vm.name, vm.uuid, vm.memory, resident, vm.order,
                                               vm.start_delay // S, vm.other_config))
            if vm.host:
                self._move_resident(db, ref, NULL_REF, resident)
        return db

    def _power_on_pool(self, master: _Xapi, db: _Db) -> None:
        """The pool at time zero: every running host's xapi is up, slaves joined and enabled.
        (The world creates the initial domains; this model never invents them.)"""
        for x in self._xapis.values():
            x.is_master = x is master
            x.master_address = None if x is master else master.address
            x.db = db if x is master else db.copy()
            if self.fabric.host_running(x.name):
                x.state = "restarting"
        if master.state == "restarting":
            master.state = "up"
            master.running_master = True
            master.started = True
            master.timers_from = self.clock.now()
            self._start_master_timers(master)
        for x in self._xapis.values():
            if x is master or x.state == "off":
                continue
            if self._master_of(x) is None:
                self._enter_emergency(x)
            else:
                x.state = "up"
                x.started = True

    def _pool_record(self, master_ref: str, other_config: Dict[str, str]) -> Record:
        return {
            "uuid": self._new_uuid(), "name_label": "halizard-sim", "name_description": "",
            "master": master_ref, "default_SR": NULL_REF, "suspend_image_SR": NULL_REF,
            "crash_dump_SR": NULL_REF, "other_config": dict(other_config), "ha_enabled": False,
            "ha_configuration": {}, "ha_statefiles": [], "ha_host_failures_to_tolerate": "0",
            "ha_plan_exists_for": "0", "ha_allow_overcommit": False, "ha_overcommitted": False,
            "blobs": {}, "tags": [], "gui_config": {}, "allowed_operations": [],
            "current_operations": {},
        }

    def _host_record(self, x: _Xapi) -> Record:
        now = _unix_seconds(self.clock.now())
        return {
            "uuid": x.spec.uuid, "name_label": x.name, "name_description": "",
            "hostname": x.name, "address": x.address, "enabled": True, "metrics": x.metrics_ref,
            "resident_VMs": [x.dom0_ref], "control_domain": x.dom0_ref,
            "other_config": {"boot_time": now, "agent_start_time": now},
            "API_version_major": "2", "API_version_minor": "21", "API_version_vendor": "XenSource",
            "software_version": {"product_brand": "XCP-ng", "product_version": "8.3.0"},
            "memory_overhead": "0", "allowed_operations": [], "current_operations": {},
        }

    def _metrics_record(self, x: _Xapi) -> Record:
        return {
            "uuid": self._new_uuid(), "live": True, "memory_total": str(x.spec.memory_total),
            "memory_free": "0", "last_updated": _datetime(self.clock.now()), "other_config": {},
        }

    def _vm_record(self, name: str, uuid: str, memory: int, resident: str, order: int,
                   start_delay: int, other_config: Dict[str, str], control: bool = False) -> Record:
        running = resident != NULL_REF
        if running:
            domid = "0" if control else self._next_domid(self._by_ref[resident])
        else:
            domid = "-1"
        record: Record = {
            "uuid": uuid, "name_label": name, "name_description": "",
            "power_state": RUNNING if running else HALTED, "resident_on": resident,
            "scheduled_to_be_resident_on": NULL_REF, "affinity": NULL_REF,
            "other_config": dict(other_config), "is_a_template": False,
            "is_default_template": False, "is_control_domain": control, "is_a_snapshot": False,
            "ha_restart_priority": "", "ha_always_run": False, "order": str(order),
            "start_delay": str(start_delay), "shutdown_delay": "0", "appliance": NULL_REF,
            "memory_static_min": str(memory), "memory_static_max": str(memory),
            "memory_dynamic_min": str(memory), "memory_dynamic_max": str(memory),
            "memory_target": str(memory), "memory_overhead": "0", "VCPUs_max": "1",
            "VCPUs_at_startup": "1", "domid": domid, "allowed_operations": [],
            "current_operations": {}, "blocked_operations": {}, "metrics": NULL_REF,
            "guest_metrics": NULL_REF, "snapshot_time": _NEVER,
        }
        record["allowed_operations"] = _allowed_operations(record)
        return record

    # --- randomness and scheduling -----------------------------------------------------------------

    def _new_uuid(self) -> str:
        draw = self._refs.random
        h = "".join("%08x" % int(draw() * 4294967296.0) for _ in range(4))
        return "%s-%s-4%s-%s-%s" % (h[:8], h[8:12], h[13:16], h[16:20], h[20:32])

    def _new_ref(self) -> str:
        return "OpaqueRef:" + self._new_uuid()

    @staticmethod
    def _draw(stream: RandomStream, span: Range) -> int:
        return stream.uniform_ns(span[0], span[1])

    def _at(self, x: _Xapi, delay: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on ``x``'s xapi after ``delay``, unless that xapi has died meanwhile."""
        self.clock.at(self.clock.now() + delay, self._fire, x, x.power_epoch, x.incarnation, fn,
                      args)

    def _at_power(self, x: _Xapi, delay: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on host ``x`` after ``delay`` if it keeps its power (xapi may restart)."""
        self.clock.at(self.clock.now() + delay, self._fire, x, x.power_epoch, None, fn, args)

    def _fire(self, x: _Xapi, power_epoch: int, incarnation: Optional[int],
              fn: Callable[..., None], args: Tuple[Any, ...]) -> None:
        if x.power_epoch != power_epoch or (incarnation is not None
                                            and x.incarnation != incarnation):
            return
        if x.frozen:
            x.thaw_queue.append((incarnation, fn, args))
            return
        fn(*args)

    # --- the client face -----------------------------------------------------------------------

    def call(self, host: str, method: str, params: Sequence[Any], reply: Reply,
             transport: str = "tcp") -> None:
        """One XML-RPC call to ``host``'s xapi. ``reply`` gets one Outcome later, or never (a hung
        call: until that xapi restarts, which resets the connection)."""
        x = self._xapis[host]
        self._ids += 1
        c = _Call(self._ids, x, method, list(params), reply, transport)
        x.pending[c.id] = c
        self._at_power(x, self._draw(self._latency, self.params.call_latency), self._arrive, c)

    def _answer(self, c: _Call, outcome: Outcome, later: bool = False) -> None:
        if c.done:
            return
        c.done = True
        c.host.pending.pop(c.id, None)
        if later:
            self.clock.at(self.clock.now(), c.reply, outcome)
        else:
            c.reply(outcome)

    def _fail(self, c: _Call, *description: str) -> None:
        self._answer(c, Failure(list(description)))

    def _arrive(self, c: _Call) -> None:
        """The dispatcher, in xapi's order: process state, method, emergency mode, parameter
        count, session."""
        x = c.host
        if c.done:
            return
        if x.state == "off":  # a black hole: nothing will ever answer or reset it
            c.done = True
            x.pending.pop(c.id, None)
            return
        if x.hung:
            return  # answered by nothing but a restart (Reset): the client's timeout decides
        if x.state in ("down", "restarting"):
            self._answer(c, _REFUSED)
            return
        name = c.method
        is_async = name.startswith("Async.")
        spec = self._methods.get(name[6:] if is_async else name)
        if spec is None:
            self._fail(c, "MESSAGE_METHOD_UNKNOWN", name)
            return
        if is_async and not spec.can_async:
            self._fail(c, "Fault", "No async mode for this operation (rpc: %s)" % name)
            return
        if x.state == "emergency" and not spec.emergency:
            self._answer(c, Failure(list(x.emergency_error)))
            return
        received = len(c.params) - (0 if spec.kind == LOGIN else 1)
        if not spec.low <= received <= spec.high:
            expected = spec.high if received > spec.high else spec.low
            self._fail(c, "MESSAGE_PARAMETER_COUNT_MISMATCH", name, str(expected),
                       str(max(received, 0)))
            return
        if spec.kind == LOGIN:
            spec.handler(_Ctx(self, c, x, None, x, ""), c.params)
        else:
            self._route(c, x, spec, is_async)

    def _route(self, c: _Call, x: _Xapi, spec: _Method, is_async: bool) -> None:
        """Validate the session where xapi does, then run the call here or on the master."""
        session = c.params[0]
        args = c.params[1:]
        if not isinstance(session, str):
            self._fail(c, "SESSION_INVALID", str(session))
            return
        if x.state == "emergency" or x.running_master:
            if session in x.local_sessions or session in x.sessions:
                self._run(c, spec, is_async, x, None if x.state == "emergency" else x, session,
                          args)
            else:
                self._fail(c, "SESSION_INVALID", str(session))
            return
        if session in x.local_sessions and spec.kind == LOCAL:
            self._run(c, spec, is_async, x, None, session, args)
            return
        master = self._master_of(x)
        if master is None:
            return  # a slave's database access retries forever: the call hangs
        self._at(master, self._draw(self._latency, self.params.call_latency), self._on_master, c,
                 spec, is_async, x, master, session, args)

    def _on_master(self, c: _Call, spec: _Method, is_async: bool, x: _Xapi, master: _Xapi,
                   session: str, args: List[Any]) -> None:
        """A slave's call reaching its master: DB sessions are checked in the master's table."""
        if c.done or self._master_of(x) is not master:
            return
        if session not in x.local_sessions:
            if session not in master.sessions:
                self._fail(c, "SESSION_INVALID", str(session))
                return
            if c.transport != "unix":
                self._fail(c, "HOST_IS_SLAVE", str(x.master_address))
                return
        self._run(c, spec, is_async, x, master, session, args)

    def _run(self, c: _Call, spec: _Method, is_async: bool, endpoint: _Xapi,
             master: Optional[_Xapi], session: str, args: List[Any]) -> None:
        owner = master if spec.kind == DB and master is not None else endpoint
        ctx = _Ctx(self, c, endpoint, master, owner, session)
        if is_async:
            assert master is not None
            ctx.task = self._new_task(master, c.method)
            ctx.call = None
            self._answer(c, Ok(ctx.task))
        spec.handler(ctx, args)

    def _complete(self, ctx: _Ctx, outcome: Outcome, later: bool = False) -> None:
        if not ctx.alive():
            return  # the xapi doing the work died: its calls were reset, its tasks are gone
        if ctx.task is not None:
            assert ctx.master is not None
            self._finish_task(ctx.master.db, ctx.task, outcome)
        elif ctx.call is not None:
            self._answer(ctx.call, outcome, later)

    # --- roles and reachability ----------------------------------------------------------------

    def _master_of(self, x: _Xapi) -> Optional[_Xapi]:
        """The master a slave's xapi can use right now (connected, up, answering), or None."""
        name = self._by_address.get(x.master_address or "")
        if name is None or name == x.name:
            return None
        m = self._xapis[name]
        if m.state != "up" or not m.running_master or m.hung:
            return None
        if not self.fabric.host_running(name) or not self.fabric.connected(x.name, name):
            return None
        return m

    def _db_of(self, x: _Xapi) -> Optional[_Db]:
        """The live database ``x``'s xapi reads and writes now (None: out of its reach)."""
        if x.state != "up":
            return None
        if x.running_master:
            return x.db
        m = self._master_of(x)
        return None if m is None else m.db

    def _peer_answer(self, m: _Xapi, h: _Xapi) -> str:
        """What ``m`` gets when it connects to ``h``'s xapi: answers | refuses | hung | silent."""
        if not self.fabric.host_running(h.name) or not self.fabric.connected(m.name, h.name):
            return "silent"
        if h.state in ("up", "emergency"):
            return "hung" if h.hung else "answers"
        return "refuses"

    def _contact(self, m: _Xapi, h: _Xapi) -> Optional[bool]:
        """Can the master forward work to ``h``? None: it connects but never hears back."""
        if h is m:
            return True
        answer = self._peer_answer(m, h)
        if answer == "hung":
            return None
        return answer == "answers"

    def _unreachable_error(self, db: _Db, h: _Xapi) -> List[str]:
        live = db.host_metrics.records[h.metrics_ref]["live"]
        return ["CANNOT_CONTACT_HOST" if live else "HOST_OFFLINE", h.ref]

    # --- database writes -----------------------------------------------------------------------

    def _set_vm(self, db: _Db, ref: str, **fields: Any) -> None:
        old = db.vm.records[ref]
        record = dict(old)
        record.update(fields)
        record["allowed_operations"] = _allowed_operations(record)
        db.put(db.vm, ref, record)
        if record["resident_on"] != old["resident_on"]:
            self._move_resident(db, ref, old["resident_on"], record["resident_on"])

    def _move_resident(self, db: _Db, vm: str, old: str, new: str) -> None:
        if old in db.host.records:
            residents = [r for r in db.host.records[old]["resident_VMs"] if r != vm]
            db.update(db.host, old, resident_VMs=residents)
        if new in db.host.records:
            db.update(db.host, new, resident_VMs=db.host.records[new]["resident_VMs"] + [vm])

    def _next_domid(self, x: _Xapi) -> str:
        self._domids[x.name] += 1
        return str(self._domids[x.name])

    def _set_running(self, db: _Db, ref: str, x: _Xapi) -> None:
        self._set_vm(db, ref, power_state=RUNNING, resident_on=x.ref,
                     scheduled_to_be_resident_on=NULL_REF, domid=self._next_domid(x))

    def _set_halted(self, db: _Db, ref: str, clear_operations: bool = True) -> None:
        fields: Dict[str, Any] = {"power_state": HALTED, "resident_on": NULL_REF,
                                  "scheduled_to_be_resident_on": NULL_REF, "domid": "-1"}
        if clear_operations:
            fields["current_operations"] = {}
        self._set_vm(db, ref, **fields)

    def _set_operation(self, db: _Db, ref: str, op_ref: str, op: Optional[str],
                       scheduled: Optional[str] = None) -> None:
        """Add (op given) or remove one entry of current_operations; ``scheduled`` also sets
        scheduled_to_be_resident_on (how memory of starts in flight is counted)."""
        if ref not in db.vm.records:
            return
        ops = dict(db.vm.records[ref]["current_operations"])
        if op is None:
            ops.pop(op_ref, None)
        else:
            ops[op_ref] = op
        fields: Dict[str, Any] = {"current_operations": ops}
        if scheduled is not None:
            fields["scheduled_to_be_resident_on"] = scheduled
        self._set_vm(db, ref, **fields)

    def _set_live(self, db: _Db, x: _Xapi, live: bool) -> None:
        if db.host_metrics.records[x.metrics_ref]["live"] != live:
            db.update(db.host_metrics, x.metrics_ref, live=live,
                      last_updated=_datetime(self.clock.now()))

    def _set_enabled(self, db: _Db, x: _Xapi, enabled: bool) -> None:
        if x.ref in db.host.records and db.host.records[x.ref]["enabled"] != enabled:
            db.update(db.host, x.ref, enabled=enabled)

    def _stamp_start(self, db: _Db, x: _Xapi) -> None:
        """host.other_config boot_time / agent_start_time: the cheap restart detector."""
        other = dict(db.host.records[x.ref]["other_config"])
        other["boot_time"] = _unix_seconds(x.boot_time)
        other["agent_start_time"] = _unix_seconds(x.agent_start_time)
        db.update(db.host, x.ref, other_config=other)

    def _new_task(self, m: _Xapi, name: str) -> str:
        ref = self._new_ref()
        m.db.put(m.db.task, ref, {
            "uuid": self._new_uuid(), "name_label": name, "name_description": "",
            "status": "pending", "progress": 0.0, "result": "", "error_info": [],
            "created": _datetime(self.clock.now()), "finished": _NEVER, "resident_on": m.ref,
            "type": "<none/>", "other_config": {}, "subtask_of": NULL_REF, "subtasks": [],
            "allowed_operations": [], "current_operations": {}, "backtrace": "()",
        })
        return ref

    def _finish_task(self, db: _Db, task: str, outcome: Outcome) -> None:
        if task not in db.task.records:
            return  # destroyed meanwhile
        fields: Dict[str, Any] = {"progress": 1.0, "finished": _datetime(self.clock.now())}
        if isinstance(outcome, Ok):
            fields.update(status="success", result=_encode(outcome.value))
        elif isinstance(outcome, Failure):
            fields.update(status="failure", error_info=list(outcome.description))
        db.update(db.task, task, **fields)

    # --- the method table ----------------------------------------------------------------------

    def _method_table(self) -> Dict[str, _Method]:
        m: Dict[str, _Method] = {}

        def add(name: str, handler: Handler, arity: Tuple[int, int], kind: str = DB,
                emergency: bool = False, can_async: bool = False) -> None:
            m[name] = _Method(handler, arity[0], arity[1], kind, emergency, can_async)

        add("session.login_with_password", self._login, (2, 4), LOGIN)
        add("session.slave_local_login_with_password", self._local_login, (2, 2), LOGIN, True)
        add("session.logout", self._logout, (0, 0), LOCAL)
        add("session.local_logout", self._local_logout, (0, 0), LOCAL, True)

        for cls in ("pool", "host", "host_metrics", "VM", "task"):
            add(cls + ".get_record", self._get_record(cls), (1, 1))
        for cls in ("pool", "host", "host_metrics", "VM"):
            add(cls + ".get_all", self._get_all(cls), (0, 0))
            add(cls + ".get_all_records", self._get_all_records(cls), (0, 0))
        for cls in ("host", "VM"):
            add(cls + ".get_by_uuid", self._get_by_uuid(cls), (1, 1))
        for cls, name in (("pool", "master"), ("pool", "other_config"), ("pool", "ha_enabled"),
                          ("host", "address"), ("host", "enabled"), ("host_metrics", "live"),
                          ("VM", "power_state"), ("VM", "resident_on"), ("VM", "other_config"),
                          ("task", "status"), ("task", "result"), ("task", "error_info"),
                          ("task", "progress")):
            add("%s.get_%s" % (cls, name), self._get_field(cls, name), (1, 1))
        for cls in ("pool", "VM"):
            add(cls + ".add_to_other_config", self._add_to_other_config(cls), (3, 3))
            add(cls + ".remove_from_other_config", self._remove_from_other_config(cls), (2, 2))
        add("pool.set_other_config", self._set_other_config, (2, 2))
        for name in ("order", "start_delay"):
            add("VM.set_" + name, self._set_int_field("VM", name), (2, 2))

        add("pool.emergency_transition_to_master", self._emergency_transition, (0, 0), LOCAL, True)
        add("pool.emergency_reset_master", self._emergency_reset_master, (1, 1), LOCAL, True)
        add("pool.designate_new_master", self._designate_new_master, (1, 1), can_async=True)
        add("pool.sync_database", self._sync_database, (0, 0), can_async=True)

        add("host.disable", self._host_disable, (1, 2))
        add("host.enable", self._host_enable, (1, 1))
        add("host.declare_dead", self._declare_dead, (1, 1), can_async=True)
        add("host.is_in_emergency_mode", self._is_in_emergency_mode, (0, 0), LOCAL, True)

        add("VM.start", self._vm_start, (3, 3), can_async=True)
        add("VM.start_on", self._vm_start_on, (4, 4), can_async=True)
        add("VM.hard_shutdown", self._vm_hard_shutdown, (1, 1), can_async=True)
        add("VM.power_state_reset", self._vm_power_state_reset, (1, 1), can_async=True)
        add("VM.pool_migrate", self._vm_pool_migrate, (3, 3), can_async=True)

        add("message.create", self._message_create, (5, 5))
        add("message.get_all_records", self._message_get_all_records, (0, 0))
        add("message.destroy", self._message_destroy, (1, 1))

        add("task.destroy", self._task_destroy, (1, 1))
        add("event.from", self._event_from, (3, 3))
        add("event.get_current_id", self._event_get_current_id, (0, 0))
        return m

    # --- sessions ------------------------------------------------------------------------------

    def _credentials_ok(self, uname: Any, pwd: Any) -> bool:
        return bool(uname == self.username and pwd == self.password)

    def _login(self, ctx: _Ctx, args: List[Any]) -> None:
        """login_with_password: a DB session on the master; HOST_IS_SLAVE from a slave before any
        password check; over the Unix socket root is pre-authenticated."""
        x = ctx.endpoint
        c = ctx.call
        assert c is not None
        uname = args[0]
        if x.running_master:
            if c.transport == "unix" or self._credentials_ok(uname, args[1]):
                ctx.ok(self._open_session(x.sessions, uname))
            else:
                self._at(x, self.params.failed_login_delay, ctx.fail,
                         ["SESSION_AUTHENTICATION_FAILED", str(uname), "Authentication failure"])
        elif c.transport != "unix":
            ctx.fail(["HOST_IS_SLAVE", str(x.master_address)])
        else:
            master = self._master_of(x)
            if master is not None:  # else: writing the session to the master hangs
                self._at(master, self._draw(self._latency, self.params.call_latency),
                         self._login_on_master, ctx, master, uname)

    def _login_on_master(self, ctx: _Ctx, master: _Xapi, uname: Any) -> None:
        if self._master_of(ctx.endpoint) is master:
            ctx.ok(self._open_session(master.sessions, uname))

    def _local_login(self, ctx: _Ctx, args: List[Any]) -> None:
        """slave_local_login_with_password: a session valid only on this host, even orphaned."""
        c = ctx.call
        assert c is not None
        if c.transport != "unix" and not self._credentials_ok(args[0], args[1]):
            ctx.fail(["SESSION_AUTHENTICATION_FAILED", str(args[0]), "Authentication failure"])
            return
        ctx.ok(self._open_session(ctx.endpoint.local_sessions, args[0]))

    def _open_session(self, table: Dict[str, str], uname: Any) -> str:
        ref = self._new_ref()
        table[ref] = str(uname)
        return ref

    def _logout(self, ctx: _Ctx, args: List[Any]) -> None:
        ctx.endpoint.local_sessions.pop(ctx.session, None)
        if ctx.master is not None:
            ctx.master.sessions.pop(ctx.session, None)
            self._end_event_waits(ctx.master, ctx.session)
        ctx.ok("")

    def _local_logout(self, ctx: _Ctx, args: List[Any]) -> None:
        ctx.endpoint.local_sessions.pop(ctx.session, None)
        ctx.ok("")

    # --- generic reads and map writes ----------------------------------------------------------

    def _record(self, ctx: _Ctx, cls: str, ref: Any) -> Optional[Record]:
        record = ctx.db.tables[cls].records.get(ref) if isinstance(ref, str) else None
        if record is None:
            ctx.fail(["HANDLE_INVALID", cls, str(ref)])
        return record

    def _get_all(self, cls: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            ctx.ok(ctx.db.tables[cls].refs())
        return handler

    def _get_all_records(self, cls: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            ctx.ok(ctx.db.tables[cls].all_records())
        return handler

    def _get_record(self, cls: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            record = self._record(ctx, cls, args[0])
            if record is not None:
                ctx.ok(record)
        return handler

    def _get_field(self, cls: str, name: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            record = self._record(ctx, cls, args[0])
            if record is not None:
                ctx.ok(record[name])
        return handler

    def _get_by_uuid(self, cls: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            ref = ctx.db.tables[cls].by_uuid.get(args[0]) if isinstance(args[0], str) else None
            if ref is None:
                ctx.fail(["UUID_INVALID", cls, str(args[0])])
            else:
                ctx.ok(ref)
        return handler

    def _add_to_other_config(self, cls: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            ref, key, value = args
            record = self._record(ctx, cls, ref)
            if record is None:
                return
            if key in record["other_config"]:
                ctx.fail(["MAP_DUPLICATE_KEY", cls, "other_config", str(ref), str(key)])
                return
            other = dict(record["other_config"])
            other[key] = value
            ctx.db.update(ctx.db.tables[cls], ref, other_config=other)
            ctx.ok("")
        return handler

    def _remove_from_other_config(self, cls: str) -> Handler:
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            ref, key = args
            record = self._record(ctx, cls, ref)
            if record is None:
                return
            if key in record["other_config"]:
                other = dict(record["other_config"])
                del other[key]
                ctx.db.update(ctx.db.tables[cls], ref, other_config=other)
            ctx.ok("")
        return handler

    def _set_int_field(self, cls: str, name: str) -> Handler:
        """An int64 field's setter: the value travels as a decimal string."""
        def handler(ctx: _Ctx, args: List[Any]) -> None:
            ref, value = args
            record = self._record(ctx, cls, ref)
            if record is None:
                return
            try:
                number = int(value)
            except (TypeError, ValueError):
                ctx.fail(["FIELD_TYPE_ERROR", name])
                return
            ctx.db.update(ctx.db.tables[cls], ref, **{name: str(number)})
            ctx.ok("")
        return handler

    def _set_other_config(self, ctx: _Ctx, args: List[Any]) -> None:
        if self._record(ctx, "pool", args[0]) is not None:
            ctx.db.update(ctx.db.pool, args[0], other_config=dict(args[1]))
            ctx.ok("")

    # --- messages ----------------------------------------------------------------------------------

    _MESSAGE_CLASSES = {"VM": "VM", "Host": "host", "Pool": "pool", "SR": None, "VMPP": None,
                        "VMSS": None, "PVS_proxy": None, "VDI": None, "Certificate": None}

    def _message_create(self, ctx: _Ctx, args: List[Any]) -> None:
        """message.create(name, priority, cls, obj_uuid, body): the object must exist (for the
        classes this model holds) and the priority be a number, as xapi checks."""
        name, priority, cls, obj_uuid, body = args
        try:
            level = int(priority)
        except (TypeError, ValueError):
            ctx.fail(["FIELD_TYPE_ERROR", "priority"])
            return
        if cls not in self._MESSAGE_CLASSES:
            ctx.fail(["ENUM_VALUE_INVALID", "cls", str(cls)])
            return
        table = self._MESSAGE_CLASSES[cls]
        if table is not None and obj_uuid not in ctx.db.tables[
                {"VM": "VM", "host": "host", "pool": "pool"}[table]].by_uuid:
            ctx.fail(["UUID_INVALID", str(cls), str(obj_uuid)])
            return
        ref = self._new_ref()
        ctx.db.messages[ref] = {
            "uuid": self._new_uuid(), "name": str(name), "priority": str(level), "cls": cls,
            "obj_uuid": str(obj_uuid), "timestamp": _datetime(self.clock.now()),
            "body": str(body)}
        ctx.ok(ref)

    def _message_get_all_records(self, ctx: _Ctx, args: List[Any]) -> None:
        ctx.ok(dict(ctx.db.messages))

    def _message_destroy(self, ctx: _Ctx, args: List[Any]) -> None:
        if ctx.db.messages.pop(args[0], None) is None:
            ctx.fail(["HANDLE_INVALID", "message", str(args[0])])
        else:
            ctx.ok("")

    # --- pool roles ------------------------------------------------------------------------------

    def _ha_enabled(self, db: _Db) -> bool:
        return bool(db.pool.records[db.pool_ref()]["ha_enabled"])

    def _emergency_transition(self, ctx: _Ctx, args: List[Any]) -> None:
        """Write "master" to pool.conf, answer, restart after the fuse (even if already master)."""
        x = ctx.endpoint
        if self._ha_enabled(x.db):
            ctx.fail(["HA_IS_ENABLED"])
            return
        x.is_master = True
        x.master_address = None
        ctx.ok("")
        self._light_fuse(x)

    def _emergency_reset_master(self, ctx: _Ctx, args: List[Any]) -> None:
        x = ctx.endpoint
        if self._ha_enabled(x.db):
            ctx.fail(["HA_IS_ENABLED"])
            return
        address = str(args[0])
        if not x.is_master and x.master_address == address:
            ctx.ok("")
            return
        x.is_master = False
        x.master_address = address
        ctx.ok("")
        self._light_fuse(x)

    def _is_in_emergency_mode(self, ctx: _Ctx, args: List[Any]) -> None:
        ctx.ok(ctx.endpoint.state == "emergency")

    def _sync_database(self, ctx: _Ctx, args: List[Any]) -> None:
        assert ctx.master is not None
        self._push_all(ctx.master, force=True)
        ctx.ok("")

    def _designate_new_master(self, ctx: _Ctx, args: List[Any]) -> None:
        """Orderly hand-over: fresh copy to the target, answer, then both xapis restart."""
        m = ctx.master
        assert m is not None
        if self._record(ctx, "host", args[0]) is None:
            return
        if self._ha_enabled(m.db):
            ctx.fail(["HA_IS_ENABLED"])
            return
        target = self._by_ref[args[0]]
        if target is m:
            ctx.ok("")
            return
        if self._contact(m, target) is not True or target.running_master:
            ctx.fail(["CANNOT_CONTACT_HOST", target.ref])
            return
        self._push(m, target)
        ctx.ok("")
        self._at(m, self._draw(self._fuse, self.params.designate), self._designate_commit, m,
                 target)

    def _designate_commit(self, m: _Xapi, target: _Xapi) -> None:
        if self._contact(m, target) is not True:
            return
        self._push(m, target)
        target.is_master, target.master_address = True, None
        m.is_master, m.master_address = False, target.address
        self._restart(target, self._draw(self._fuse, self.params.restart))
        self._restart(m, self._draw(self._fuse, self.params.restart))

    def _push(self, m: _Xapi, slave: _Xapi) -> None:
        slave.db = m.db.copy()

    def _push_all(self, m: _Xapi, force: bool) -> None:
        """The master's database backup to every slave it can reach (only changes unless forced)."""
        for ref in m.db.host.refs():
            slave = self._by_ref[ref]
            if slave is m or slave.state != "up" or self._master_of(slave) is not m:
                continue
            if force or slave.db.lineage != m.db.lineage or slave.db.generation != m.db.generation:
                self._push(m, slave)

    # --- host calls ------------------------------------------------------------------------------

    def _forward_target(self, ctx: _Ctx, ref: Any) -> Optional[_Xapi]:
        """The host a forwarded host call must reach; None after failing (or when it hangs)."""
        if self._record(ctx, "host", ref) is None:
            return None
        assert ctx.master is not None
        h = self._by_ref[ref]
        reach = self._contact(ctx.master, h)
        if reach is False:
            ctx.fail(self._unreachable_error(ctx.db, h))
        return h if reach else None

    def _host_disable(self, ctx: _Ctx, args: List[Any]) -> None:
        h = self._forward_target(ctx, args[0])
        if h is not None:
            self._set_enabled(ctx.db, h, False)
            ctx.ok("")

    def _host_enable(self, ctx: _Ctx, args: List[Any]) -> None:
        h = self._forward_target(ctx, args[0])
        if h is None:
            return
        if not h.started:
            ctx.fail(["HOST_STILL_BOOTING"])
            return
        self._set_enabled(ctx.db, h, True)
        ctx.ok("")

    def _declare_dead(self, ctx: _Ctx, args: List[Any]) -> None:
        ref = args[0]
        if self._record(ctx, "host", ref) is None:
            return
        if self._by_ref[ref] is ctx.master:
            ctx.fail(["HOST_IS_LIVE", ref])
            return
        self._when_dead(ctx, ref, functools.partial(self._declare_dead_now, ctx, ref))

    def _declare_dead_now(self, ctx: _Ctx, ref: str) -> None:
        db = ctx.db
        for vm, record in list(db.vm.records.items()):
            if record["resident_on"] == ref and not record["is_control_domain"]:
                self._reset_vm(db, vm)
        self._set_enabled(db, self._by_ref[ref], False)
        ctx.ok("")

    def _when_dead(self, ctx: _Ctx, host_ref: str, then: Callable[[], None]) -> None:
        """xapi's "is that host alive?" (xenapi.md 4.4): dead if live=false or if contacting it
        fails; any answer at all, even from a master, means alive."""
        db = ctx.db
        h = self._by_ref[host_ref]
        if not db.host_metrics.records[h.metrics_ref]["live"]:
            then()
            return
        assert ctx.master is not None
        answer = self._peer_answer(ctx.master, h)
        if answer == "answers":
            ctx.fail(["HOST_IS_LIVE", host_ref])
        elif answer == "refuses":
            then()
        else:
            self._at(ctx.master, self.params.host_contact_timeout, then)

    # --- VM lifecycle ----------------------------------------------------------------------------

    def _reset_vm(self, db: _Db, ref: str) -> None:
        if ref in db.vm.records:
            self._set_halted(db, ref)

    def _busy(self, ref: str, record: Record) -> Optional[List[str]]:
        for task, op in record["current_operations"].items():
            return ["OTHER_OPERATION_IN_PROGRESS", "VM", ref, op, task]
        return None

    def _lifecycle_error(self, ref: str, record: Record, allowed: Sequence[str],
                         expected: str) -> Optional[List[str]]:
        """xapi_vm_lifecycle's checks in order: power state, other operation, control domain."""
        power = record["power_state"]
        if power not in allowed:
            return ["VM_BAD_POWER_STATE", ref, expected, power.lower()]
        busy = self._busy(ref, record)
        if busy:
            return busy
        if record["is_control_domain"]:
            return ["OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain"]
        return None

    def _free_memory(self, db: _Db, h: _Xapi) -> int:
        """memory_total - dom0 - guests resident there or on their way there."""
        used = h.spec.dom0_memory
        for record in db.vm.records.values():
            if record["is_control_domain"]:
                continue
            here = record["resident_on"] == h.ref and record["power_state"] in _HAS_DOMAIN
            coming = (record["scheduled_to_be_resident_on"] == h.ref
                      and record["resident_on"] != h.ref)
            if here or coming:
                used += int(record["memory_static_max"])
        return h.spec.memory_total - used

    def _boot_here_error(self, db: _Db, record: Record, h: _Xapi) -> Optional[List[str]]:
        """assert_can_boot_here: live, enabled, enough free memory."""
        if not db.host_metrics.records[h.metrics_ref]["live"]:
            return ["HOST_NOT_LIVE"]
        if not db.host.records[h.ref]["enabled"]:
            return ["HOST_DISABLED", h.ref]
        needed = int(record["memory_static_max"])
        available = self._free_memory(db, h)
        if needed > available:
            return ["HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(available)]
        return None

    def _vm_start_on(self, ctx: _Ctx, args: List[Any]) -> None:
        ref, host_ref = args[0], args[1]
        record = self._record(ctx, "VM", ref)
        if record is None:
            return
        error = self._lifecycle_error(ref, record, (HALTED,), "halted")
        if error is None and not _known(ctx.db.host, host_ref):
            error = ["HANDLE_INVALID", "host", str(host_ref)]
        if error is None:
            error = self._boot_here_error(ctx.db, record, self._by_ref[host_ref])
        if error:
            ctx.fail(error)
        else:
            self._launch(ctx, ref, record, self._by_ref[host_ref], "start_on")

    def _vm_start(self, ctx: _Ctx, args: List[Any]) -> None:
        ref = args[0]
        record = self._record(ctx, "VM", ref)
        if record is None:
            return
        error = self._lifecycle_error(ref, record, (HALTED,), "halted")
        if error:
            ctx.fail(error)
            return
        host = self._choose_host(ctx.db, record)
        if host is None:
            ctx.fail(["NO_HOSTS_AVAILABLE"])
        else:
            self._launch(ctx, ref, record, host, "start")

    def _choose_host(self, db: _Db, record: Record) -> Optional[_Xapi]:
        """VM.start's placement: the live, enabled host with the most free memory."""
        best: Optional[_Xapi] = None
        best_free = -1
        for ref in db.host.refs():
            h = self._by_ref[ref]
            if self._boot_here_error(db, record, h) is None:
                free = self._free_memory(db, h)
                if free > best_free:
                    best, best_free = h, free
        return best

    def _launch(self, ctx: _Ctx, ref: str, record: Record, target: _Xapi, op: str) -> None:
        """The start itself: forwarded to ``target``, domain after start_latency, then the VM's
        start_delay before the call returns."""
        master = ctx.master
        assert master is not None
        reach = self._contact(master, target)
        if reach is False:
            ctx.fail(["CANNOT_CONTACT_HOST", target.ref])
            return
        failures = self._start_failures.get(record["uuid"])
        if failures:
            ctx.fail(failures.pop(0))
            return
        self._set_operation(ctx.db, ref, ctx.op_ref, op, scheduled=target.ref)
        if reach is None:
            self._lost_starts[record["uuid"]] = (ctx.op_ref, target.name)
            return  # the forwarded call never returns
        key = self._track(target, ctx, ref)
        self._at(target, self._draw(self._ops, self.params.start_latency), self._domain_started,
                 ctx, ref, target, key)

    def _track(self, x: _Xapi, ctx: _Ctx, vm: str) -> int:
        """Work executing on ``x`` for a master: it fails if ``x`` dies first."""
        self._ids += 1
        x.inflight[self._ids] = (ctx, vm)
        return self._ids

    def _domain_started(self, ctx: _Ctx, ref: str, target: _Xapi, key: int) -> None:
        target.inflight.pop(key, None)
        uuid = self._vm_uuid_of(ctx, ref)
        if uuid is None:
            return
        self.fabric.create_domain(target.name, uuid)
        if not ctx.alive():
            target.backlog.append(("started", uuid))
            return
        db = ctx.db
        if self._db_of(target) is not db:
            self._set_operation(db, ref, ctx.op_ref, None, scheduled=NULL_REF)
            target.backlog.append(("started", uuid))
            ctx.fail(["INTERNAL_ERROR", "lost the connection to %s" % target.name])
            return
        self._set_running(db, ref, target)
        delay = int(db.vm.records[ref]["start_delay"]) * S
        self._at(ctx.owner, delay, self._operation_done, ctx, ref)

    def _vm_uuid_of(self, ctx: _Ctx, ref: str) -> Optional[str]:
        if ctx.master is None or ref not in ctx.master.db.vm.records:
            return None
        return str(ctx.master.db.vm.records[ref]["uuid"])

    def _operation_done(self, ctx: _Ctx, ref: str) -> None:
        self._set_operation(ctx.db, ref, ctx.op_ref, None)
        ctx.ok("")

    def _vm_hard_shutdown(self, ctx: _Ctx, args: List[Any]) -> None:
        ref = args[0]
        record = self._record(ctx, "VM", ref)
        if record is None:
            return
        error = self._lifecycle_error(ref, record, (PAUSED, SUSPENDED, RUNNING),
                                      "paused, suspended, running")
        if error:
            ctx.fail(error)
            return
        resident = self._by_ref.get(record["resident_on"])
        if resident is None:  # suspended: no domain anywhere
            self._set_halted(ctx.db, ref)
            ctx.ok("")
            return
        assert ctx.master is not None
        reach = self._contact(ctx.master, resident)
        if reach is False:
            ctx.fail(self._unreachable_error(ctx.db, resident))
            return
        self._set_operation(ctx.db, ref, ctx.op_ref, "hard_shutdown")
        if reach is None:
            return
        key = self._track(resident, ctx, ref)
        self._at(resident, self._draw(self._ops, self.params.shutdown_latency),
                 self._domain_stopped, ctx, ref, resident, key)

    def _domain_stopped(self, ctx: _Ctx, ref: str, resident: _Xapi, key: int) -> None:
        resident.inflight.pop(key, None)
        uuid = self._vm_uuid_of(ctx, ref)
        if uuid is not None and self._has_domain(resident, uuid):
            self.fabric.destroy_domain(resident.name, uuid)
        if ctx.alive():
            self._set_halted(ctx.db, ref)
            ctx.ok("")

    def _vm_power_state_reset(self, ctx: _Ctx, args: List[Any]) -> None:
        """Never forwarded: the master decides from its DB and, if needed, a liveness probe."""
        ref = args[0]
        record = self._record(ctx, "VM", ref)
        if record is None:
            return
        if record["is_control_domain"]:
            ctx.fail(["CANNOT_RESET_CONTROL_DOMAIN", ref])
            return
        reset = functools.partial(self._reset_now, ctx, ref)
        resident = record["resident_on"]
        master = ctx.master
        assert master is not None
        if record["power_state"] not in _HAS_DOMAIN or resident not in self._by_ref:
            reset()
        elif resident == master.ref:
            if self._has_domain(master, record["uuid"]):
                ctx.fail(["DOMAIN_EXISTS", ref])
            else:
                reset()
        else:
            self._when_dead(ctx, resident, reset)

    def _reset_now(self, ctx: _Ctx, ref: str) -> None:
        self._reset_vm(ctx.db, ref)
        ctx.ok("")

    def _vm_pool_migrate(self, ctx: _Ctx, args: List[Any]) -> None:
        ref, host_ref = args[0], args[1]
        record = self._record(ctx, "VM", ref)
        if record is None:
            return
        error = self._lifecycle_error(ref, record, (RUNNING,), "running")
        if error is None and not _known(ctx.db.host, host_ref):
            error = ["HANDLE_INVALID", "host", str(host_ref)]
        if error:
            ctx.fail(error)
            return
        db = ctx.db
        master = ctx.master
        assert master is not None
        src, dst = self._by_ref[record["resident_on"]], self._by_ref[host_ref]
        if src is not dst:
            error = self._boot_here_error(db, record, dst)
        src_reach, dst_reach = self._contact(master, src), self._contact(master, dst)
        if error is None and src_reach is False:
            error = self._unreachable_error(db, src)
        if error is None and dst_reach is False:
            error = ["CANNOT_CONTACT_HOST", dst.ref]
        if error:
            ctx.fail(error)
            return
        self._set_operation(db, ref, ctx.op_ref, "pool_migrate", scheduled=dst.ref)
        if src_reach and dst_reach:
            key = self._track(src, ctx, ref)
            self._at(src, self._draw(self._ops, self.params.migrate_latency), self._migrated, ctx,
                     ref, src, dst, key)

    def _migrated(self, ctx: _Ctx, ref: str, src: _Xapi, dst: _Xapi, key: int) -> None:
        src.inflight.pop(key, None)
        uuid = self._vm_uuid_of(ctx, ref)
        ok = (uuid is not None and self._has_domain(src, uuid)
              and self._contact(src, dst) is True)
        if ok and src is not dst:
            assert uuid is not None
            self.fabric.move_domain(src.name, dst.name, uuid)
        if not ctx.alive():
            return
        db = ctx.db
        self._set_operation(db, ref, ctx.op_ref, None, scheduled=NULL_REF)
        if ok:
            self._set_vm(db, ref, resident_on=dst.ref)
            ctx.ok("")
        else:
            ctx.fail(["INTERNAL_ERROR", "migration of %s to %s failed" % (ref, dst.name)])

    def _has_domain(self, x: _Xapi, uuid: str) -> bool:
        return uuid in self.fabric.domains(x.name)

    # --- tasks -----------------------------------------------------------------------------------

    def _task_destroy(self, ctx: _Ctx, args: List[Any]) -> None:
        if self._record(ctx, "task", args[0]) is not None:
            ctx.db.remove(ctx.db.task, args[0])
            ctx.ok("")

    # --- events ------------------------------------------------------------------------------------

    def _event_from(self, ctx: _Ctx, args: List[Any]) -> None:
        """event.from(classes, token, timeout): every change since the token, coalesced per
        object, as soon as there is one (after a short batching delay), else nothing after
        ``timeout`` seconds (research/xenapi.md 2.6)."""
        classes, token, timeout = args
        subscriptions = _subscriptions(classes)
        if isinstance(subscriptions, str):
            ctx.fail(["EVENT_SUBSCRIPTION_PARSE_FAILURE", subscriptions])
            return
        since = _parse_token(token)
        if since is None:
            ctx.fail(["EVENT_FROM_TOKEN_PARSE_FAILURE", str(token)])
            return
        try:
            seconds = max(0.0, float(timeout))
        except (TypeError, ValueError):
            ctx.fail(["FIELD_TYPE_ERROR", "timeout"])
            return
        master = ctx.owner
        wait = _EventWait(ctx, subscriptions, since)
        if _events(ctx.db, subscriptions, since):
            self._event_soon(master, wait)
            return
        master.event_waits.append(wait)
        ctx.db.on_change = functools.partial(self._events_changed, master)
        self._at(master, int(seconds * S), self._event_reply, master, wait)

    def _events_changed(self, master: _Xapi) -> None:
        """A write on the master's database: wake the waits it concerns (after the batching
        delay, so that a burst of writes is one reply)."""
        for wait in master.event_waits:
            if not wait.replying and _events(master.db, wait.subscriptions, wait.since):
                self._event_soon(master, wait)

    def _event_soon(self, master: _Xapi, wait: _EventWait) -> None:
        wait.replying = True
        tasks_only = set(wait.subscriptions) == {"task"}
        self._at(master, 0 if tasks_only else EVENT_BATCHING, self._event_reply, master, wait)

    def _event_reply(self, master: _Xapi, wait: _EventWait) -> None:
        if wait.done:
            return
        wait.done = True
        if wait in master.event_waits:
            master.event_waits.remove(wait)
        if not master.event_waits:
            master.db.on_change = None
        db = wait.ctx.db
        wait.ctx.ok({
            "events": _events(db, wait.subscriptions, wait.since),
            "valid_ref_counts": {cls.lower(): len(db.tables[cls].records)
                                 for cls in EVENT_CLASSES},
            "token": _token(db.generation),
        })

    def _event_get_current_id(self, ctx: _Ctx, args: List[Any]) -> None:
        ctx.ok(str(ctx.db.generation))

    def _end_event_waits(self, master: _Xapi, session: str) -> None:
        """A session logged out: its waiting event.from calls fail."""
        for wait in [w for w in master.event_waits if w.ctx.session == session]:
            wait.done = True
            master.event_waits.remove(wait)
            wait.ctx.fail(["SESSION_INVALID", session])
        if not master.event_waits:
            master.db.on_change = None

    # --- xapi start-up, joins and resync -------------------------------------------------------

    def _light_fuse(self, x: _Xapi) -> None:
        """The emergency calls' exit: xapi answers, then exits after the fuse and restarts."""
        if not x.fuse_lit:
            x.fuse_lit = True
            self._at(x, self._draw(self._fuse, self.params.fuse), self._fuse_blows, x)

    def _fuse_blows(self, x: _Xapi) -> None:
        self._restart(x, self._draw(self._fuse, self.params.restart))

    def _restart(self, x: _Xapi, downtime: int) -> None:
        self._stop_xapi(x, "restarting", reset_calls=True)
        self._at(x, downtime, self._start_xapi, x)

    def _stop_xapi(self, x: _Xapi, state: str, reset_calls: bool) -> None:
        """xapi exits: its memory is lost, its clients' connections are reset (or, when the
        power went, simply never answered), work it executed for a master fails."""
        x.incarnation += 1
        x.state = state
        x.running_master = False
        x.hung = False
        x.started = False
        x.fuse_lit = False
        x.sessions = {}
        x.local_sessions = {}
        x.heard = {}
        x.ignoring = set()
        x.backlog = []
        x.event_waits = []
        x.db.on_change = None
        calls = list(x.pending.values())
        x.pending = {}
        for c in calls:
            if reset_calls:
                self._answer(c, Reset(), later=True)
            else:
                c.done = True
        inflight = list(x.inflight.values())
        x.inflight = {}
        for ctx, vm in inflight:
            if ctx.alive() and ctx.master is not None:
                self._set_operation(ctx.db, vm, ctx.op_ref, None, scheduled=NULL_REF)
                ctx.fail(["INTERNAL_ERROR", "xapi on %s stopped" % x.name], later=True)

    def _start_xapi(self, x: _Xapi) -> None:
        x.agent_start_time = self.clock.now()
        if x.is_master:
            self._start_master(x)
        else:
            self._start_slave(x)

    def _start_master(self, x: _Xapi) -> None:
        """The no-other-masters check (before touching anything): any other host of its DB that
        answers as a master makes this one demote itself and restart as that host's slave.
        Hosts that do not answer are skipped, each after a connection timeout."""
        waited = 0
        for ref in x.db.host.refs():
            other = self._by_ref[ref]
            if other is x:
                continue
            answer = self._peer_answer(x, other)
            if answer == "answers" and other.running_master and other.state == "up":
                x.is_master, x.master_address = False, other.address
                self._at(x, self._draw(self._fuse, self.params.restart), self._start_xapi, x)
                return
            if answer in ("silent", "hung"):
                waited += self.params.host_contact_timeout
        self._at(x, waited, self._become_master, x)

    def _become_master(self, x: _Xapi) -> None:
        """Master start-up from the local database: DB sync, fresh heartbeat timers, own-VM
        resync (which kills local domains the database says live elsewhere)."""
        db = x.db
        self._lineages += 1
        db.lineage = self._lineages
        x.state = "up"
        x.running_master = True
        for task in list(db.task.refs()):
            db.remove(db.task, task)
        for ref, record in list(db.vm.records.items()):
            if record["current_operations"] or record["scheduled_to_be_resident_on"] != NULL_REF:
                self._set_vm(db, ref, current_operations={}, scheduled_to_be_resident_on=NULL_REF)
        db.update(db.pool, db.pool_ref(), master=x.ref)
        self._set_live(db, x, True)
        self._set_enabled(db, x, False)
        self._stamp_start(db, x)
        x.heard = {}
        x.timers_from = self.clock.now()
        x.backlog = []  # the resync below sees every domain death since the last start
        self._resync(x, db)
        self._start_master_timers(x)
        self._at(x, self.params.startup, self._startup_complete, x)

    def _start_slave(self, x: _Xapi) -> None:
        master = self._master_of(x)
        if master is None:
            self._enter_emergency(x)
        else:
            self._hello(x, master)

    def _enter_emergency(self, x: _Xapi) -> None:
        """Started without reaching the master: fail fast, probe the master every few seconds."""
        x.state = "emergency"
        x.running_master = False
        self._at(x, self.params.emergency_probe, self._probe_master, x)

    def _probe_master(self, x: _Xapi) -> None:
        if x.state != "emergency":
            return
        master = None if x.hung else self._master_of(x)
        if master is None:
            self._at(x, self.params.emergency_probe, self._probe_master, x)
        else:
            self._hello(x, master)

    def _hello(self, x: _Xapi, master: _Xapi) -> None:
        """pool.hello: the master marks the host live and disabled, the host's VMs are
        resynchronised against the master's DB, the host re-enables once start-up completes."""
        x.state = "up"
        x.running_master = False
        db = master.db
        master.ignoring.discard(x.name)
        master.heard[x.name] = self.clock.now()
        self._set_live(db, x, True)
        self._set_enabled(db, x, False)
        self._stamp_start(db, x)
        x.backlog = []
        self._resync(x, db)
        self._at(x, self.params.startup, self._startup_complete, x)

    def _startup_complete(self, x: _Xapi) -> None:
        x.started = True
        db = self._db_of(x)
        if db is None:
            x.backlog.append(("enable", ""))
        else:
            self._set_enabled(db, x, True)

    def _resync(self, x: _Xapi, db: _Db) -> None:
        """Make ``db`` agree with the domains really running on ``x`` (xapi's VM resync): records
        running here without a domain -> Halted; a domain whose record says it runs on another
        host -> destroyed (duplicate); a domain whose record says Halted -> adopted."""
        running = sorted(self.fabric.domains(x.name))
        alive = set(running)
        for ref, record in list(db.vm.records.items()):
            if (record["resident_on"] == x.ref and not record["is_control_domain"]
                    and record["power_state"] in _HAS_DOMAIN and record["uuid"] not in alive):
                self._set_halted(db, ref)
        for uuid in running:
            vm = db.vm.by_uuid.get(uuid)
            if vm is None:
                continue
            owner = db.vm.records[vm]["resident_on"]
            if owner == x.ref:
                continue
            if owner in db.host.records:
                self.fabric.destroy_domain(x.name, uuid)
            else:
                self._set_running(db, vm, x)

    def _flush_backlog(self, x: _Xapi, db: _Db) -> None:
        """DB writes a slave could not make while its master was out of reach."""
        backlog, x.backlog = x.backlog, []
        for kind, uuid in backlog:
            if kind == "enable":
                self._set_enabled(db, x, True)
                continue
            ref = db.vm.by_uuid.get(uuid)
            if ref is None:
                continue
            record = db.vm.records[ref]
            running = self._has_domain(x, uuid)
            if kind == "died" and not running and record["resident_on"] == x.ref:
                self._set_halted(db, ref, clear_operations=False)
            elif kind == "started" and running and record["resident_on"] == NULL_REF:
                self._set_running(db, ref, x)

    # --- the master's periodic work --------------------------------------------------------------

    def _start_master_timers(self, m: _Xapi) -> None:
        self._at(m, self.params.heartbeat, self._heartbeat_tick, m)
        self._at(m, self.params.gc, self._gc_tick, m)
        self._at(m, self.params.db_push, self._push_tick, m)

    def _slaves(self, m: _Xapi) -> List[_Xapi]:
        """Hosts whose xapi runs as a slave of ``m`` and can reach it now."""
        slaves = []
        for ref in m.db.host.refs():
            s = self._by_ref[ref]
            if s is not m and s.state == "up" and not s.hung and self._master_of(s) is m \
                    and self.fabric.host_running(s.name):
                slaves.append(s)
        return slaves

    def _heartbeat_tick(self, m: _Xapi) -> None:
        if not m.hung:
            now = self.clock.now()
            for s in self._slaves(m):
                if s.name not in m.ignoring:
                    m.heard[s.name] = now
                self._flush_backlog(s, m.db)
        self._at(m, self.params.heartbeat, self._heartbeat_tick, m)

    def _gc_tick(self, m: _Xapi) -> None:
        """host_metrics.live := false after dead_after without a heartbeat (timers start when
        this master started); a host heard again recently comes back live."""
        if not m.hung:
            db = m.db
            now = self.clock.now()
            for ref in db.host.refs():
                h = self._by_ref[ref]
                if h is m or h.name in m.ignoring:
                    continue
                heard = m.heard.get(h.name)
                last = m.timers_from if heard is None else heard
                if now - last > self.params.dead_after:
                    self._set_live(db, h, False)
                elif heard is not None:
                    self._set_live(db, h, True)
        self._at(m, self.params.gc, self._gc_tick, m)

    def _push_tick(self, m: _Xapi) -> None:
        if not m.hung:
            self._push_all(m, force=False)
        self._at(m, self.params.db_push, self._push_tick, m)

    # --- hooks the world calls -------------------------------------------------------------------

    def on_host_power_off(self, host: str) -> None:
        """Power gone (crash, reset, fence, end of shutdown): xapi vanishes mid-sentence."""
        x = self._xapis[host]
        self._stop_xapi(x, "off", reset_calls=False)
        x.power_epoch += 1
        x.frozen = False
        x.thaw_queue = []

    def on_host_boot(self, host: str) -> None:
        x = self._xapis[host]
        x.power_epoch += 1
        x.incarnation += 1
        x.state = "restarting"
        x.boot_time = self.clock.now()
        self._at(x, self.params.xapi_start, self._start_xapi, x)

    def begin_clean_shutdown(self, host: str, done: Callable[[], None],
                             guests_stopped: Optional[Callable[[Callable[[], None]], None]] = None
                             ) -> None:
        """An orderly OS shutdown: disable, stop the guests cleanly in parallel, send the
        "shutting down" heartbeat (the master marks the host dead at once), stop xapi.
        ``guests_stopped``, if given, is called once the guests are stopped, with the function
        that goes on (the caller may first wait for services ordered before xapi to stop)."""
        x = self._xapis[host]
        db = self._db_of(x)
        if db is not None:
            self._set_enabled(db, x, False)
        guests = sorted(self.fabric.domains(host))
        remaining = [len(guests)]

        def stopped() -> None:
            if guests_stopped is None:
                self._shutdown_heartbeat(x, done)
            else:
                guests_stopped(lambda: self._shutdown_heartbeat(x, done))

        if not guests:
            self._at_power(x, 0, stopped)
        for uuid in guests:
            self._at_power(x, self._draw(self._ops, self.params.clean_shutdown_latency),
                           self._guest_stopped, x, uuid, remaining, stopped)

    def _guest_stopped(self, x: _Xapi, uuid: str, remaining: List[int],
                       stopped: Callable[[], None]) -> None:
        if self._has_domain(x, uuid):
            self.fabric.destroy_domain(x.name, uuid)
        db = self._db_of(x)
        ref = None if db is None else db.vm.by_uuid.get(uuid)
        if db is not None and ref is not None and db.vm.records[ref]["resident_on"] == x.ref:
            self._set_halted(db, ref)
        remaining[0] -= 1
        if remaining[0] == 0:
            # A start that was under way when the shutdown began may have finished since (the
            # host is disabled: nothing new can start). Stop those too before going on.
            late = sorted(self.fabric.domains(x.name))
            if late:
                remaining[0] = len(late)
                for late_uuid in late:
                    self._at_power(x, self._draw(self._ops, self.params.clean_shutdown_latency),
                                   self._guest_stopped, x, late_uuid, remaining, stopped)
                return
            stopped()

    def _shutdown_heartbeat(self, x: _Xapi, done: Callable[[], None]) -> None:
        if x.state == "up":
            master = x if x.running_master else self._master_of(x)
            if master is not None:
                self._set_live(master.db, x, False)
                if master is not x:
                    master.ignoring.add(x.name)
        if x.state != "off":
            self._stop_xapi(x, "down", reset_calls=True)
        self.clock.at(self.clock.now(), done)

    def xapi_hang(self, host: str, until: Optional[int] = None) -> None:
        """xapi accepts connections but never answers calls made until ``until`` (or forever)."""
        x = self._xapis[host]
        if x.state == "off":
            return
        x.hung = True
        if until is not None:
            self._at(x, max(0, until - self.clock.now()), self._unhang, x)

    def _unhang(self, x: _Xapi) -> None:
        x.hung = False

    def xapi_restart(self, host: str, duration: int) -> None:
        """A toolstack restart: refused for ``duration``, then started as after boot."""
        x = self._xapis[host]
        if x.state not in ("off", "down"):  # "down": stopped for good by a host shutdown
            self._restart(x, duration)

    def set_native_ha(self, on: bool) -> None:
        """XenServer's own HA switched on or off (``pool.ha_enabled``) in the master's database:
        what `xe pool-ha-enable` leaves behind, without its heartbeat SR."""
        for x in self._xapis.values():
            if x.running_master:
                x.db.update(x.db.pool, x.db.pool_ref(), ha_enabled=on)

    def fail_next_starts(self, vm_uuid: str, times: int,
                         error: Optional[Sequence[str]] = None) -> None:
        description = list(error or ["SR_BACKEND_FAILURE_46", "", "The VDI is not available"])
        self._start_failures.setdefault(vm_uuid, []).extend(
            [list(description) for _ in range(times)])

    def on_host_freeze(self, host: str) -> None:
        self._xapis[host].frozen = True

    def on_host_thaw(self, host: str) -> None:
        """Work that came due while frozen runs now, in its original order."""
        x = self._xapis[host]
        x.frozen = False
        queue, x.thaw_queue = x.thaw_queue, []
        now = self.clock.now()
        for incarnation, fn, args in queue:
            self.clock.at(now, self._fire, x, x.power_epoch, incarnation, fn, args)

    def on_domain_died(self, host: str, vm_uuid: str) -> None:
        """A domain died outside xapi (self-fence, guest crash): recorded Halted now if this
        host's xapi can write its master's DB, else once it can."""
        x = self._xapis[host]
        db = self._db_of(x)
        if db is None:
            x.backlog.append(("died", vm_uuid))
            return
        ref = db.vm.by_uuid.get(vm_uuid)
        if ref is not None and db.vm.records[ref]["resident_on"] == x.ref \
                and not self._has_domain(x, vm_uuid):
            self._set_halted(db, ref, clear_operations=False)

    # --- inspection ------------------------------------------------------------------------------

    def role(self, host: str) -> str:
        """The role xapi runs with, or (when it is not running) the one pool.conf gives."""
        x = self._xapis[host]
        running = x.state in ("up", "emergency")
        return "master" if (x.running_master if running else x.is_master) else "slave"

    def pool_conf(self, host: str) -> Tuple[bool, Optional[str]]:
        x = self._xapis[host]
        return x.is_master, x.master_address

    def xapi_state(self, host: str) -> str:
        x = self._xapis[host]
        if x.hung and x.state in ("up", "emergency"):
            return "hung"
        return x.state

    def xapi_identity(self, host: str) -> Tuple[int, int]:
        """Changes whenever the host loses power or its xapi process is replaced: a
        connection to the old process does not reach the new one."""
        x = self._xapis[host]
        return x.power_epoch, x.incarnation

    def accepts_writes(self, host: str) -> bool:
        x = self._xapis[host]
        return x.state == "up" and x.running_master and not x.hung

    def master_address(self, host: str) -> Optional[str]:
        """The master this host's pool.conf names (its own address if it is the master)."""
        x = self._xapis[host]
        return x.address if x.is_master else x.master_address

    def vm_records(self, host: str) -> Dict[str, Tuple[str, Optional[str]]]:
        """vm name -> (power_state, resident host name or None) in ``host``'s live DB (empty
        unless it runs as master). Cached until the VM table changes."""
        x = self._xapis[host]
        if not (x.running_master and x.state == "up"):
            return {}
        table = x.db.vm
        view: Optional[Dict[str, Tuple[str, Optional[str]]]] = table.view
        if view is None:
            view = {}
            for record in table.records.values():
                name = self._vm_names.get(record["uuid"])
                if name is not None:
                    resident = self._by_ref.get(record["resident_on"])
                    view[name] = (record["power_state"],
                                  None if resident is None else resident.name)
            table.view = view
        return view

    def messages(self, host: str) -> List[Record]:
        """The messages in ``host``'s copy of the database (a master's is live), oldest first."""
        return sorted(self._xapis[host].db.messages.values(), key=lambda m: str(m["timestamp"]))

    def stuck_starts(self) -> Dict[str, str]:
        """VMs (uuid -> the host it was sent to) whose start was forwarded to a hung xapi and
        still holds the VM in the acting master's database: no daemon may start them elsewhere
        (the start may yet complete), and nothing completes it short of a restart of that
        master's xapi."""
        stuck: Dict[str, str] = {}
        for x in self._xapis.values():
            if x.state != "up" or not x.running_master:
                continue
            for uuid, (op, target) in self._lost_starts.items():
                ref = x.db.vm.by_uuid.get(uuid)
                if ref is not None and op in x.db.vm.records[ref]["current_operations"]:
                    stuck[uuid] = target
        return stuck

    def pool_other_config(self, host: str) -> Dict[str, str]:
        """The pool's other_config in ``host``'s copy of the database (a master's is live)."""
        db = self._xapis[host].db
        return dict(db.pool.records[db.pool_ref()]["other_config"])

    def host_uuid(self, name: str) -> str:
        return self._xapis[name].spec.uuid

    def vm_uuid(self, name: str) -> str:
        return self._vm_uuids[name]

    def host_ref(self, name: str) -> str:
        return self._xapis[name].ref

    def vm_ref(self, name: str) -> str:
        return self._vm_refs[name]

    def host_of_address(self, address: str) -> Optional[str]:
        return self._by_address.get(address)
