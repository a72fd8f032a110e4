"""TOML in and out on every supported Python: tomllib from 3.11, tomli before (3.6 included).

The writer covers what halizard writes (configurations and scenario files): strings, numbers,
booleans, lists of scalars, tables, lists of tables. It is not a general TOML serializer.
"""
import json
from typing import Any, Dict, List, Mapping

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


def dumps(data: Mapping[str, Any]) -> str:
    lines: List[str] = []
    tables: List[Any] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value, False))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value) \
                and key in ("fault",):
            tables.append((key, value, True))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append("%s = [" % _key(key))
            for item in value:
                lines.append("  %s," % _scalar(item))
            lines.append("]")
        else:
            lines.append("%s = %s" % (_key(key), _scalar(value)))
    for key, value, array in tables:
        items = value if array else [value]
        for item in items:
            lines.append("")
            lines.append(("[[%s]]" if array else "[%s]") % _key(key))
            for k, v in item.items():
                if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                    lines.append("%s = [" % _key(k))
                    for x in v:
                        lines.append("  %s," % _scalar(x))
                    lines.append("]")
                else:
                    lines.append("%s = %s" % (_key(k), _scalar(v)))
    return "\n".join(lines) + "\n"
