"""XML-RPC transports with deadlines, for the official ``XenAPI`` binding.

The binding has no timeout anywhere: a peer that drops packets blocks ``connect()`` for about two
minutes, and a hung xapi blocks ``recv()`` forever. These transports give every connection a
connect timeout and every read a read timeout. They also carry their own TLS context, because
``XenAPI.Session(..., ignore_ssl=True)`` drops its context as soon as a transport is passed.
"""
import http.client
import socket
import ssl
import time
import xmlrpc.client
from typing import Any, Optional, Union

ORIGINATOR = "halizard"


class _Deadlines:
    """Connect and read timeouts (seconds) for one transport, and optionally an absolute
    deadline (time.monotonic) that no request may outlast, whatever the timeouts say."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive: connect %r, read %r"
                             % (connect_timeout, read_timeout))
        self.connect = connect_timeout
        self.read = read_timeout
        self.deadline: Optional[float] = None

    def _bounded(self, timeout: float) -> float:
        if self.deadline is None:
            return timeout
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        return min(timeout, remaining)

    def connect_timeout(self) -> float:
        return self._bounded(self.connect)

    def read_timeout(self) -> float:
        return self._bounded(self.read)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, deadlines: _Deadlines) -> None:
        super().__init__(host, timeout=deadlines.connect)
        self._deadlines = deadlines

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port),
                                             self._deadlines.connect_timeout())
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self._deadlines.read_timeout())


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, deadlines: _Deadlines, context: ssl.SSLContext) -> None:
        super().__init__(host, timeout=deadlines.connect, context=context)
        self._deadlines = deadlines

    def connect(self) -> None:
        self.timeout = self._deadlines.connect_timeout()
        super().connect()  # TCP and the TLS handshake, both within the connect timeout
        assert self.sock is not None
        self.sock.settimeout(self._deadlines.read_timeout())


def _before_request(transport: Any, deadlines: _Deadlines) -> None:
    """A kept-alive connection gets the read timeout this request may still use."""
    connection = transport._connection[1]
    sock = getattr(connection, "sock", None) if connection is not None else None
    if sock is not None:
        sock.settimeout(deadlines.read_timeout())
    else:
        deadlines.read_timeout()  # raises if the deadline has passed already


class _DeadlineTransport(xmlrpc.client.Transport):
    """What the three transports share: the deadline applied before every request, and one
    kept-alive connection made by ``_connect_to``."""

    deadlines: _Deadlines

    def request(self, host: Any, handler: Any, request_body: Any, verbose: bool = False) -> Any:
        _before_request(self, self.deadlines)
        return super().request(host, handler, request_body, verbose)

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        cached = self._connection
        if cached[1] is not None and host == cached[0]:
            return cached[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        connection = self._connect_to(chost)
        self._connection = host, connection
        return connection

    def _connect_to(self, chost: str) -> http.client.HTTPConnection:
        raise NotImplementedError


class TimeoutTransport(_DeadlineTransport):
    """Plain HTTP with deadlines (the lab and the simulated pool; xapi's port 80)."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        super().__init__()
        self.deadlines = _Deadlines(connect_timeout, read_timeout)

    def _connect_to(self, chost: str) -> http.client.HTTPConnection:
        return _HTTPConnection(chost, self.deadlines)


# (mypy: SafeTransport says make_connection returns an HTTPSConnection; ours is typed as its base)
class TimeoutSafeTransport(_DeadlineTransport, xmlrpc.client.SafeTransport):  # type: ignore[misc]
    """HTTPS with deadlines and an explicit TLS context (xapi's port 443)."""

    def __init__(self, connect_timeout: float, read_timeout: float,
                 context: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(context=context)
        self.deadlines = _Deadlines(connect_timeout, read_timeout)
        self.tls = context if context is not None else ssl.create_default_context()

    def _connect_to(self, chost: str) -> http.client.HTTPConnection:
        return _HTTPSConnection(chost, self.deadlines, self.tls)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, deadlines: _Deadlines) -> None:
        super().__init__("localhost", timeout=deadlines.connect)
        self._path = path
        self._deadlines = deadlines

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._deadlines.connect_timeout())
            sock.connect(self._path)
            sock.settimeout(self._deadlines.read_timeout())
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixTransport(_DeadlineTransport):
    """This host's own xapi over its Unix socket (/var/lib/xcp/xapi): root without a password,
    and no HOST_IS_SLAVE, so a slave can reach its own xapi whatever its master does."""

    def __init__(self, path: str, connect_timeout: float, read_timeout: float) -> None:
        super().__init__()
        self.path = path
        self.deadlines = _Deadlines(connect_timeout, read_timeout)

    def _connect_to(self, chost: str) -> http.client.HTTPConnection:
        return _UnixConnection(self.path, self.deadlines)


UNIX_PREFIX = "unix:"


def session_uri(url: str) -> str:
    """What to give XenAPI.Session for ``url``: a Unix socket URL becomes a placeholder HTTP
    URI (the transport knows the path; the binding accepts only http and https)."""
    return "http://localhost/" if url.startswith(UNIX_PREFIX) else url


def unverified_context() -> ssl.SSLContext:
    """xapi's default certificate is self-signed: what ``ignore_ssl`` means, made explicit."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def transport_for(url: str, connect_timeout: float, read_timeout: float,
                  context: Optional[ssl.SSLContext] = None
                  ) -> Union[TimeoutTransport, TimeoutSafeTransport, UnixTransport]:
    """The transport for ``url`` (http://, https:// or unix:PATH) with these deadlines."""
    if url.startswith(UNIX_PREFIX):
        return UnixTransport(url[len(UNIX_PREFIX):], connect_timeout, read_timeout)
    if url.startswith("https://"):
        return TimeoutSafeTransport(connect_timeout, read_timeout, context)
    if url.startswith("http://"):
        return TimeoutTransport(connect_timeout, read_timeout)
    raise ValueError("xapi URL must start with http://, https:// or unix: %r" % url)

