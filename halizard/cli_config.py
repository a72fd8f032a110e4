"""`halizard config validate|show|set|unset`: a host's file and the pool-wide settings.

The daemon's effective configuration is its host's file (/etc/halizard/halizard.toml) with the
pool-wide settings laid over it (halizard.core.config.merge_pool_settings). `validate` checks a
file alone, offline; `show` prints the effective configuration with each value's source;
`set` and `unset` change one pool-wide setting, after checking that the result is safe on any
host (the strictest: a fence agent and two paths, so every timing rule applies) and on this
host with its own file. Nothing is written when a check fails.
"""
import argparse
import json
import sys
from dataclasses import fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from halizard.core.config import (
    HOST_LOCAL_KEYS,
    POOL_WIDE_KEYS,
    RUNTIME_KEYS,
    STRICTEST_HOST,
    Config,
    ConfigError,
    Loaded,
    config_to_table,
    load_config,
    merge_pool_settings,
    parse_pool_setting,
    pool_settings,
    where_key_lives,
)
from halizard.core.pool import KEY_CONFIG_PREFIX

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POOL_SOURCE = "pool-wide settings (checked as for a host with a fence agent and two paths)"


def register(sub: Any) -> None:
    from halizard.cli_pool import config_path, connection_options

    connection = connection_options()
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--config", metavar="FILE", default=config_path(),
                       help="this host's configuration file (default %s)" % config_path())

    config = sub.add_parser("config", help="configuration: this host's file and the pool-wide "
                                           "settings")
    config_sub = config.add_subparsers(dest="config_command")
    validate = config_sub.add_parser("validate", help="check a configuration file, print the "
                                                      "timing inequalities with their numbers")
    validate.add_argument("file", nargs="?", default=config_path(),
                          help="default %s" % config_path())
    validate.set_defaults(func=cmd_config_validate)

    show = config_sub.add_parser("show", parents=[connection, local], help="the effective "
                                 "configuration: each key's value and where it comes from")
    show.add_argument("--json", action="store_true", help="machine-readable (keys in README)")
    show.set_defaults(func=cmd_config_show)

    set_ = config_sub.add_parser("set", parents=[connection, local],
                                 help="set a pool-wide key (timings, gateway_policy) for both "
                                      "hosts, after checking the result is safe")
    set_.add_argument("key", metavar="KEY", help="one of: %s" % ", ".join(POOL_WIDE_KEYS))
    set_.add_argument("value", metavar="VALUE", help='as in the TOML file, e.g. "15s"')
    set_.set_defaults(func=cmd_config_set)

    unset = config_sub.add_parser("unset", parents=[connection, local],
                                  help="remove a pool-wide key: each host's file (or the "
                                       "default) applies again")
    unset.add_argument("key", metavar="KEY")
    unset.set_defaults(func=cmd_config_set, value=None)


# --- pure helpers ---------------------------------------------------------------------------


def describe(key: str, value: Any) -> Any:
    """A value as shown: fence options by name only (they hold passwords)."""
    if key == "fence_options" and isinstance(value, Mapping):
        return sorted(str(k) for k in value)
    if key == "alerts" and isinstance(value, Mapping):
        # The channels and their plain settings; a webhook's URL is a token, hidden.
        shown = {k: v for k, v in value.items() if not isinstance(v, Mapping)}
        if isinstance(value.get("email"), Mapping):
            email = value["email"]
            shown["email"] = {k: email[k] for k in ("server", "port", "security", "to")
                              if k in email}
        if "webhook" in value:
            shown["webhook"] = "(URL hidden)"
        return shown
    return value


def effective_settings(table: Optional[Mapping[str, Any]], pool_other_config: Mapping[str, Any]
                       ) -> List[Dict[str, Any]]:
    """Every key with its effective value and its source: ``pool``, ``file`` or ``default``
    (host-local keys are ``unknown`` when there is no file to read them from)."""
    merged, problems = merge_pool_settings(table or {}, pool_other_config)
    rejected = {p.key[len(KEY_CONFIG_PREFIX):] for p in problems}
    from_pool = set(pool_settings(pool_other_config)) - rejected
    from halizard.runtime.settings import RuntimeSettings

    defaults = config_to_table(Config(peer_addresses=(), gateway_addresses=()))
    runtime = RuntimeSettings()
    defaults.update({k: getattr(runtime, k) for k in RUNTIME_KEYS if k != "alerts"})
    defaults["alerts"] = {}  # the journal and XenAPI messages, no mail, no webhook
    out = []
    for key in [f.name for f in fields(Config)] + ["fence_options"] + list(RUNTIME_KEYS):
        scope = "host" if key in HOST_LOCAL_KEYS else "pool"
        if key in from_pool:
            source, value = "pool", merged[key]
        elif table is not None and key in table:
            source, value = "file", table[key]
        elif table is None and scope == "host":
            source, value = "unknown", None
        else:
            source, value = "default", defaults.get(key)
        out.append({"key": key, "value": describe(key, value), "source": source,
                    "scope": scope})
    return out


def check_effective(table: Optional[Mapping[str, Any]], pool_other_config: Mapping[str, Any],
                    source: str) -> Tuple[Optional[Loaded], List[str]]:
    """Load the effective configuration (the file's table with the pool's values; without a
    file, the pool's values on the strictest host). Returns it, or None, and the problems."""
    merged, problems = merge_pool_settings(STRICTEST_HOST if table is None else table,
                                           pool_other_config)
    notes = [p.render("pool") for p in problems]
    try:
        return load_config(merged, source=POOL_SOURCE if table is None else source), notes
    except ConfigError as exc:
        return None, notes + str(exc).splitlines()


def findings(table: Optional[Mapping[str, Any]], pool_other_config: Mapping[str, Any],
             source: str) -> Tuple[List[str], List[str]]:
    """What `status` says about the configuration: (problems, warnings). Problems: pool values
    not applied, an effective configuration that does not load (unsafe timing among them).
    Warnings: the topology caveats of this host's file (one heartbeat path, no fence agent)."""
    loaded, problems = check_effective(table, pool_other_config, source)
    if loaded is None or table is None:
        return problems, []
    return problems, [w.render(source) for w in loaded.warnings]


def check_change(before: Mapping[str, Any], after: Mapping[str, Any],
                 table: Optional[Mapping[str, Any]], source: str) -> Tuple[List[str], List[str]]:
    """Whether changing the pool's other_config from ``before`` to ``after`` is safe:
    (errors, notes). The pool-wide values must pass on the strictest host, and this host's
    file with them must load, unless it did not load before the change either (then its own
    problems are the file's, shown by `config validate`, and only noted here)."""
    errors: List[str] = []
    notes: List[str] = []
    merged, _ = merge_pool_settings(STRICTEST_HOST, after)
    try:
        load_config(merged, source=POOL_SOURCE)
    except ConfigError as exc:
        errors.extend(str(exc).splitlines())
    if table is not None:
        was, _ = check_effective(table, before, source)
        now, problems = check_effective(table, after, source)
        if now is None and was is not None:
            errors.extend(problems)
        elif now is None:
            notes.append("%s does not load even before this change; see `halizard config "
                         "validate %s`" % (source, source))
        elif now.warnings:
            notes.extend("warning: " + w.render(source) for w in now.warnings)
    else:
        notes.append("no %s on this host: checked the pool-wide values alone; run `halizard "
                     "config validate` on each host" % source)
    return errors, notes


# --- reading the file -----------------------------------------------------------------------


class FileError(Exception):
    """A configuration file that cannot be read or parsed: the reason, naming the file."""


def read_table(path: str, required: bool) -> Optional[Dict[str, Any]]:
    """The file's table; None when it does not exist and is not ``required``. An unreadable
    or invalid file is an error: nothing is guessed."""
    from halizard.toml import TomlError, load_file

    try:
        return load_file(path)
    except FileNotFoundError:
        if required:
            raise FileError("%s: no such file" % path) from None
        return None
    except TomlError as exc:
        raise FileError("%s: not valid TOML: %s" % (path, exc)) from None
    except OSError as exc:
        raise FileError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None


def _file_errors(command: Callable[[argparse.Namespace], int]
                 ) -> Callable[[argparse.Namespace], int]:
    """A command that reports a FileError as its one error line, exit 1."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except FileError as exc:
            print("halizard: %s" % exc, file=sys.stderr)
            return EXIT_FAILED
    return run


# --- the commands ---------------------------------------------------------------------------


@_file_errors
def cmd_config_validate(args: argparse.Namespace) -> int:
    """The daemon's own start-up check of the file (halizard.runtime.settings), alone: the
    timing rules with their numbers, the runtime keys, a secret-holding file's mode."""
    from halizard.core.timing import explain
    from halizard.runtime.alertconfig import describe_settings
    from halizard.runtime.settings import load_host_config

    table = read_table(args.file, required=True)
    assert table is not None
    try:
        loaded = load_host_config(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    for warning in loaded.warnings:
        print("warning: " + warning.render(args.file), file=sys.stderr)
    pool_wide = [k for k in POOL_WIDE_KEYS if k in table]
    if pool_wide:
        print("note: %s: %s %s pool-wide: a value set with `halizard config set` overrides "
              "this file, and keeps both hosts in agreement" % (
                  args.file, ", ".join(pool_wide), "is" if len(pool_wide) == 1 else "are"),
              file=sys.stderr)
    print("%s: valid" % args.file)
    print(explain(loaded.config))
    print(describe_settings(loaded.alerts.settings))
    return EXIT_OK


@_file_errors
def cmd_config_show(args: argparse.Namespace) -> int:
    from halizard.admin import AdminError, read_other_config
    from halizard.cli_pool import connect_pool
    from halizard.core.timing import explain

    table = read_table(args.config, required=False)
    problems: List[str] = []
    try:
        other = read_other_config(connect_pool(args))
    except AdminError as exc:
        other = {}
        problems.append("the pool-wide values are unknown: %s" % exc)
    loaded, found = check_effective(table, other, args.config)
    problems.extend(found)
    settings = effective_settings(table, other)
    valid = loaded is not None and not problems
    if args.json:
        print(json.dumps({"file": args.config if table is not None else None,
                          "settings": settings, "valid": valid, "problems": problems},
                         indent=2))
        return EXIT_OK if valid else EXIT_FAILED
    print("file: %s" % (args.config if table is not None else "%s (absent: host-local keys "
                        "unknown)" % args.config))
    for s in settings:
        print("  %-20s %-30s %-7s %s" % (s["key"], _text(s["value"]), s["source"],
                                          "pool-wide" if s["scope"] == "pool" else "host-local"))
    if loaded is not None:
        print(explain(loaded.config))
        for w in loaded.warnings:
            print("warning: " + w.render(args.config))
    print("problems: %s" % ("none" if not problems else ""))
    for p in problems:
        print("  " + p)
    return EXIT_OK if valid else EXIT_FAILED


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "[]"
    return str(value)


@_file_errors
def cmd_config_set(args: argparse.Namespace) -> int:
    from halizard.admin import AdminError, pool_ref, read_other_config, set_other_config
    from halizard.cli_pool import connect_pool, needs_root, run_admin

    def body() -> int:
        where = where_key_lives(args.key)
        if where is not None:
            raise AdminError("%s%s" % (where, "" if args.key in HOST_LOCAL_KEYS else
                                       "; pool-wide keys: %s" % ", ".join(POOL_WIDE_KEYS)))
        text = None
        if args.value is not None:
            try:
                parse_pool_setting(args.key, args.value)
            except ValueError as exc:
                raise AdminError("%s: %s" % (args.key, exc)) from None
            text = args.value.strip()
        needs_root()
        table = read_table(args.config, required=False)
        pool = connect_pool(args)
        before = read_other_config(pool)
        after = dict(before)
        name = KEY_CONFIG_PREFIX + args.key
        after.pop(name, None)
        if text is not None:
            after[name] = text
        errors, notes = check_change(before, after, table, args.config)
        for note in notes:
            print("note: " + note, file=sys.stderr)
        if errors:
            print("\n".join(errors), file=sys.stderr)
            raise AdminError("refused: %s %s would be unsafe; nothing written" % (
                args.key, "= %s" % text if text is not None else "unset"))
        set_other_config(pool, "pool", pool_ref(pool), name, text)
        old = before.get(name)
        print("%s %s pool-wide (was %s)" % (
            args.key, "= %s" % text if text is not None else "unset",
            old if old is not None else "not set pool-wide"))
        print("it takes effect when the daemons start: restart them on both hosts, one after "
              "the other (systemctl restart halizard)")
        return EXIT_OK

    return run_admin(body)
