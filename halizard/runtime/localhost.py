"""What the daemon reads and writes on its own disk: the pool role files and its state file.

The role comes from xapi's own files, never from xapi: a slave cut off from its master still
knows its identity (``INSTALLATION_UUID`` in the xensource inventory) and whom it follows
(``/etc/xensource/pool.conf`` holds ``master`` or ``slave:<master address>``). xapi rewrites
pool.conf when the role changes (designate_new_master, emergency_transition_to_master).

The state file is written atomically (a temporary file, fsync, rename) so a crash or a power
loss leaves the old version or the new one, never half of either.
"""
import json
import os
import re
import tempfile
from typing import Any, Mapping, Optional

from halizard.effects import PoolRole

_INVENTORY_UUID = re.compile(r"^\s*INSTALLATION_UUID\s*=\s*['\"]?([0-9a-fA-F-]{36})['\"]?\s*$",
                             re.MULTILINE)


class LocalFileError(RuntimeError):
    """A file xapi keeps is missing or unreadable: the daemon cannot know its role."""


def read_pool_role(inventory_file: str, pool_conf_file: str) -> PoolRole:
    try:
        with open(inventory_file, encoding="utf-8") as handle:
            inventory = handle.read()
        with open(pool_conf_file, encoding="utf-8") as handle:
            pool_conf = handle.read().strip()
    except OSError as exc:
        raise LocalFileError("cannot read %s: %s" % (exc.filename, exc.strerror)) from None
    match = _INVENTORY_UUID.search(inventory)
    if match is None:
        raise LocalFileError("%s has no INSTALLATION_UUID line" % inventory_file)
    host_uuid = match.group(1).lower()
    if pool_conf == "master":
        return PoolRole(host_uuid, True, None)
    if pool_conf.startswith("slave:") and pool_conf[6:].strip():
        return PoolRole(host_uuid, False, pool_conf[6:].strip())
    raise LocalFileError("%s holds %r, neither \"master\" nor \"slave:<address>\""
                         % (pool_conf_file, pool_conf[:80]))


class StateStore:
    """The daemon's persisted state (halizard.effects.LoadState / SaveState) as one JSON file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Optional[Mapping[str, Any]]:
        """The saved mapping, or None when there is none or it is unreadable (a daemon starts
        with no memory rather than not at all: the cache only saves reads)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, data: Mapping[str, Any]) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
