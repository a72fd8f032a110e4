"""TOML in and out on every supported Python: tomllib from 3.11, tomli before (3.6 included).

The writer covers what halizard writes (configurations and scenario files): strings, numbers,
booleans, lists of scalars, tables, lists of tables. It is not a general TOML serializer.
"""
import json
from typing import Any, Dict, List, Mapping, Tuple

try:
    import tomllib as _toml  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python < 3.11
    import tomli as _toml  # type: ignore[no-redef,import-not-found,unused-ignore]

TomlError = _toml.TOMLDecodeError


def loads(text: str) -> Dict[str, Any]:
    return dict(_toml.loads(text))


def load_file(path: str) -> Dict[str, Any]:
    with open(path, "rb") as handle:
        return loads(handle.read().decode("utf-8"))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(_scalar(v) for v in value)
    if isinstance(value, Mapping):
        return "{ %s }" % ", ".join("%s = %s" % (_key(k), _scalar(v)) for k, v in value.items())
    raise TypeError("cannot write %r as TOML" % (value,))


def _key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def dumps(data: Mapping[str, Any], arrays_of_tables: Tuple[str, ...] = ()) -> str:
    """``data`` as TOML: sub-tables as ``[key]``, the keys named in ``arrays_of_tables`` as
    ``[[key]]`` sections, lists of tables elsewhere as arrays of inline tables."""
    lines: List[str] = []
    sections: List[Tuple[str, List[Mapping[str, Any]], bool]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            sections.append((key, [value], False))
        elif key in arrays_of_tables:
            sections.append((key, list(value), True))
        else:
            lines.extend(_assignment(key, value))
    for key, items, array in sections:
        for item in items:
            lines.append("")
            lines.append(("[[%s]]" if array else "[%s]") % _key(key))
            for k, v in item.items():
                lines.extend(_assignment(k, v))
    return "\n".join(lines) + "\n"


def _assignment(key: str, value: Any) -> List[str]:
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return ["%s = [" % _key(key)] + ["  %s," % _scalar(v) for v in value] + ["]"]
    return ["%s = %s" % (_key(key), _scalar(value))]
