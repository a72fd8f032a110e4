"""What the xapi behaviour model needs from whoever hosts it, and what its calls return.

The model (simulations.xapi.model.XapiPool) is one implementation of xapi's semantics with two
faces: the in-process simulator calls it directly, and the wire-level XML-RPC server (a later
issue) calls the very same object from HTTP handlers. Neither face adds semantics of its own.

Its host supplies a Clock (virtual time in the simulator, real time behind the wire server) and a
Fabric (the ground truth: which hosts run, which can reach each other, which domains really run).
"""
from typing import Any, Callable, Iterable, List

from typing_extensions import Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> int:
        """Current time in integer nanoseconds."""

    def at(self, t: int, fn: Callable[..., None], *args: Any) -> Handle:
        """Call ``fn(*args)`` at time ``t`` (ns); returns a cancellable handle."""


class RandomStream(Protocol):
    def random(self) -> float: ...

    def uniform_ns(self, low: int, high: int) -> int: ...


class Fabric(Protocol):
    def host_running(self, host: str) -> bool:
        """Powered on, booted and not frozen: its xapi can execute."""

    def connected(self, a: str, b: str) -> bool:
        """Hosts ``a`` and ``b`` can open TCP connections to each other over the management
        network (both directions work)."""

    def domains(self, host: str) -> Iterable[str]:
        """UUIDs of the VMs with a live domain on ``host`` (the toolstack's truth)."""

    def create_domain(self, host: str, vm_uuid: str) -> None: ...

    def destroy_domain(self, host: str, vm_uuid: str) -> None: ...

    def move_domain(self, src: str, dst: str, vm_uuid: str) -> None:
        """Live migration's last instant: the domain stops on ``src`` and runs on ``dst`` at
        once (never on both)."""

    def stream(self, name: str) -> RandomStream: ...


# --- outcomes of a call --------------------------------------------------------------------


class Outcome:
    __slots__ = ()


class Ok(Outcome):
    """``{Status: Success, Value: value}``"""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Ok(%r)" % (self.value,)


class Failure(Outcome):
    """``{Status: Failure, ErrorDescription: description}`` (all strings)."""

    __slots__ = ("description",)

    def __init__(self, description: List[str]) -> None:
        self.description = [str(d) for d in description]

    def __repr__(self) -> str:
        return "Failure(%r)" % (self.description,)


class Refused(Outcome):
    """The TCP connection (or Unix socket) is refused: xapi is not running."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Refused()"


class Reset(Outcome):
    """The connection was reset while the call was outstanding (xapi died or restarted)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Reset()"


Reply = Callable[[Outcome], None]
