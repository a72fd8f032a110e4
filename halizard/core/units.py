"""Durations and sizes written the way operators write them: "250ms", "40s", "5m", "4GiB".

A bare number is refused on purpose: "5" could mean seconds or minutes, and in a fencing timer
that ambiguity is a safety bug.
"""
import re
from typing import Union

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ns|us|ms|s|m|h|d)\s*$")
_DURATION_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)\s*$")
_SIZE_BYTES = {
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}


class UnitError(ValueError):
    """A value that is not a duration or size in the expected form."""


def parse_duration(value: Union[str, int, float]) -> float:
    """Return seconds for a duration string such as "250ms", "1.5s" or "5m"."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError(
            "expected a duration with a unit such as \"500ms\", \"5s\" or \"2m\", got %r" % (value,)
        )
    match = _DURATION.match(value)
    if match is None:
        raise UnitError(
            "expected a duration with a unit such as \"500ms\", \"5s\" or \"2m\", got %r" % (value,)
        )
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def parse_size(value: Union[str, int]) -> int:
    """Return bytes for a size string such as "4GiB" or "512MiB"."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError("expected a size with a unit such as \"4GiB\", got %r" % (value,))
    match = _SIZE.match(value)
    if match is None:
        raise UnitError("expected a size with a unit such as \"4GiB\", got %r" % (value,))
    return int(float(match.group(1)) * _SIZE_BYTES[match.group(2)])


def format_duration(seconds: float) -> str:
    """The shortest readable form: "250ms", "13s", "1.5s", "5m"."""
    if seconds != seconds:  # NaN
        return "nan"
    if seconds == 0:
        return "0s"
    if abs(seconds) < 1.0:
        return "%gms" % round(seconds * 1000.0, 3)
    if abs(seconds) >= 600.0 and seconds % 60.0 == 0:
        return "%dm" % int(seconds // 60)
    return "%gs" % round(seconds, 3)


def format_size(size: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size >= _SIZE_BYTES[unit] and size % _SIZE_BYTES[unit] == 0:
            return "%d%s" % (size // _SIZE_BYTES[unit], unit)
    return "%dB" % size
