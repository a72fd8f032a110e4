"""Named, seeded random streams.

Each subsystem draws from its own stream, derived from the run's seed and the stream's name with
SHA-256 (never Python's hash(), which changes with PYTHONHASHSEED). Adding draws in one
subsystem therefore never reshuffles another.
"""
import hashlib
import random
from typing import Dict


def derive_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(("%d:%s" % (seed, name)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class Stream:
    """A deterministic stream of floats and choices. Only random() of Python's generator is
    used, whose output for a given seed is stable across Python versions."""

    __slots__ = ("_random",)

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed).random

    def random(self) -> float:
        return self._random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random()

    def uniform_ns(self, low: int, high: int) -> int:
        if high <= low:
            return low
        return low + int((high - low) * self._random())

    def chance(self, probability: float) -> bool:
        return probability > 0.0 and self._random() < probability

    def index(self, n: int) -> int:
        return min(n - 1, int(n * self._random()))


class Streams:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: Dict[str, Stream] = {}

    def __call__(self, name: str) -> Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = Stream(derive_seed(self.seed, name))
            self._streams[name] = stream
        return stream
