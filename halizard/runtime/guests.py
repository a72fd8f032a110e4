"""The local toolstack: which guest domains run on this host, and the self-fence that kills them.

Through ``xl``, not xapi: a slave cut off from its master cannot get answers from its xapi (its
database calls hang), yet it must still count its guests and destroy them when its lease
expires. ``xl list -v`` names each domain's UUID, which on XenServer/XCP-ng is the VM's UUID
(xenopsd creates the domain with it). ``xl destroy`` takes domain ids and is never given
domain 0. Dying domains are not counted: they never run again, and xl destroy leaves a domain
dying for a moment before it is gone.

Every ``xl`` runs in a session of its own with a deadline; a hung one is killed with its
process group (xenstore can hang, and then so does xl). The interface (``Toolstack``) lets
tests, and later a xenopsd client, stand in for ``xl``.
"""
import abc
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from halizard.effects import DestroyGuests, GuestList, ListGuests, is_stale

log = logging.getLogger("halizard.guests")

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# xl_info.c: "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f", then (-v) " <uuid> <reason> ..."
_LINE = re.compile(r"^(?P<name>.*?)\s+(?P<domid>\d+)\s+\d+\s+\d+\s+"
                   r"(?P<state>[r-][b-][p-][s-][-rscwS?][d-])\s+\d+(?:\.\d+)?\s+"
                   r"(?P<uuid>%s)(?:\s.*)?$" % _UUID)
LIST_SHARE = 0.25  # of a DestroyGuests' time kept for the final listing (at most 1 s)
OUTPUT_LIMIT = 1 << 20  # bytes of xl's output read (a host runs far fewer domains)


class XlError(RuntimeError):
    """xl did not answer usefully: missing, failed, hung, or output we cannot read."""


class Domain(NamedTuple):
    name: str
    domid: int
    uuid: str
    state: str  # six flags: running, blocked, paused, shut down, shutdown reason, dying

    @property
    def dying(self) -> bool:
        return self.state[5] == "d"

    @property
    def guest(self) -> bool:
        """A guest that runs or may run again: not domain 0, not dying."""
        return self.domid != 0 and not self.dying


def parse_xl_list(text: str) -> List[Domain]:
    """The domains in ``xl list -v`` output; XlError for any line that is not one."""
    domains = []
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Name"):
        raise XlError("xl list: no header line: %r" % (text[:80],))
    for line in lines[1:]:
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise XlError("xl list: cannot read %r" % (line[:120],))
        domains.append(Domain(match.group("name").strip(), int(match.group("domid")),
                              match.group("uuid"), match.group("state")))
    if not any(d.domid == 0 for d in domains):
        raise XlError("xl list: no domain 0 listed")
    return domains


def guest_list(domains: List[Domain]) -> GuestList:
    return GuestList(tuple(sorted({d.uuid for d in domains if d.guest})))


class Toolstack(abc.ABC):
    """What the executor asks of the local toolstack."""

    @abc.abstractmethod
    def list_guests(self, effect: ListGuests) -> GuestList:
        """The guests, or GuestList((), ok=False) when the toolstack did not answer in time."""

    @abc.abstractmethod
    def destroy_guests(self, effect: DestroyGuests) -> GuestList:
        """Destroy every guest by the effect's timeout; the guests that remain (ok=False when
        that is unknown, or when the effect was stale and nothing was done)."""


class XlToolstack(Toolstack):
    """Toolstack through the ``xl`` command (found on PATH unless given as a path)."""

    def __init__(self, xl: Union[str, Sequence[str]] = "xl",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.xl = [xl] if isinstance(xl, str) else list(xl)  # a command, or argv with options
        self.clock = clock

    def domains(self, timeout: float) -> List[Domain]:
        code, out = _run(self.xl + ["list", "-v"], timeout)
        if code != 0:
            raise XlError("xl list -v: %s" % _failure(code, out))
        return parse_xl_list(out)

    def list_guests(self, effect: ListGuests) -> GuestList:
        try:
            return guest_list(self.domains(effect.timeout))
        except XlError as exc:
            log.warning("%s", exc)
            return GuestList((), ok=False)

    def destroy_guests(self, effect: DestroyGuests) -> GuestList:
        if is_stale(effect, self.clock()):
            return GuestList((), ok=False)
        began = time.monotonic()
        deadline = began + effect.timeout
        reserve = min(1.0, effect.timeout * LIST_SHARE)  # for the listing afterwards
        try:
            before = [d for d in self.domains(deadline - reserve - began) if d.guest]
        except XlError as exc:
            log.error("self-fence: cannot list the guests: %s", exc)
            return GuestList((), ok=False)
        if before:
            log.warning("self-fence: destroying %s", ", ".join(
                "%s (domid %d, %s)" % (d.name, d.domid, d.uuid) for d in before))
            failures = _run_all({d.domid: self.xl + ["destroy", str(d.domid)] for d in before},
                                deadline - reserve)
            for domid, why in sorted(failures.items()):
                log.error("self-fence: xl destroy %d: %s", domid, why)
        try:
            remaining = guest_list(self.domains(max(0.1, deadline - time.monotonic())))
        except XlError as exc:
            log.error("self-fence: cannot list the guests afterwards: %s", exc)
            return GuestList(tuple(sorted(d.uuid for d in before)), ok=False)
        if remaining.uuids:
            log.error("self-fence: guests still there: %s", ", ".join(remaining.uuids))
        return remaining


def _failure(code: Optional[int], out: str) -> str:
    if code is None:
        return out or "timed out"
    return "exit %d: %s" % (code, " ".join(out.split())[:300])


class _Command:
    """One command in a session of its own, its output in a file: no pipe for a stray child to
    hold open, and ``wait`` sees an exit at once, even after the deadline."""

    def __init__(self, argv: List[str]) -> None:
        self.argv = argv
        self.out = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                         stderr=subprocess.STDOUT, close_fds=True,
                                         start_new_session=True)
        except OSError:
            self.out.close()
            raise

    def finish(self, deadline: float) -> Tuple[Optional[int], str]:
        """(exit code, output), or (None, why) when it outlived ``deadline`` (monotonic): then
        its process group is killed (it is not reaped yet, so the group id is still its own)."""
        try:
            try:
                self.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    self.proc.wait(1.0)  # a process stuck in the kernel may not die at once
                except subprocess.TimeoutExpired:
                    log.error("%s (pid %d) survived SIGKILL", " ".join(self.argv), self.proc.pid)
                return None, "%s timed out" % " ".join(self.argv[:2])
            self.out.seek(0)
            return self.proc.returncode, self.out.read(OUTPUT_LIMIT).decode("utf-8", "replace")
        finally:
            self.out.close()


def _run(argv: List[str], timeout: float) -> Tuple[Optional[int], str]:
    """(exit code, output) of one command, or (None, why) when it could not run or outlived
    ``timeout``."""
    try:
        command = _Command(argv)
    except OSError as exc:
        return None, "cannot run %s: %s" % (argv[0], exc.strerror or exc)
    return command.finish(time.monotonic() + timeout)


def _run_all(commands: Dict[int, List[str]], deadline: float) -> Dict[int, str]:
    """Run the commands in parallel until ``deadline`` (monotonic); what failed, and why."""
    failures: Dict[int, str] = {}
    running = {}
    for key, argv in commands.items():
        try:
            running[key] = _Command(argv)
        except OSError as exc:
            failures[key] = "cannot run %s: %s" % (argv[0], exc.strerror or exc)
    for key, command in running.items():
        code, out = command.finish(deadline)
        if code != 0:
            failures[key] = _failure(code, out)
    return failures
