"""The controller's control socket: one JSON request per connection, one JSON answer.

A Unix socket in the lab directory, so that the `fault` and `status` commands, the tests and the
``xl`` shims running inside the host namespaces all reach the controller whatever namespace
they are in (a path-bound Unix socket belongs to the filesystem, not to a network namespace).
Requests are ``{"cmd": NAME, ...}``; answers ``{"ok": true, ...}`` or ``{"ok": false,
"error": TEXT}``. A handler's exception becomes an error answer, never a dead controller.
"""
import json
import os
import socket
import threading
import traceback
from typing import Any, Callable, Dict, Optional

from simulations.lab.xl import ask

Handler = Callable[[Dict[str, Any]], Dict[str, Any]]
READ_TIMEOUT = 5.0  # s for a client to send its request line
MAX_REQUEST = 1 << 20


class ControlError(RuntimeError):
    """The controller answered with an error, or could not be reached."""


def request(path: str, cmd: str, timeout: float = 30.0, **fields: Any) -> Dict[str, Any]:
    """Ask the controller; its answer, or ControlError."""
    message: Dict[str, Any] = {"cmd": cmd}
    message.update(fields)
    try:
        answer = ask(path, message, timeout)
    except (OSError, ValueError) as exc:
        raise ControlError("lab controller at %s: %s" % (path, exc)) from None
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "failed")))
    return answer


class ControlServer:
    def __init__(self, path: str, handler: Handler,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.path = path
        self.handler = handler
        self.log = log or (lambda line: None)
        if os.path.exists(path):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        os.chmod(path, 0o600)
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="control-conn",
                             daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(READ_TIMEOUT)
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
            try:
                message = json.loads(data.decode("utf-8"))
                if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
                    raise ValueError("a request is an object with a \"cmd\"")
            except ValueError as exc:
                answer: Dict[str, Any] = {"ok": False, "error": "bad request: %s" % exc}
            else:
                try:
                    answer = self.handler(message)
                except Exception as exc:  # noqa: BLE001 - answered, logged, survived
                    self.log("request %r failed:\n%s" % (message, traceback.format_exc()))
                    answer = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            client.settimeout(None)
            client.sendall(json.dumps(answer).encode("utf-8") + b"\n")
        except OSError:
            pass
        finally:
            client.close()
