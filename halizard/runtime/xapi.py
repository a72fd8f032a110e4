"""The real executor's xapi side: performs the loop's XapiCall effects with the XenAPI binding.

Every call has a deadline (the effect's timeout, for the whole exchange: connect, any re-login,
the call), never outlives its ``valid_until``, and ends in exactly one XapiResult: xapi's value,
xapi's error description, or one transport outcome from halizard.effects (TIMEOUT,
CONNECTION_REFUSED, CONNECTION_RESET, UNREACHABLE, GARBAGE, STALE). Nothing raises.

Sessions: one per (endpoint, session kind, thread), logged in on first use with a fixed
originator, and logged in again by the binding when xapi answers SESSION_INVALID (after a xapi
restart or a master change; the binding tries three times). The simulated executor follows the
same rule (simulations.executor), so the decision core sees the same results from both.
"""
import errno
import http.client
import socket
import ssl
import threading
import time
import xml.parsers.expat
import xmlrpc.client
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import XenAPI

from halizard.effects import (
    CONNECTION_REFUSED,
    CONNECTION_RESET,
    GARBAGE,
    LOCAL_SESSION,
    POOL_SESSION,
    STALE_XAPI,
    TIMEOUT,
    UNREACHABLE,
    XapiCall,
    XapiResult,
)
from halizard.runtime.transport import (
    ORIGINATOR,
    TimeoutSafeTransport,
    TimeoutTransport,
    UnixTransport,
    session_uri,
    transport_for,
)

SESSION_INVALID = "SESSION_INVALID"
_RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


def classify(exc: BaseException) -> Tuple[str, ...]:
    """The XapiResult error for an exception out of the binding or the transport."""
    if isinstance(exc, XenAPI.Failure):
        return tuple(str(d) for d in exc.details) or (GARBAGE,)
    if isinstance(exc, xmlrpc.client.Fault):
        # The binding's own faults: 500 after three SESSION_INVALIDs, 401 when it has no
        # login to repeat, 504 when a login hit the kernel's connect timeout.
        if exc.faultCode == 401 or (exc.faultCode == 500
                                    and "session" in str(exc.faultString).lower()):
            return (SESSION_INVALID,)
        if exc.faultCode == 504:
            return (TIMEOUT,)
        return (GARBAGE, "fault %s: %s" % (exc.faultCode, exc.faultString))
    if isinstance(exc, socket.timeout):
        return (TIMEOUT,)
    if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
        return (CONNECTION_REFUSED,)  # no xapi listening (its Unix socket is absent meanwhile)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                        http.client.RemoteDisconnected)):
        return (CONNECTION_RESET,)
    if isinstance(exc, OSError):
        if exc.errno in _RESET_ERRNOS:
            return (CONNECTION_RESET,)
        if exc.errno == errno.ETIMEDOUT:
            return (TIMEOUT,)
        return (UNREACHABLE, str(exc))
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return (GARBAGE, "HTTP %s %s" % (exc.errcode, exc.errmsg))
    if isinstance(exc, (http.client.HTTPException, xml.parsers.expat.ExpatError,
                        xmlrpc.client.ResponseError, TypeError, ValueError, KeyError)):
        # TypeError: the binding concatenates a str with a reply that is not an envelope
        return (GARBAGE, "%s: %s" % (type(exc).__name__, exc))
    raise exc  # a programming error here must not pass for a network problem


Transport = Union[TimeoutTransport, TimeoutSafeTransport, UnixTransport]


class _Endpoint:
    """One logged-in XenAPI session on one endpoint (for one thread)."""

    __slots__ = ("session", "transport")

    def __init__(self, session: Any, transport: Transport) -> None:
        self.session = session
        self.transport = transport


class XapiAdapter:
    """Performs XapiCall effects. ``local_url`` is this host's own xapi (on a XenServer host
    its Unix socket, ``unix:/var/lib/xcp/xapi``); ``url_for(address)`` the URL of another host's
    xapi from its management address; ``clock`` the monotonic clock the loop's
    ``valid_until`` is measured on."""

    def __init__(self, local_url: str, url_for: Callable[[str], str],
                 credentials: Tuple[str, str], originator: str = ORIGINATOR,
                 clock: Callable[[], float] = time.monotonic,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.tls = tls  # for https:// endpoints (None: verify against the system's CAs)
        self.local_url = local_url
        self.url_for = url_for
        self.username, self.password = credentials
        self.originator = originator
        self.clock = clock
        self._local = threading.local()

    def _sessions(self) -> Dict[Tuple[str, str], _Endpoint]:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        return sessions

    def perform(self, call: XapiCall) -> XapiResult:
        """One call, by its deadline, never raising."""
        if call.valid_until is not None and self.clock() > call.valid_until:
            return STALE_XAPI
        url = self.local_url if call.address is None else self.url_for(call.address)
        key = (url, call.session)
        sessions = self._sessions()
        deadline = time.monotonic() + call.timeout
        endpoint = sessions.get(key)
        try:
            if endpoint is None:
                endpoint = self._login(url, call.session, call.timeout, deadline)
                sessions[key] = endpoint
            else:
                endpoint.transport.deadlines.deadline = deadline
            value = _dispatch(endpoint.session, call.method)(*call.args)
            return XapiResult(value=value)
        except Exception as exc:  # noqa: BLE001 - classify() re-raises what is not ours
            error = classify(exc)
            if endpoint is not None and error[0] != SESSION_INVALID and not isinstance(
                    exc, XenAPI.Failure):
                endpoint.transport.close()  # the connection's state is unknown: a new one next
            if endpoint is not None and error[0] == SESSION_INVALID:
                sessions.pop(key, None)
            return XapiResult(error=error)

    def _login(self, url: str, kind: str, timeout: float, deadline: float) -> _Endpoint:
        transport = transport_for(url, timeout, timeout, self.tls)
        transport.deadlines.deadline = deadline
        session = XenAPI.Session(session_uri(url), transport=transport)
        if kind == LOCAL_SESSION:
            session.slave_local_login_with_password(self.username, self.password)
        else:
            session.login_with_password(self.username, self.password, "1.0", self.originator)
        return _Endpoint(session, transport)

    def close(self) -> None:
        """Log out of this thread's sessions (best effort, briefly) and close them."""
        sessions = self._sessions()
        for endpoint in sessions.values():
            endpoint.transport.deadlines.deadline = time.monotonic() + 1.0
            try:
                endpoint.session.xenapi.session.logout()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass
            endpoint.transport.close()
        sessions.clear()


def _dispatch(session: Any, method: str) -> Callable[..., Any]:
    """``session.xenapi.<method>`` for a dotted name, ``Async.`` and ``event.from`` included."""
    target = session.xenapi
    for part in method.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


class PoolRoles(NamedTuple):
    """What each asked xapi says it is."""

    masters: Tuple[str, ...]  # addresses whose xapi answers a pool session: a master
    slaves: Dict[str, str]  # address -> the master address its HOST_IS_SLAVE names
    unreachable: Dict[str, str]  # address -> the transport code or xapi error

    @property
    def two_masters(self) -> bool:
        return len(self.masters) > 1


def find_masters(adapter: XapiAdapter, addresses: Tuple[str, ...], timeout: float,
                 answered: Tuple[str, ...] = ()) -> PoolRoles:
    """Ask every address which role its xapi has, following HOST_IS_SLAVE to a master address
    not asked yet. More than one master is a split the operator must see. ``answered``: master
    addresses the caller already holds a session on, not asked again (without a password, as
    on a host's own socket, asking a master costs xapi's 5 s failed-login delay)."""
    masters: List[str] = list(answered)
    slaves: Dict[str, str] = {}
    unreachable: Dict[str, str] = {}
    queue = list(addresses)
    asked = set(answered)
    while queue:
        address = queue.pop(0)
        if address in asked:
            continue
        asked.add(address)
        result = adapter.perform(XapiCall("pool.get_all", (), address, POOL_SESSION, timeout))
        if result.ok:
            masters.append(address)
        elif result.code == "HOST_IS_SLAVE" and len(result.error) > 1:
            slaves[address] = result.error[1]
            queue.append(result.error[1])
        else:
            unreachable[address] = result.code
    return PoolRoles(tuple(masters), slaves, unreachable)
