"""A TCP forwarder: a host's xapi port on the lab network, relayed to the simulated xapi.

Why: the simulated pool's endpoints listen in the controller's own namespace; the peer's daemon
must reach a host's xapi only across the lab network, so that a cut switch port or a crashed
host cuts xapi traffic exactly as it cuts the heartbeat. Each host namespace therefore gets a
listener on the host's lab address whose connections are relayed to that host's endpoint.

It relays to the endpoint's TCP side on the controller's loopback, not to its Unix socket: the
model treats Unix-socket callers as local root (pre-authenticated, never told HOST_IS_SLAVE),
which a peer coming over the network is not.

The listener follows the host's xapi (``set_listening``): while the model's xapi is down or
restarting nothing listens, so the peer's connect is refused by the host's kernel, as with a
real xapi. A reset from the endpoint is passed on as a reset (SO_LINGER 0), an orderly close as
a close.
"""
import os
import select
import socket
import struct
import threading
from typing import List, Optional, Set, Tuple

from simulations.lab import netns
from simulations.lab.netns import NamespaceWorker

BUFFER = 65536
CONNECT_TIMEOUT = 2.0  # s, to the endpoint on the controller's loopback


def _abort(sock: socket.socket) -> None:
    """Close with a reset (RST), not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pair:
    """One relayed connection: client (lab network) and upstream (the endpoint)."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = False
        self.lock = threading.Lock()

    def abort(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        _abort(self.client)
        _abort(self.upstream)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.client.close()
        self.upstream.close()


class Forwarder:
    """``listen`` = (address, port) in namespace ``worker.ns``, relayed to ``target``."""

    def __init__(self, worker: NamespaceWorker, listen: Tuple[str, int],
                 target: Tuple[str, int]) -> None:
        self.worker = worker
        self.listen_at = listen
        self.target = target
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._pairs: Set[_Pair] = set()
        self._want = False
        self.connections = 0  # accepted so far (for tests and status)
        # The accept thread is born in the host namespace (the worker starts it) and goes home
        # at once, so that its relays reach the endpoint on the controller's own loopback.
        self._home = netns.own_namespace_fd()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def set_listening(self, on: bool) -> None:
        """Open or close the listener, asynchronously, in the namespace's own thread (callers
        hold the model's lock and must not wait)."""
        with self._lock:
            if self._want == on:
                return
            self._want = on
        self.worker.submit(self._open if on else self._close)

    def set_listening_now(self, on: bool) -> None:
        """The same, waiting until it is done (start-up and tests)."""
        with self._lock:
            self._want = on
        self.worker.call(self._open if on else self._close)

    def _open(self) -> None:
        with self._lock:
            if not self._want or self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(self.listen_at)
                sock.listen(64)
            except OSError:
                sock.close()
                raise
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True,
                         name="fwd-accept-%s" % self.worker.ns).start()

    def _close(self) -> None:
        with self._lock:
            if self._want or self._listener is None:
                return
            sock, self._listener = self._listener, None
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        except OSError:
            pass
        sock.close()

    def stop(self) -> None:
        self.set_listening_now(False)
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.abort()
        os.close(self._home)

    def _accept(self, sock: socket.socket) -> None:
        netns.enter_fd(self._home, "the controller's namespace")
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._relay, args=(client,), daemon=True,
                             name="fwd-%s" % self.worker.ns).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, CONNECT_TIMEOUT)
        except OSError:
            _abort(client)  # the endpoint went away between our listen and its: a reset
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(None)
        pair = _Pair(client, upstream)
        with self._lock:
            self._pairs.add(pair)
        try:
            self._pump(pair)
        finally:
            with self._lock:
                self._pairs.discard(pair)
            pair.close()

    @staticmethod
    def _pump(pair: _Pair) -> None:
        """Both directions in one thread; a half-close is passed on, a reset aborts both."""
        other = {pair.client: pair.upstream, pair.upstream: pair.client}
        open_ends: List[socket.socket] = [pair.client, pair.upstream]
        while open_ends and not pair.closed:
            try:
                readable, _, _ = select.select(open_ends, [], [], 1.0)
            except (OSError, ValueError):
                return  # a socket was closed under us (stop)
            for sock in readable:
                try:
                    data = sock.recv(BUFFER)
                except OSError:
                    pair.abort()
                    return
                if not data:
                    open_ends.remove(sock)
                    try:
                        other[sock].shutdown(socket.SHUT_WR)
                    except OSError:
                        pair.abort()
                        return
                    continue
                try:
                    other[sock].sendall(data)
                except OSError:
                    pair.abort()
                    return
