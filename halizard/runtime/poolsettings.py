"""The pool-wide settings at daemon start: read from the pool database, or from the last copy.

Timings and the gateway policy live in the pool's other-config (`halizard config set`), so both
hosts use the same values. The daemon reads them once at start, through its own xapi on a
master or through the master on a slave, and keeps a copy beside its state file: a slave that
starts while cut off from its master uses the last values it saw rather than different ones.
A change takes effect when the daemons restart (`halizard config set` says so).
"""

import logging
import os
from typing import Dict, Mapping, Optional, Tuple

from halizard.core.pool import KEY_CONFIG_PREFIX
from halizard.effects import LOCAL, POOL_SESSION, XapiCall
from halizard.runtime.localhost import LocalFileError, StateStore, read_pool_role
from halizard.runtime.settings import RuntimeSettings
from halizard.runtime.xapi import XapiAdapter

log = logging.getLogger("halizard.poolsettings")

READ_TIMEOUT = 5.0  # s per call; the daemon is starting, nothing waits on it yet


def cache_path(runtime: RuntimeSettings) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(runtime.state_file)),
                        "pool-settings.json")


def read_from_pool(adapter: XapiAdapter, runtime: RuntimeSettings) -> Optional[Dict[str, str]]:
    """The pool's ``halizard.config.*`` entries, or None when the pool cannot be asked."""
    try:
        role = read_pool_role(runtime.inventory_file, runtime.pool_conf_file)
    except LocalFileError:
        return None
    address = LOCAL if role.is_master else role.master_address
    refs = adapter.perform(XapiCall("pool.get_all", (), address, POOL_SESSION, READ_TIMEOUT))
    if not refs.ok or not refs.value:
        log.warning("pool-wide settings: cannot ask the pool (%s)", refs.code or "no pool")
        return None
    other = adapter.perform(XapiCall("pool.get_other_config", (refs.value[0],), address,
                                     POOL_SESSION, READ_TIMEOUT))
    if not other.ok or not isinstance(other.value, dict):
        log.warning("pool-wide settings: cannot read them (%s)", other.code or "not a map")
        return None
    return {k: str(v) for k, v in other.value.items()
            if isinstance(k, str) and k.startswith(KEY_CONFIG_PREFIX)}


def pool_settings(adapter: XapiAdapter, runtime: RuntimeSettings
                  ) -> Tuple[Mapping[str, str], str]:
    """The entries to lay over the file, and where they came from (for the journal)."""
    cache = StateStore(cache_path(runtime))
    fresh = read_from_pool(adapter, runtime)
    if fresh is not None:
        if cache.load() != fresh:
            try:
                cache.save(fresh)
            except OSError as exc:
                log.warning("pool-wide settings: cannot keep a copy in %s: %s", cache.path, exc)
        return fresh, "the pool database"
    saved = cache.load()
    if saved is not None:
        return {str(k): str(v) for k, v in saved.items()}, "the copy saved at the last start"
    return {}, "nowhere (no pool answer, no saved copy): the file's values"


def describe(entries: Mapping[str, str]) -> str:
    return ", ".join("%s=%s" % (k[len(KEY_CONFIG_PREFIX):], v) for k, v in
                     sorted(entries.items())) or "none set"



