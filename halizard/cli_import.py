"""`halizard import-ha-lizard [--dry-run]`: take over an HA-Lizard installation's settings in one
command (the mapping is halizard.ha_lizard's; this applies it in its order)."""
import argparse
import sys
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def register(sub: Any) -> None:
    from halizard.cli_pool import connection_options

    imp = sub.add_parser("import-ha-lizard", parents=[connection_options()],
                         help="map an HA-Lizard installation's settings (switch, per-VM flags, "
                              "HA_* keys) to halizard's, saying what cannot be mapped and why")
    imp.add_argument("--dry-run", action="store_true", help="print the mapping, write nothing")
    imp.add_argument("--yes", action="store_true", help="do not ask")
    imp.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from halizard import ha_lizard
    from halizard.admin import AdminError, pool_ref, read_state, set_other_config
    from halizard.cli_pool import confirm, connect_pool, needs_root, run_admin

    def body() -> int:
        if not args.dry_run:
            needs_root()
        pool = connect_pool(args)
        state = read_state(pool)
        try:
            plan = ha_lizard.plan_import(state.other_config,
                                         ha_lizard.guests(pool.call("VM.get_all_records")),
                                         state.view.native_ha)
        except ha_lizard.NotInstalled as exc:
            raise AdminError(str(exc)) from None
        print(ha_lizard.render(plan))
        print("next:")
        for step in plan.next_steps:
            print("  " + step)
        if args.dry_run:
            print("dry run: nothing written")
            return EXIT_OK
        if not plan.writes:
            return EXIT_OK
        counts = ha_lizard.summary(plan.writes)
        sys.stdout.flush()
        confirm(args, "Write %d pool key%s and the policies of %d VM%s?" % (
            counts["pool"], "" if counts["pool"] == 1 else "s", counts["vms"],
            "" if counts["vms"] == 1 else "s"))
        ref = pool_ref(pool)
        for done, w in enumerate(plan.writes):
            try:
                if w.vm is None:
                    set_other_config(pool, "pool", ref, w.key, w.value)
                else:
                    set_other_config(pool, "VM", w.vm.ref, w.key, w.value)
            except AdminError as exc:
                raise AdminError("%s; %d of %d writes done, in this order: run the command "
                                 "again to finish (it writes only what differs)"
                                 % (exc, done, len(plan.writes))) from None
        print("written: %d change%s" % (len(plan.writes), "" if len(plan.writes) == 1 else "s"))
        return EXIT_OK

    return run_admin(body)
