"""Per-host clocks: a monotonic clock with a rate error (drift) that restarts at each boot, and a
wall clock with an offset that can jump. The daemon decides on monotonic time only; wall-clock
jumps exist so scenarios can prove that.
"""
import math

from simulations.world.scheduler import NS


class HostClock:
    """Maps global simulated time (ns) to a host's clocks (float seconds) and back."""

    __slots__ = ("rate", "boot_t", "mono_base", "wall_offset")

    def __init__(self, drift_ppm: float, mono_base: float, wall_offset: float) -> None:
        self.rate = 1.0 + drift_ppm * 1e-6
        self.boot_t = 0
        self.mono_base = mono_base
        self.wall_offset = wall_offset

    def reboot(self, t: int, mono_base: float) -> None:
        """CLOCK_MONOTONIC starts again at boot."""
        self.boot_t = t
        self.mono_base = mono_base

    def monotonic(self, t: int) -> float:
        return self.mono_base + (t - self.boot_t) / NS * self.rate

    def wall(self, t: int) -> float:
        return self.wall_offset + t / NS * self.rate

    def jump(self, seconds: float) -> None:
        self.wall_offset += seconds

    def global_time(self, monotonic: float) -> int:
        """The first global instant at which this host's monotonic clock reads ``monotonic``."""
        return self.boot_t + int(math.ceil((monotonic - self.mono_base) / self.rate * NS))

    def duration(self, seconds: float) -> int:
        """Global nanoseconds that pass while this host's clock advances by ``seconds``."""
        return int(math.ceil(seconds / self.rate * NS))
