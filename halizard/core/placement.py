"""Where and in what order protected VMs are (re)started. Pure.

Rules, in the order an administrator would expect from XenServer's own HA:

* ``restart`` VMs before ``best-effort`` VMs; ``never`` VMs are never started by HA.
* Within each class, start-order groups by the VM's ``order`` field, lowest first. A group starts
  once every VM of the earlier groups is running or has had a start attempt fail (one broken VM
  must not hold the whole pool down). xapi itself holds each start for the VM's ``start_delay``,
  so waiting for the earlier group's starts to finish honours the delay.
* A VM goes to the healthy host with the most free memory that can hold it. A ``restart`` VM that
  fits nowhere is reported and retried when memory frees up. A ``best-effort`` VM starts only if
  it fits after memory is set aside for every ``restart`` VM still waiting.
"""
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Mapping, Sequence, Tuple

from halizard.core.pool import BEST_EFFORT, RESTART, HostView, PoolView, VmView


@dataclass(frozen=True)
class Start:
    vm: VmView
    host: HostView


@dataclass(frozen=True)
class Plan:
    starts: Tuple[Start, ...]
    no_capacity: Tuple[VmView, ...]  # restart VMs that fit on no healthy host
    waiting: Tuple[str, ...]  # names held back by start order


def wants_start(vm: VmView) -> bool:
    """A protected VM that is halted and not being operated on: HA should (re)start it."""
    return vm.protected and vm.power_state == "Halted" and not vm.busy


def free_memory(view: PoolView, host: HostView, reserved: Mapping[str, int]) -> int:
    used = sum(v.memory for v in view.vms if v.resident_on == host.uuid and v.running)
    return host.memory_total - host.memory_overhead - used - reserved.get(host.uuid, 0)


def plan_starts(
    view: PoolView,
    healthy_hosts: Sequence[HostView],
    in_flight: FrozenSet[str],
    failed_recently: FrozenSet[str],
    in_backoff: FrozenSet[str],
    pending_memory: Mapping[str, int],
) -> Plan:
    """Which halted protected VMs to start now, and where.

    ``in_flight``: VM uuids with a start already under way. ``failed_recently``: VMs whose last
    attempt failed (they no longer block later groups). ``in_backoff``: VMs waiting before their
    next attempt. ``pending_memory``: memory already promised to in-flight starts, per host uuid.
    """
    wanted = [v for v in view.vms if wants_start(v)]
    reserved: Dict[str, int] = dict(pending_memory)
    starts: List[Start] = []
    no_capacity: List[VmView] = []
    waiting: List[str] = []

    for policy in (RESTART, BEST_EFFORT):
        group_vms = [v for v in view.vms if v.policy == policy]
        blocking_orders = sorted(
            {
                v.order
                for v in group_vms
                if v.uuid in in_flight
                or (v.power_state == "Halted" and v.uuid not in failed_recently and not v.busy)
            }
        )
        first_order = blocking_orders[0] if blocking_orders else None
        restart_backlog = 0
        if policy == BEST_EFFORT:
            restart_backlog = sum(
                v.memory for v in wanted if v.policy == RESTART and v.uuid not in in_flight
            )
        policy_blocked = policy == BEST_EFFORT and any(
            v.uuid in in_flight for v in view.vms if v.policy == RESTART
        )
        for vm in sorted((v for v in wanted if v.policy == policy), key=lambda v: (v.order, v.name)):
            if vm.uuid in in_flight or vm.uuid in in_backoff:
                continue
            if policy_blocked or (
                first_order is not None and vm.order > first_order and vm.uuid not in failed_recently
            ):
                waiting.append(vm.name)
                continue
            best = None
            best_free = 0
            for host in healthy_hosts:
                free = free_memory(view, host, reserved) - restart_backlog
                if free >= vm.memory and (best is None or free > best_free):
                    best, best_free = host, free
            if best is None:
                if policy == RESTART:
                    no_capacity.append(vm)
                continue
            reserved[best.uuid] = reserved.get(best.uuid, 0) + vm.memory
            starts.append(Start(vm, best))
    return Plan(tuple(starts), tuple(no_capacity), tuple(waiting))
