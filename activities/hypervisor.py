"""Virtual servers on a hypervisor node (VPS, APS).

    HypervisorError
     ├── HypervisorUnavailable   (retried: the node or its libvirt daemon cannot be reached)
     └── VmNotFound              (not retried where it matters; deleting a missing VM succeeds)

Every operation is idempotent: powering off a stopped VM or deleting a deleted one reports
`changed=False` and succeeds, so an activity retry after a crash is always safe. Hypervisor
activities run on the node's own task queue, `hypervisor-<node>`, served by `worker.py --node`.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity


def node_task_queue(node: str) -> str:
    return f"hypervisor-{node}"


class VmAction(StrEnum):
    POWER_OFF = "power_off"
    POWER_ON = "power_on"
    DELETE = "delete"
    PARK = "park"
    UNPARK = "unpark"
    RESTART = "restart"
    REINSTALL = "reinstall"


class VmActionInput(BaseModel):
    idempotency_key: str
    service_id: str
    node: str
    vm_name: str
    addons: list[str] = []
    """Add-on mail space and backup space that share the VM's fate (blocked and deleted with it)."""
    graceful_timeout_seconds: int = 120


class VmActionResult(BaseModel):
    action: VmAction
    changed: bool


class HypervisorError(Exception):
    """Root of the hypervisor adapter's errors."""


class HypervisorUnavailable(HypervisorError):
    """The node cannot be reached now; try again."""


class VmNotFound(HypervisorError):
    """No VM of that name on the node."""


class Hypervisor(Protocol):
    """One node's hypervisor. Each call is idempotent and returns whether it changed anything."""

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool: ...
    def power_on(self, vm_name: str) -> bool: ...
    def delete(self, vm_name: str) -> bool: ...
    def park(self, vm_name: str) -> bool: ...
    def unpark(self, vm_name: str) -> bool: ...


class RecordingHypervisor:
    """Tracks VM power states in memory; what the simulator and workflow tests use."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.running: dict[str, bool] = {}
        self.deleted: set[str] = set()

    def _record(self, action: str, vm_name: str) -> None:
        self.calls.append((action, vm_name))

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool:
        self._record("power_off", vm_name)
        changed = self.running.get(vm_name, True) and vm_name not in self.deleted
        self.running[vm_name] = False
        return changed

    def power_on(self, vm_name: str) -> bool:
        self._record("power_on", vm_name)
        if vm_name in self.deleted:
            raise VmNotFound(vm_name)
        changed = not self.running.get(vm_name, True)
        self.running[vm_name] = True
        return changed

    def delete(self, vm_name: str) -> bool:
        self._record("delete", vm_name)
        changed = vm_name not in self.deleted
        self.deleted.add(vm_name)
        self.running[vm_name] = False
        return changed

    def park(self, vm_name: str) -> bool:
        return self.power_off(vm_name, timedelta(0))

    def unpark(self, vm_name: str) -> bool:
        return self.power_on(vm_name)


class HypervisorActivities:
    """Sync activities (libvirt blocks), run on the node worker's thread pool."""

    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hypervisor = hypervisor

    def _run(self, action: VmAction, request: VmActionInput) -> VmActionResult:
        from temporalio.exceptions import ApplicationError

        try:
            if action is VmAction.POWER_OFF or action is VmAction.PARK:
                call = (
                    self.hypervisor.park
                    if action is VmAction.PARK
                    else lambda name: self.hypervisor.power_off(
                        name, timedelta(seconds=request.graceful_timeout_seconds)
                    )
                )
                changed = call(request.vm_name)
            elif action is VmAction.POWER_ON:
                changed = self.hypervisor.power_on(request.vm_name)
            elif action is VmAction.UNPARK:
                changed = self.hypervisor.unpark(request.vm_name)
            elif action is VmAction.DELETE:
                changed = self.hypervisor.delete(request.vm_name)
            else:  # pragma: no cover - support actions arrive with the VPS issue
                raise ApplicationError(f"unsupported action {action}", type="Unsupported", non_retryable=True)
        except VmNotFound as exc:
            raise ApplicationError(f"VM {request.vm_name} not found", type="VmNotFound", non_retryable=True) from exc
        activity.logger.info("vm action", extra={"action": action.value, "vm": request.vm_name, "changed": changed})
        return VmActionResult(action=action, changed=changed)

    @activity.defn
    def power_off_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.POWER_OFF, request)

    @activity.defn
    def power_on_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.POWER_ON, request)

    @activity.defn
    def delete_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.DELETE, request)

    @activity.defn
    def park_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.PARK, request)

    @activity.defn
    def unpark_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.UNPARK, request)
