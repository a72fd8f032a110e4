"""Real servers on loopback for the alert channels' tests: an SMTP server (aiosmtpd) without
TLS, with STARTTLS or implicit TLS and a login; an HTTP server for the webhook; a server that
accepts and never answers. Each is a pytest fixture; the certificate is made by openssl."""
import http.server
import json
import socket
import subprocess
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

LOGIN, PASSWORD = "halizard", "s3cret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: the server's, and the CA the
    clients are given (ca_file)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


def server_context(cert, both_sides=False):
    """The server's TLS context. ``both_sides``: one that also works as a client's, for
    aiosmtpd's self-check of an implicit-TLS server, which wraps its probe with it."""
    import ssl
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS if both_sides else ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


class Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == LOGIN.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself


@pytest.fixture
def smtp(request, cert):
    """A real SMTP server on loopback: ``request.param`` is none | starttls | tls."""
    mode = getattr(request, "param", "none")
    inbox = Inbox()
    options = {}
    if mode == "starttls":
        options = dict(tls_context=server_context(cert), require_starttls=True,
                       authenticator=authenticator, auth_require_tls=True)
    elif mode == "tls":
        options = dict(ssl_context=server_context(cert, both_sides=True),
                       authenticator=authenticator, auth_require_tls=False)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    yield inbox, port, mode
    controller.stop()


class Silent:
    """A TCP server that accepts and never says a word (an SMTP greeting never comes, an HTTP
    answer never comes)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        # shutdown() wakes the blocked accept() (close() alone does not, on Linux): the thread
        # ends here, so no later test forks (multiprocessing) beside a stray thread.
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the silent server's accept() did not return"
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def start_hook():
    """An HTTP server on 127.0.0.1 (of the calling thread's namespace) that records each POST
    (path, content type, JSON) in ``received`` and answers ``status``."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    server.received = []
    server.status = 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def stop_hook(server):
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook():
    server = start_hook()
    yield server
    stop_hook(server)
