"""One host's xapi endpoint on a real socket: HTTP/1.1 with keep-alive, a thread per connection.

What the listening socket does follows the model's state of that host's xapi:

* up, in emergency mode or hung: connections are accepted; a hung xapi never answers.
* starting or stopped while the host has power: nothing listens, so connections are refused,
  and connections of the process that went away are reset.
* host powered off (crash, fence): connections are accepted by the kernel and never answered,
  like a host that dropped off the network (a real client sees its own timeout, never a reset).
  When the host boots again, connections of the previous boot are reset.

Calls go into the model through ``RealTime.run``; the connection's thread waits for the model's
one answer, for as long as it takes (a hung call waits until the endpoint resets it).
"""
import http.server
import os
import socket
import ssl
import struct
import threading
from typing import Any, Callable, List, Optional, Set, Tuple

from simulations.xapi.fabric import Failure, Ok, Outcome
from simulations.xapi.wire import (
    MAX_BODY,
    ParseError,
    encode_response,
    parse_error_page,
    parse_request,
)

RPC_PATHS = ("/", "/RPC2")
POLL = 0.05  # seconds between looks at a connection that waits for its answer
HANDSHAKE_TIMEOUT = 5.0  # seconds a client may take over its TLS handshake


class _Slot:
    """Where the model's one answer to a call lands (set under the model's lock)."""

    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcome: Optional[Outcome] = None

    def set(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.event.set()


class _Connection:
    __slots__ = ("sock", "transport", "generation", "aborted", "slot")

    def __init__(self, sock: socket.socket, transport: str, generation: int) -> None:
        self.sock = sock
        self.transport = transport  # "tcp" or "unix" (root, pre-authenticated)
        self.generation = generation
        self.aborted = False
        self.slot: Optional[_Slot] = None

    def abort(self) -> None:
        """Reset the connection (RST, not FIN) and wake its thread."""
        self.aborted = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        slot = self.slot
        if slot is not None:
            slot.event.set()


Call = Callable[[str, List[Any], Callable[[Outcome], None], str], None]


class Endpoint:
    """The socket side of one host's xapi: its TCP address and port, and optionally a Unix
    socket like /var/lib/xcp/xapi. ``call(method, params, reply, transport)`` reaches the
    model."""

    def __init__(self, name: str, address: str, port: int, call: Call,
                 unix_path: Optional[str] = None, tls: Optional[ssl.SSLContext] = None) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.unix_path = unix_path
        self.tls = tls  # HTTPS on the TCP port (xapi's 443), with this server context
        self._call = call
        self._lock = threading.Lock()
        self._listeners: List[socket.socket] = []
        self._connections: Set[_Connection] = set()
        self.generation = 0
        self.calls = 0

    # --- listening ------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    def listen(self) -> None:
        if self._listeners:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.address, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        self.port = sock.getsockname()[1]
        listeners = [(sock, "tcp")]
        if self.unix_path is not None:
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)  # left by the previous incarnation
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(self.unix_path)
            unix.listen(64)
            listeners.append((unix, "unix"))
        for listener, transport in listeners:
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, transport),
                             name="xapi-%s-accept" % self.name, daemon=True).start()

    def stop_listening(self) -> None:
        listeners, self._listeners = self._listeners, []
        for sock in listeners:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it (Linux)
            except OSError:
                pass
            sock.close()
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)  # connecting now fails, as with no xapi

    def reset_connections(self) -> None:
        """The process behind the endpoint is gone: every open connection is reset."""
        self.generation += 1
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.abort()

    def close(self) -> None:
        self.stop_listening()
        self.reset_connections()

    def _accept(self, sock: socket.socket, transport: str) -> None:
        while True:
            try:
                client, peer = sock.accept()
            except OSError:
                return  # the listener was closed
            if sock not in self._listeners:
                client.close()
                return
            if transport == "tcp":
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay
            else:
                peer = ("unix", 0)
            conn = _Connection(client, transport, self.generation)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn, peer),
                             name="xapi-%s-conn" % self.name, daemon=True).start()

    def _serve(self, conn: _Connection, peer: Tuple[str, int]) -> None:
        try:
            if self.tls is not None and conn.transport == "tcp":
                conn.sock.settimeout(HANDSHAKE_TIMEOUT)
                conn.sock = self.tls.wrap_socket(conn.sock, server_side=True)
                conn.sock.settimeout(None)
            _Handler(conn.sock, peer, self, conn)
        except (OSError, ValueError):
            pass  # the connection was reset under the handler
        finally:
            with self._lock:
                self._connections.discard(conn)
            try:
                conn.sock.close()
            except OSError:
                pass

    # --- one call -------------------------------------------------------------------------------

    def answer(self, conn: _Connection, method: str, params: List[Any]) -> Optional[Outcome]:
        """The model's answer, or None when the connection was reset while waiting."""
        slot = _Slot()
        conn.slot = slot
        self.calls += 1
        self._call(method, params, slot.set, conn.transport)
        while not slot.event.wait(POLL):
            if conn.aborted or conn.generation != self.generation:
                break
        conn.slot = None
        if conn.aborted or conn.generation != self.generation:
            return None
        return slot.outcome


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as xapi
    server_version = "xapi"
    sys_version = ""

    def __init__(self, sock: socket.socket, peer: Tuple[str, int], endpoint: Endpoint,
                 conn: _Connection) -> None:
        self.endpoint = endpoint
        self.conn = conn
        super().__init__(sock, peer, None)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass

    def do_POST(self) -> None:
        if self.path not in RPC_PATHS:
            self._plain(404, b"<html><body><h1>HTTP 404 not found</h1></body></html>")
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._plain(500, parse_error_page("body of %d bytes" % length))
            self.close_connection = True
            return
        body = self.rfile.read(length)
        try:
            method, params = parse_request(body)
        except ParseError as exc:
            self._plain(500, parse_error_page(str(exc)))
            return
        outcome = self.endpoint.answer(self.conn, method, params)
        if not isinstance(outcome, (Ok, Failure)):  # refused, reset, or the connection died
            self.conn.abort()
            self.close_connection = True
            return
        self._plain(200, encode_response(outcome), "text/xml")

    def _plain(self, code: int, body: bytes, content_type: str = "text/html") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
