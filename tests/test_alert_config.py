"""The ``[alerts]`` table: checked with the rest of the daemon's file, every problem named, secrets
kept private (an SMTP password in a 0600 file, a webhook URL only in a 0600 file), and
``halizard alert test`` sending through each channel a host has configured."""
import os
import textwrap

import pytest

from halizard.cli import main
from halizard.core.config import ConfigError
from halizard.runtime.settings import load_host_config
from tests.servers import free_port

pytestmark = pytest.mark.runtime

BASE = textwrap.dedent("""\
    peer_addresses = ["198.18.0.12"]
    gateway_addresses = ["198.18.0.1"]
    """)


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(str(path), mode)
    return str(path)


def test_a_full_alerts_table_loads(tmp_path):
    secret = write(tmp_path / "smtp-password", "pa55\n")
    config = write(tmp_path / "halizard.toml", BASE + textwrap.dedent("""\
        [alerts]
        reminder_interval = "30m"
        resolve_after = "2m"
        queue_size = 50
        xapi_messages = false
        [alerts.email]
        server = "smtp.example.com"
        security = "tls"
        from = "halizard@xs1.example.com"
        to = ["ops@example.com"]
        username = "halizard"
        password_file = "%s"
        timeout = "20s"
        [alerts.webhook]
        url = "https://chat.example.com/hooks/T0K3N"
        """ % secret))
    hc = load_host_config(config)
    settings = hc.alerts.settings
    assert settings.policy.reminder_interval == 1800.0 and settings.policy.resolve_after == 120.0
    assert settings.queue_size == 50 and not settings.xapi_messages
    assert settings.email.port == 465 and settings.email.timeout == 20.0
    assert settings.email.recipients == ("ops@example.com",)
    assert hc.alerts.smtp_password == "pa55" and "pa55" not in repr(hc)
    assert "T0K3N" not in repr(hc)


def test_every_problem_of_the_alerts_table_is_named(tmp_path):
    loose = write(tmp_path / "smtp-password", "pa55", 0o644)
    config = write(tmp_path / "halizard.toml", BASE + textwrap.dedent("""\
        [alerts]
        reminder_intervall = "1h"
        queue_size = 0
        [alerts.email]
        server = "smtp.example.com"
        security = "none"
        from = "not an address"
        to = "ops@example.com"
        username = "halizard"
        password_file = "%s"
        [alerts.webhook]
        url = "ftp://chat.example.com/x"
        """ % loose), 0o644)
    with pytest.raises(ConfigError) as failure:
        load_host_config(config)
    text = str(failure.value)
    for expected in ("alerts.reminder_intervall: unknown key",
                     "alerts.queue_size: must be a whole number from 1 to",
                     "alerts.email.from: 'not an address' is not a mail address",
                     "alerts.email.to: must be a non-empty list of mail addresses",
                     "alerts.email.security: a login needs TLS",
                     "alerts.webhook.url: must be an http:// or https:// URL"):
        assert expected in text, expected


def test_secrets_must_be_private(tmp_path):
    loose = write(tmp_path / "smtp-password", "pa55", 0o644)
    config = write(tmp_path / "halizard.toml", BASE + textwrap.dedent("""\
        [alerts.email]
        server = "smtp.example.com"
        from = "halizard@example.com"
        to = ["ops@example.com"]
        username = "halizard"
        password_file = "%s"
        [alerts.webhook]
        url = "https://chat.example.com/hooks/T0K3N"
        """ % loose), 0o644)
    with pytest.raises(ConfigError) as failure:
        load_host_config(config)
    text = str(failure.value)
    assert "alerts.email.password_file: the SMTP password file %s is mode 0644" % loose in text
    assert "alerts.webhook: the configuration file (it holds the webhook URL)" in text


def test_validate_says_where_alerts_go_and_show_hides_the_webhook(tmp_path, capsys):
    config = write(tmp_path / "halizard.toml", BASE + textwrap.dedent("""\
        [alerts.email]
        server = "198.18.0.25"
        from = "halizard@example.com"
        to = ["ops@example.com"]
        [alerts.webhook]
        url = "https://chat.example.com/hooks/T0K3N"
        """))
    assert main(["config", "validate", config]) == 0
    out = capsys.readouterr().out
    assert ("alerts go to the journal, XenAPI messages on the pool, e-mail to ops@example.com "
            "through 198.18.0.25:587 (starttls), a webhook at chat.example.com") in out
    from halizard.cli_config import describe
    from halizard.toml import load_file

    shown = describe("alerts", load_file(config)["alerts"])
    assert shown["webhook"] == "(URL hidden)" and "T0K3N" not in str(shown)


# --- halizard alert test ------------------------------------------------------------------------


@pytest.fixture
def rig(tmp_path, pool, smtp, hook):
    """A host's file naming the simulated pool's master socket, the SMTP server and the hook."""
    _, port, _ = smtp
    (tmp_path / "inventory").write_text("INSTALLATION_UUID='%s'\n" % pool.host_uuid("xs1"))
    (tmp_path / "pool.conf").write_text("master")
    password = write(tmp_path / "xapi-password", pool.credentials[1])

    def config(mail_port=port):
        return write(tmp_path / "halizard.toml", BASE + textwrap.dedent("""\
            xapi_url = "unix:%(socket)s"
            xapi_password_file = "%(password)s"
            inventory_file = "%(d)s/inventory"
            pool_conf_file = "%(d)s/pool.conf"
            [alerts.email]
            server = "127.0.0.1"
            port = %(mail)d
            security = "none"
            from = "halizard@xs1.example"
            to = ["ops@example.com"]
            timeout = "3s"
            [alerts.webhook]
            url = "http://127.0.0.1:%(hook)d/hooks/T0K3N"
            """ % {"socket": pool.unix_path("xs1"), "password": password, "d": tmp_path,
                   "mail": mail_port, "hook": hook.server_address[1]}))

    return config


@pytest.fixture
def pool(tmp_path):
    from simulations.xapi import SimulatedPool

    p = SimulatedPool(hosts=["xs1", "xs2"], master="xs1", speed=20.0, unix_dir=str(tmp_path))
    p.start()
    yield p
    p.stop()


def test_alert_test_sends_through_every_channel_and_says_how_each_went(rig, pool, smtp, hook,
                                                                       capsys):
    inbox = smtp[0]
    assert main(["alert", "test", "--config", rig()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["journal", "xapi", "email", "webhook"]
    assert all(" delivered (" in line for line in out), out
    assert len(inbox.envelopes) == 1
    assert hook.received[0][2]["kind"] == "test"
    assert [m["name"] for m in pool.messages("xs1")] == ["HALIZARD_TEST"]
    assert "T0K3N" not in "\n".join(out)


def test_alert_test_fails_on_a_channel_that_does_not_deliver(rig, capsys):
    down = free_port()
    assert main(["alert", "test", "--channel", "email", "--config", rig(mail_port=down)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("email    failed: connect to 127.0.0.1:%d: " % down)
    assert main(["alert", "test", "--channel", "webhook", "--channel", "email",
                 "--config", rig()]) == 0
