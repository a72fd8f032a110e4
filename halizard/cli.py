"""The `halizard` command.

    halizard simulate [FILE_OR_DIR ...] [--seeds N] [--seed S] [--config FILE] [--json] [--report DIR]
    halizard simulate --explore random|exhaustive [--faults N] [--count N] [--seed S]
                      [--config-variant fence-agent|gateway-only] [--jobs J] [--save-regressions [DIR]]
    halizard config validate [FILE] | show [--json] | set KEY VALUE | unset KEY  (cli_config)
    halizard status [--json] [--watch S] | enable | disable [--yes] [--wait]      (cli_pool)
    halizard maintenance on|off [--host H] [--yes] [--timeout S]                 (cli_pool)
    halizard vm list [--json] | vm set NAME_OR_UUID... [--restart P] [--order N] [--start-delay S]
    halizard import-ha-lizard [--dry-run] [--yes]                                 (cli_import)
    halizard daemon [--config FILE]                                                (runtime.daemon)
    halizard --version

The exit status of `simulate` is 0 only when every scenario passed.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from halizard import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _load_table(path: str) -> Dict[str, Any]:
    from halizard.toml import TomlError, load_file

    try:
        return load_file(path)
    except TomlError as exc:
        raise SystemExit("%s: not valid TOML: %s" % (path, exc)) from None
    except OSError as exc:
        raise SystemExit("%s: cannot read: %s" % (path, exc.strerror or exc)) from None


def cmd_daemon(args: argparse.Namespace) -> int:
    from halizard.runtime.daemon import main as daemon_main

    status = daemon_main(args.config)
    # Exit now: a worker thread stuck in a call past its deadline must not hold the process
    # (systemd's stop timeout would end it with SIGKILL, the watchdog device still armed).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.explore:
        return cmd_explore(args)
    from simulations.matrix import BUILTIN_MATRIX, run_matrix, table, to_json
    from simulations.runner import scenario_config
    from simulations.scenario import ScenarioError, find_scenarios, load_scenario

    base: Optional[Dict[str, Any]] = None
    base_source = "built-in configuration"
    if args.config:
        base = _load_table(args.config)
        base_source = args.config
    paths = find_scenarios(args.paths or list(BUILTIN_MATRIX))
    if not paths:
        print("no scenario files found in %s" % ", ".join(args.paths), file=sys.stderr)
        return EXIT_USAGE
    scenarios = []
    errors: List[str] = []
    for path in paths:
        try:
            scenario = load_scenario(path)
            scenario_config(scenario, base, base_source)  # refuse unsafe timing before running
            scenarios.append(scenario)
        except ScenarioError as exc:
            errors.append(str(exc))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return EXIT_USAGE
    ids: Dict[str, str] = {}
    for s in scenarios:
        if s.id in ids:
            print("%s: id %r is already used by %s" % (s.source, s.id, ids[s.id]), file=sys.stderr)
            return EXIT_USAGE
        ids[s.id] = s.source

    summaries, wall = run_matrix(scenarios, seeds=args.seeds, seed=args.seed, base=base,
                                 base_source=base_source, workers=args.jobs)
    # The built-in matrix, every seed, the built-in configuration: it must reach every coverage
    # counter (simulations.coverage), and says which it missed.
    builtin = not args.paths and args.seed is None and not args.config
    gaps: List[str] = []
    if builtin:
        from simulations import coverage
        from simulations.matrix import reached

        gaps = coverage.missing(reached(summaries))
    if args.json:
        data = to_json(summaries, wall, args.config)
        if builtin:
            data["summary"]["coverage_missing"] = gaps
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(table(summaries, wall))
        if builtin:
            print(coverage.describe(reached(summaries)))
        _print_failures(summaries, args.config)
    if args.report:
        from simulations.report import write_report

        index = write_report(args.report, summaries, base, base_source, wall)
        print("report: %s" % index, file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if all(s.passed for s in summaries) and not gaps else EXIT_FAILED


def cmd_explore(args: argparse.Namespace) -> int:
    """Generated schedules instead of scenario files (simulations/explore.py)."""
    import os

    from simulations.explore import Plan, run_plan
    from simulations.matrix import REGRESSIONS_DIR

    clashes = [name for name, given in (("FILE_OR_DIR", args.paths), ("--seeds", args.seeds),
                                        ("--config", args.config), ("--json", args.json),
                                        ("--report", args.report)) if given]
    if clashes:
        print("--explore generates its schedules: %s cannot be used with it" % ", ".join(clashes),
              file=sys.stderr)
        return EXIT_USAGE
    if args.explore == "exhaustive" and args.faults not in (None, 1, 2):
        print("--explore exhaustive covers one or two faults (--faults 1 or 2)", file=sys.stderr)
        return EXIT_USAGE
    plan = Plan(args.explore, args.config_variant, args.faults, args.count,
                args.seed if args.seed is not None else 0, args.jobs or os.cpu_count() or 1,
                REGRESSIONS_DIR if args.save_regressions == "" else args.save_regressions)
    result = run_plan(plan, lambda line: print(line, flush=True))
    return EXIT_OK if not result.failed else EXIT_FAILED


def _print_failures(summaries: Sequence[Any], config_path: Optional[str]) -> None:
    from simulations.matrix import replay_command

    for s in summaries:
        for r in s.runs:
            if r.passed:
                continue
            print()
            print("%s seed %d failed:" % (s.scenario.id, r.seed))
            for v in r.violations:
                print("  %s at %.1fs on %s: %s" % (v.invariant, v.t, v.host, v.detail))
            for u in r.unmet:
                print("  %s" % u)
            print("  replay: %s" % replay_command(s.scenario, r.seed, config_path))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="halizard",
                                     description="Two-node HA for XenServer and XCP-ng pools.")
    parser.add_argument("--version", action="version", version="halizard %s" % __version__)
    sub = parser.add_subparsers(dest="command")

    sim = sub.add_parser("simulate", help="run failure scenarios against the real decision code "
                                          "in a simulated two-host pool")
    sim.add_argument("paths", nargs="*", metavar="FILE_OR_DIR",
                     help="scenario files or directories (default: the built-in matrix)")
    group = sim.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, metavar="N", help="runs per scenario (default: the "
                       "scenario's [sweep] seeds, else 20)")
    group.add_argument("--seed", type=int, metavar="S", help="run only this seed (replay)")
    sim.add_argument("--config", metavar="FILE", help="replay with this halizard configuration "
                     "file (a test plan for your pool); addresses are replaced by lab addresses")
    sim.add_argument("--json", action="store_true", help="print the pinned JSON summary")
    sim.add_argument("--report", metavar="DIR", help="write DIR/index.html with a timeline per "
                     "scenario")
    sim.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: CPUs)")
    explore = sim.add_argument_group("exploration (generated fault schedules instead of files)")
    explore.add_argument("--explore", choices=("random", "exhaustive"),
                         help="run seeded random schedules, or every schedule of a coarse grid; "
                              "the first failure is shrunk, printed and saved as a scenario file")
    explore.add_argument("--faults", type=int, metavar="N", help="random: at most N faults per "
                         "schedule (default 3); exhaustive: exactly 1 (default) or 2")
    explore.add_argument("--count", type=int, metavar="N", default=1000,
                         help="random: how many schedules (default 1000)")
    explore.add_argument("--config-variant", choices=("fence-agent", "gateway-only"),
                         default="fence-agent", help="with a fence agent and every fault kind "
                         "(default), or the default configuration without partitions (N01)")
    explore.add_argument("--save-regressions", nargs="?", metavar="DIR", const="",
                         help="save the failure in DIR (default simulations/regressions/) "
                              "instead of a temporary directory")
    sim.set_defaults(func=cmd_simulate)

    from halizard import cli_alert, cli_config, cli_import, cli_pool

    daemon = sub.add_parser("daemon", help="run the HA daemon (systemd runs it: "
                                           "systemctl start halizard)")
    daemon.add_argument("--config", metavar="FILE", default="/etc/halizard/halizard.toml",
                        help="the host's configuration (default /etc/halizard/halizard.toml)")
    daemon.set_defaults(func=cmd_daemon)

    cli_config.register(sub)
    cli_pool.register(sub)
    cli_import.register(sub)
    cli_alert.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_complete"]:  # bash completion's helper: hidden, before the parser
        from halizard.cli_complete import complete

        return complete(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "seeds", None) is not None and args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if getattr(args, "count", 1) < 1 or (getattr(args, "faults", None) or 1) < 1:
        parser.error("--count and --faults must be at least 1")
    return int(args.func(args))
