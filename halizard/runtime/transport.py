"""XML-RPC transports with deadlines, for the official ``XenAPI`` binding.

The binding has no timeout anywhere: a peer that drops packets blocks ``connect()`` for about two
minutes, and a hung xapi blocks ``recv()`` forever. These transports give every connection a
connect timeout and every read a read timeout. They also carry their own TLS context, because
``XenAPI.Session(..., ignore_ssl=True)`` drops its context as soon as a transport is passed.
"""
import http.client
import socket
import ssl
import xmlrpc.client
from typing import Any, Optional

ORIGINATOR = "halizard"


class _Deadlines:
    """Connect and read timeouts (seconds) for one transport."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive: connect %r, read %r"
                             % (connect_timeout, read_timeout))
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, deadlines: _Deadlines) -> None:
        super().__init__(host, timeout=deadlines.connect_timeout)
        self._deadlines = deadlines

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port),
                                             self._deadlines.connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self._deadlines.read_timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, deadlines: _Deadlines, context: ssl.SSLContext) -> None:
        super().__init__(host, timeout=deadlines.connect_timeout, context=context)
        self._deadlines = deadlines

    def connect(self) -> None:
        super().connect()  # TCP and the TLS handshake, both within the connect timeout
        assert self.sock is not None
        self.sock.settimeout(self._deadlines.read_timeout)


class TimeoutTransport(xmlrpc.client.Transport):
    """Plain HTTP with deadlines (the lab and the simulated pool; xapi's port 80)."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        super().__init__()
        self.deadlines = _Deadlines(connect_timeout, read_timeout)

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        cached = self._connection
        if cached[1] is not None and host == cached[0]:
            return cached[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        connection = _HTTPConnection(chost, self.deadlines)
        self._connection = host, connection
        return connection


class TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    """HTTPS with deadlines and an explicit TLS context (xapi's port 443)."""

    def __init__(self, connect_timeout: float, read_timeout: float,
                 context: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(context=context)
        self.deadlines = _Deadlines(connect_timeout, read_timeout)
        self.tls = context if context is not None else ssl.create_default_context()

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        cached = self._connection
        if isinstance(cached[1], http.client.HTTPSConnection) and host == cached[0]:
            return cached[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        connection = _HTTPSConnection(chost, self.deadlines, self.tls)
        self._connection = host, connection
        return connection


def unverified_context() -> ssl.SSLContext:
    """xapi's default certificate is self-signed: what ``ignore_ssl`` means, made explicit."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def transport_for(url: str, connect_timeout: float, read_timeout: float,
                  context: Optional[ssl.SSLContext] = None) -> xmlrpc.client.Transport:
    """The transport for ``url`` (http or https) with these deadlines."""
    if url.startswith("https://"):
        return TimeoutSafeTransport(connect_timeout, read_timeout, context)
    if url.startswith("http://"):
        return TimeoutTransport(connect_timeout, read_timeout)
    raise ValueError("xapi URL must start with http:// or https://: %r" % url)

