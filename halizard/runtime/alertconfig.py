"""The ``[alerts]`` table of the daemon's file: how an administrator hears about an HA event.

Host-local, like the daemon's other runtime keys: each host sends its own alerts, and the
secrets they need (an SMTP password, a chat webhook's URL, which is a bearer token in most chat
tools) never go to the pool database. Every channel is optional except the journal, which
always gets every alert. Without the table, alerts go to the journal and, as XenAPI messages,
to the pool (XenCenter, Xen Orchestra).

    [alerts]
    reminder_interval = "1h"      # repeat a lasting condition this often ("0s": never)
    resolve_after = "60s"         # clear this long before it is resolved (flaps are one alert)
    queue_size = 100              # per channel; beyond it the oldest alert is dropped, counted
    xapi_messages = true          # a message on the pool: XenCenter, Xen Orchestra

    [alerts.email]
    server = "smtp.example.com"
    security = "starttls"         # starttls (port 587) | tls (implicit, 465) | none (25)
    from = "halizard@xs1.example.com"
    to = ["ops@example.com"]
    username = "halizard"         # optional: log in (only over TLS)
    password_file = "/etc/halizard/smtp-password"   # mode 0600
    timeout = "30s"               # the whole delivery of one alert

    [alerts.webhook]
    url = "https://chat.example.com/hooks/..."      # this file must then be mode 0600
    timeout = "10s"
"""
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from halizard.core.alerts import AlertPolicy
from halizard.core.config import Problem
from halizard.core.units import UnitError, parse_duration

SECURITY = ("starttls", "tls", "none")
DEFAULT_PORT = {"starttls": 587, "tls": 465, "none": 25}
MAX_QUEUE = 10000


@dataclass(frozen=True)
class EmailSettings:
    server: str
    sender: str
    recipients: Tuple[str, ...]
    security: str = "starttls"
    port: int = 587
    username: Optional[str] = None
    password_file: Optional[str] = None
    timeout: float = 30.0
    ca_file: Optional[str] = None  # verify the server against this bundle, not the system's


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    timeout: float = 10.0
    ca_file: Optional[str] = None

    def __repr__(self) -> str:  # the URL is a secret in most chat tools
        return "WebhookSettings(url=<%s>, timeout=%r)" % (urlsplit(self.url).hostname,
                                                            self.timeout)


@dataclass(frozen=True)
class AlertSettings:
    policy: AlertPolicy = AlertPolicy()
    queue_size: int = 100
    xapi_messages: bool = True
    email: Optional[EmailSettings] = None
    webhook: Optional[WebhookSettings] = None

    @property
    def holds_secret(self) -> bool:
        """A webhook URL is a bearer token: the file that holds it must be private."""
        return self.webhook is not None


def _duration(table: Mapping[str, Any], key: str, where: str, default: float,
              problems: List[Problem], allow_zero: bool = False) -> float:
    if key not in table:
        return default
    try:
        value = parse_duration(table[key])
    except UnitError as exc:
        problems.append(Problem(where + key, str(exc)))
        return default
    if value <= 0 and not (allow_zero and value == 0):
        problems.append(Problem(where + key, "must be longer than 0s"))
        return default
    return value


def _text(table: Mapping[str, Any], key: str, where: str, problems: List[Problem],
          required: bool = False) -> Optional[str]:
    value = table.get(key)
    if value is None:
        if required:
            problems.append(Problem(where + key, "required"))
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(Problem(where + key, "must be a non-empty string"))
        return None
    return value.strip()


def _unknown(table: Mapping[str, Any], known: Tuple[str, ...], where: str,
             problems: List[Problem]) -> None:
    for key in sorted(table):
        if key not in known:
            problems.append(Problem(where + key, "unknown key (known: %s)" % ", ".join(known)))


def _address(text: str) -> bool:
    local, _, domain = text.rpartition("@")
    return bool(local) and bool(domain) and not any(c.isspace() or c in "<>,;" for c in text)


def alert_settings(table: Mapping[str, Any], problems: List[Problem]) -> AlertSettings:
    """The ``alerts`` table of a parsed configuration (absent: the defaults); problems are
    appended, naming each key as ``alerts.email.server``."""
    raw = table.get("alerts")
    if raw is None:
        return AlertSettings()
    if not isinstance(raw, dict):
        problems.append(Problem("alerts", "must be a table: [alerts]"))
        return AlertSettings()
    where = "alerts."
    _unknown(raw, ("reminder_interval", "resolve_after", "queue_size", "xapi_messages", "email",
                   "webhook"), where, problems)
    policy = AlertPolicy(
        reminder_interval=_duration(raw, "reminder_interval", where, 3600.0, problems,
                                    allow_zero=True),
        resolve_after=_duration(raw, "resolve_after", where, 60.0, problems))
    size = raw.get("queue_size", 100)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_QUEUE:
        problems.append(Problem(where + "queue_size", "must be a whole number from 1 to %d"
                                % MAX_QUEUE))
        size = 100
    xapi = raw.get("xapi_messages", True)
    if not isinstance(xapi, bool):
        problems.append(Problem(where + "xapi_messages", "must be true or false"))
        xapi = True
    return AlertSettings(policy, size, xapi, _email(raw.get("email"), problems),
                         _webhook(raw.get("webhook"), problems))


def _email(raw: Any, problems: List[Problem]) -> Optional[EmailSettings]:
    if raw is None:
        return None
    where = "alerts.email."
    if not isinstance(raw, dict):
        problems.append(Problem("alerts.email", "must be a table: [alerts.email]"))
        return None
    _unknown(raw, ("server", "port", "security", "from", "to", "username", "password_file",
                   "timeout", "ca_file"), where, problems)
    before = len(problems)
    server = _text(raw, "server", where, problems, required=True)
    security = raw.get("security", "starttls")
    if security not in SECURITY:
        problems.append(Problem(where + "security", "must be one of %s, got %r"
                                % (", ".join(SECURITY), security)))
        security = "starttls"
    port = raw.get("port", DEFAULT_PORT[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(Problem(where + "port", "must be a TCP port number"))
        port = DEFAULT_PORT[security]
    sender = _text(raw, "from", where, problems, required=True)
    if sender is not None and not _address(sender):
        problems.append(Problem(where + "from", "%r is not a mail address" % sender))
    recipients = raw.get("to")
    if not isinstance(recipients, list) or not recipients or not all(
            isinstance(r, str) and _address(r.strip()) for r in recipients):
        problems.append(Problem(where + "to", "must be a non-empty list of mail addresses, e.g. "
                                "[\"ops@example.com\"]"))
        recipients = []
    username = _text(raw, "username", where, problems)
    password_file = _text(raw, "password_file", where, problems)
    if username is not None and password_file is None:
        problems.append(Problem(where + "password_file", "required with username: a file, "
                                "mode 0600, holding the SMTP password"))
    if password_file is not None and username is None:
        problems.append(Problem(where + "username", "required with password_file"))
    if username is not None and security == "none":
        problems.append(Problem(where + "security", "a login needs TLS (starttls or tls): the "
                                "password would cross the network in clear"))
    timeout = _duration(raw, "timeout", where, 30.0, problems)
    ca_file = _text(raw, "ca_file", where, problems)
    if len(problems) > before or server is None or sender is None:
        return None
    return EmailSettings(server, sender, tuple(r.strip() for r in recipients), security, port,
                         username, password_file, timeout, ca_file)


def _webhook(raw: Any, problems: List[Problem]) -> Optional[WebhookSettings]:
    if raw is None:
        return None
    where = "alerts.webhook."
    if not isinstance(raw, dict):
        problems.append(Problem("alerts.webhook", "must be a table: [alerts.webhook]"))
        return None
    _unknown(raw, ("url", "timeout", "ca_file"), where, problems)
    before = len(problems)
    url = _text(raw, "url", where, problems, required=True)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(Problem(where + "url", "must be an http:// or https:// URL"))
    timeout = _duration(raw, "timeout", where, 10.0, problems)
    ca_file = _text(raw, "ca_file", where, problems)
    if len(problems) > before or url is None:
        return None
    return WebhookSettings(url, timeout, ca_file)


def describe_settings(settings: AlertSettings) -> str:
    """One line for `config validate` and the daemon's start: where alerts go."""
    where = ["the journal"]
    if settings.xapi_messages:
        where.append("XenAPI messages on the pool")
    if settings.email is not None:
        e = settings.email
        where.append("e-mail to %s through %s:%d (%s%s)" % (
            ", ".join(e.recipients), e.server, e.port, e.security,
            ", login %s" % e.username if e.username else ""))
    if settings.webhook is not None:
        where.append("a webhook at %s" % urlsplit(settings.webhook.url).hostname)
    p = settings.policy
    return "alerts go to %s; a lasting condition is repeated every %s and resolved after %s " \
           "clear" % (", ".join(where), "never" if not p.reminder_interval
                      else "%gs" % p.reminder_interval, "%gs" % p.resolve_after)
