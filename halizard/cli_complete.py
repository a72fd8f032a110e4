"""`halizard _complete vms|hosts|keys [--xapi URL] [--user U] [--password-file F]`: the words bash
completion offers (completion/halizard.bash), one per line. Hidden, quick, and quiet: anything
that goes wrong (no xapi here, a slow master) completes nothing rather than printing errors
into the operator's command line."""
import argparse
import os
from typing import List, Sequence

COMPLETE_TIMEOUT = 2.0  # seconds: a completion that takes longer is worth less than none
KINDS = ("vms", "hosts", "keys")


def words(kind: str, argv: Sequence[str]) -> List[str]:
    from halizard.core.config import POOL_WIDE_KEYS

    if kind == "keys":
        return list(POOL_WIDE_KEYS)
    from halizard.admin import connect, read_view
    from halizard.cli_pool import LOCAL_XAPI, adapter_for

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--xapi", default=os.environ.get("HALIZARD_XAPI", LOCAL_XAPI))
    parser.add_argument("--user", default="root")
    parser.add_argument("--password-file")
    args, _ = parser.parse_known_args(list(argv))
    adapter = adapter_for(args.xapi, args.user, args.password_file)
    view = read_view(connect(adapter, COMPLETE_TIMEOUT))
    names = [v.name for v in view.vms] if kind == "vms" else [h.name for h in view.hosts]
    return sorted(set(n for n in names if n and "\n" not in n))


def complete(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in KINDS:
        return 2
    try:
        found = words(argv[0], argv[1:])
    except Exception:  # noqa: BLE001 - completion must never spill a traceback
        return 1
    for word in found:
        print(word)
    return 0
