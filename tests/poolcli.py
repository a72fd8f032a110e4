"""Helpers for the operator's commands against the wire-level simulated pool, with the real
XenAPI client underneath (halizard.admin over halizard.runtime.xapi)."""
import os
import time

import XenAPI

from halizard.cli import main
from halizard.core.pool import DaemonReport, status_key
from halizard.runtime.transport import transport_for
from simulations.xapi import SimulatedPool


def start_pool(vms, **options):
    options.setdefault("speed", 20.0)
    options.setdefault("boot_time", (3.0, 4.0))
    return SimulatedPool(hosts=["xs1", "xs2"], master="xs1", vms=vms, **options).start()


def login_args(pool, tmp_path, host="xs1"):
    """--xapi and --password-file for ``host``'s endpoint (the file private, as required)."""
    secret = tmp_path / "password"
    secret.write_text(pool.credentials[1] + "\n")
    os.chmod(str(secret), 0o600)
    return ["--xapi", pool.url(host), "--password-file", str(secret)]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def session(pool, host="xs1"):
    url = pool.url(host)
    s = XenAPI.Session(url, transport=transport_for(url, 5.0, 5.0))
    s.xenapi.login_with_password(*pool.credentials)
    return s


def vm_record(pool, name, host="xs1"):
    s = session(pool, host)
    return s.xenapi.VM.get_record(s.xenapi.VM.get_by_uuid(pool.vm_uuid(name)))


def pool_other_config(pool, host="xs1"):
    s = session(pool, host)
    return s.xenapi.pool.get_other_config(s.xenapi.pool.get_all()[0])


def set_pool_key(pool, key, value, host="xs1"):
    """Set (None: remove) one key of the pool's other_config, as another client would."""
    s = session(pool, host)
    ref = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.remove_from_other_config(ref, key)
    if value is not None:
        s.xenapi.pool.add_to_other_config(ref, key, value)


def publish(pool, host, value=None, state="normal", age=1.0, reason="peer visible"):
    """What a host's daemon publishes (``value``: the raw text, for garbage)."""
    if value is None:
        value = DaemonReport(state, reason, time.time() - age, 0.4, 0.6, "0.1.0").encode()
    set_pool_key(pool, status_key(pool.host_uuid(host)), value)
