"""Alerts by e-mail, through ``smtplib``: implicit TLS, STARTTLS or plain, an optional login.

dom0 runs no mail server, so the server is always someone else's (HA-Lizard's default of
127.0.0.1 silently sends nothing). TLS is verified against the system's certificates or the
``ca_file`` given; a login is refused without TLS at configuration time. Every step (connect,
EHLO, STARTTLS, login, the message, QUIT) runs under one deadline for the whole delivery. One
wait escapes it: looking up a server given by name, which only the resolver's own timeout
ends (give an address to avoid it); it runs on the e-mail courier's thread, so it delays
nothing but the mail.
"""
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Optional

from halizard.core.alerts import Alert
from halizard.runtime.alertconfig import EmailSettings
from halizard.runtime.channel import ChannelError, Deadline


def tls_context(ca_file: Optional[str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def message(settings: EmailSettings, alert: Alert, dropped: int, hostname: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = " ".join(alert.subject.split())
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.recipients)
    msg["Date"] = formatdate(alert.wall or None, usegmt=True)
    msg["Message-ID"] = make_msgid("halizard", domain=hostname or None)
    msg["X-Halizard-Alert"] = "%s %s %s" % (alert.kind, alert.state, alert.severity)
    body = alert.text()
    if dropped:
        body += ("\n%d earlier alert%s could not be delivered by e-mail (the queue was full) and "
                 "were dropped; the journal on %s has them all.\n" % (
                     dropped, "" if dropped == 1 else "s", alert.host))
    msg.set_content(body)
    return msg


class Mailer:
    """The e-mail channel."""

    name = "email"

    def __init__(self, settings: EmailSettings, password: str = "",
                 hostname: Optional[str] = None) -> None:
        self.settings = settings
        self.password = password
        self.hostname = hostname or socket.gethostname()

    def describe(self) -> str:
        s = self.settings
        return "%s:%d (%s) to %s" % (s.server, s.port, s.security, ", ".join(s.recipients))

    def send(self, alert: Alert, dropped: int = 0) -> None:
        s = self.settings
        with Deadline(s.timeout) as deadline:
            self._deliver(deadline, message(s, alert, dropped, self.hostname))

    def _deliver(self, deadline: Deadline, msg: EmailMessage) -> None:
        s = self.settings
        context = tls_context(s.ca_file) if s.security != "none" else None
        where = "%s:%d" % (s.server, s.port)
        step = "connect to " + where
        smtp: Optional[smtplib.SMTP] = None
        try:
            timeout = deadline.left(step)
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(s.server, s.port, local_hostname=self.hostname,
                                        timeout=timeout, context=context)
            else:
                smtp = smtplib.SMTP(s.server, s.port, local_hostname=self.hostname,
                                    timeout=timeout)
            deadline.watch(smtp.sock)
            step = "EHLO at " + where
            deadline.step(smtp.sock, step)
            smtp.ehlo()
            if s.security == "starttls":
                step = "STARTTLS at " + where
                deadline.step(smtp.sock, step)
                if not smtp.has_extn("starttls"):
                    raise ChannelError("%s: the server does not offer STARTTLS" % step)
                smtp.starttls(context=context)
                deadline.watch(smtp.sock)
                deadline.step(smtp.sock, step)
                smtp.ehlo()
            if s.username is not None:
                step = "login as %s at %s" % (s.username, where)
                deadline.step(smtp.sock, step)
                smtp.login(s.username, self.password)
            step = "send to %s through %s" % (", ".join(s.recipients), where)
            deadline.step(smtp.sock, step)
            refused = smtp.send_message(msg, s.sender, list(s.recipients))
            if refused:
                raise ChannelError("%s: refused for %s" % (step, ", ".join(
                    "%s (%s)" % (r, _reply(refused[r])) for r in sorted(refused))))
            step = "QUIT at " + where
            deadline.step(smtp.sock, step)
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the message is accepted: a lost goodbye changes nothing
            smtp = None
        except ChannelError:
            raise
        except smtplib.SMTPResponseException as exc:  # the server said no: its code and words
            raise ChannelError("%s: %s" % (step, _reply((exc.smtp_code, exc.smtp_error)))) \
                from None
        except (smtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
            raise deadline.explain(step, exc) from None
        finally:
            if smtp is not None:
                try:
                    smtp.close()
                except OSError:
                    pass


def _reply(answer: object) -> str:
    if isinstance(answer, tuple) and len(answer) == 2:
        code, text = answer
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return "%s %s" % (code, text)
    return str(answer)

