"""Alerts as an HTTP POST of the alert's JSON (Alert.to_dict): for chat tools and the like.

Any 2xx answer is a delivery; anything else, or no answer by the deadline, is a failure the
courier retries. HTTPS is verified against the system's certificates or the ``ca_file`` given.
The URL often carries the chat tool's token, so it is never logged whole.
"""
import http.client
import json
import ssl
from typing import Optional
from urllib.parse import urlsplit

from halizard import __version__
from halizard.core.alerts import Alert
from halizard.runtime.alertconfig import WebhookSettings
from halizard.runtime.channel import ChannelError, Deadline

MAX_ANSWER = 64 * 1024  # bytes of the answer read (and ignored)


def document(alert: Alert, dropped: int) -> bytes:
    data = alert.to_dict()
    data["dropped"] = dropped
    data["halizard"] = __version__
    return json.dumps(data, sort_keys=True).encode("utf-8")


class Webhook:
    """The webhook channel."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.shown = "%s://%s%s/..." % (parts.scheme, self.host,
                                        ":%d" % parts.port if parts.port else "")

    def describe(self) -> str:
        return self.shown

    def send(self, alert: Alert, dropped: int = 0) -> None:
        with Deadline(self.settings.timeout) as deadline:
            self._post(deadline, document(alert, dropped))

    def _post(self, deadline: Deadline, body: bytes) -> None:
        step = "connect to " + self.shown
        connection: Optional[http.client.HTTPConnection] = None
        try:
            timeout = deadline.left(step)
            if self.https:
                context = ssl.create_default_context(cafile=self.settings.ca_file)
                connection = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                                         context=context)
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            connection.connect()
            deadline.watch(connection.sock)
            step = "POST to " + self.shown
            deadline.step(connection.sock, step)
            connection.request("POST", self.path, body, {
                "Content-Type": "application/json",
                "User-Agent": "halizard/%s" % __version__})
            response = connection.getresponse()
            response.read(MAX_ANSWER)
            if not 200 <= response.status < 300:
                raise ChannelError("%s: HTTP %d %s" % (step, response.status, response.reason))
        except ChannelError:
            raise
        except (http.client.HTTPException, OSError, ssl.SSLError, ValueError) as exc:
            raise deadline.explain(step, exc) from None
        finally:
            if connection is not None:
                connection.close()
