"""Virtual servers on a hypervisor node (VPS, APS).

    HypervisorError
     ├── HypervisorUnavailable   (retried: the node or its libvirt daemon cannot be reached)
     ├── VmNotFound              (not retried where it matters; deleting a missing VM succeeds)
     ├── ImageNotFound           (not retried: reinstall named an OS image the node does not have)
     └── BackupNotFound          (not retried: no provider backup of that label on the node)

Every operation is idempotent: powering off a stopped VM or deleting a deleted one reports
`changed=False` and succeeds, so an activity retry after a crash is always safe. Restart and
reinstall are the exceptions by nature (a retry restarts or reinstalls again, to the same end
state). Hypervisor activities run on the node's own task queue, `hypervisor-<node>`, served by
`worker.py --node`.

Provider backup (SPEC §4, VPS row): when a VPS is deleted the node first copies its disks into
`provider.<label>.<disk>` volumes, kept after the VM is gone until the subscription's purge timer
removes them (`backup_retention_days`, catalog data). A fresh copy, not the last automatic backup:
the deleted server is already off (blocked or cancelled), so the copy is consistent and as new as
the data can be, while automatic backups are an add-on many VPSs lack, may be days old, and live in
the customer's backup space, which SPEC says is never restored. `restore_provider_backup` copies it
onto a newly ordered VM's disks (same or bigger), idempotently.

Long calls heartbeat (`heartbeat`, below): the graceful-shutdown wait on every poll, copies after
every disk. A node that hangs stops the heartbeats, so the activity's heartbeat timeout fails the
attempt and the retry policy tries again, on the node once it answers. The real implementation, `LibvirtHypervisor`, lives in `libvirt_node.py` so
this module (imported by workflows) does not need libvirt installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, Field
from temporalio import activity

from activities.liveness import deadline_for, watched_sync

T = TypeVar("T")

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """`from activities.hypervisor import LibvirtHypervisor` works, yet importing this module
        (as workflows do) never imports libvirt. Typed code imports it from `libvirt_node`."""
        if name == "LibvirtHypervisor":
            from activities.libvirt_node import LibvirtHypervisor

            return LibvirtHypervisor
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    RESIZE = "resize"


class VmActionInput(BaseModel):
    idempotency_key: str
    service_id: str
    node: str
    vm_name: str
    addons: list[str] = []
    """Add-on mail space and backup space that share the VM's fate (blocked and deleted with it)."""
    graceful_timeout_seconds: int = 120
    image: str | None = None
    """OS image (a volume on the node) for `REINSTALL`; ignored by the other actions."""
    vcpus: int | None = Field(default=None, ge=1, le=512)
    memory_mb: int | None = Field(default=None, ge=64)
    """`RESIZE`: the plan's virtual CPUs and memory (None: leave as it is)."""


class ActivityTimeouts(BaseModel):
    """Timeouts of one kind of hypervisor call; the workflows pass them at the call site."""

    start_to_close: timedelta
    heartbeat: timedelta


POWER_TIMEOUTS = ActivityTimeouts(start_to_close=timedelta(minutes=10), heartbeat=timedelta(minutes=1))
"""Power, park and delete: the graceful shutdown (2 minutes) heartbeats on every poll."""
COPY_TIMEOUTS = ActivityTimeouts(start_to_close=timedelta(hours=6), heartbeat=timedelta(minutes=20))
"""Backups, provider backups, restores, reinstalls: a beat after each disk; one disk copy must fit."""


def heartbeat(*details: object) -> None:
    """Tell the server this call is alive, when running as an activity (no-op elsewhere, e.g. tests)."""
    if activity.in_activity():
        activity.heartbeat(*details)


class VmActionResult(BaseModel):
    action: VmAction
    changed: bool


BACKUP_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Labels become volume and snapshot names, so they stay plain (e.g. `daily-2025-03-01`)."""


class BackupKind(StrEnum):
    MANUAL = "manual"  # kept until the customer deletes it or the VPS is deleted
    AUTOMATIC = "automatic"  # daily, rotated (3 or 7 kept)


class VmBackup(BaseModel):
    label: str
    kind: BackupKind
    created_at: datetime
    snapshot: str | None = None
    """Snapshot taken first because the server was running; None for a stopped server."""
    volumes: list[str] = []
    """Backup copies as `pool/volume`."""
    size_bytes: int = 0
    """Data the backup holds (the disks' allocation when taken): what backup storage is billed on."""


class VmBackupInput(BaseModel):
    idempotency_key: str
    service_id: str
    node: str
    vm_name: str
    label: str
    """From workflow facts (`daily-2025-03-01`), so a retry names the same backup."""
    kind: BackupKind = BackupKind.MANUAL


class VmBackupResult(BaseModel):
    label: str
    changed: bool
    size_bytes: int = 0


class RotateVmBackupsInput(BaseModel):
    idempotency_key: str
    service_id: str
    node: str
    vm_name: str
    keep: int
    """Automatic backups to keep (3 or 7); 0 when automatic backup is switched off."""


class RotateVmBackupsResult(BaseModel):
    deleted: list[str]


class ListVmBackupsResult(BaseModel):
    backups: list[VmBackup]


class ProviderBackupInput(BaseModel):
    """Keep, purge or restore the provider backup `label` (from the service id) of a deleted VPS."""

    idempotency_key: str
    service_id: str
    node: str
    vm_name: str
    """keep: the VM being deleted; restore: the newly ordered VM it is copied onto; purge: unused."""
    label: str


class ProviderBackupResult(BaseModel):
    label: str
    changed: bool
    volumes: list[str] = []
    """keep: the provider backup's volumes as `pool/volume`."""


def provider_backup_label(service_id: str) -> str:
    """A volume-safe label from a service id (ids may hold `.` and `:`)."""
    label = re.sub(r"[^A-Za-z0-9_-]", "-", service_id).strip("-_")[:64] or "service"
    return label if BACKUP_LABEL.match(label) else f"s{label}"[:64]


class HypervisorError(Exception):
    """Root of the hypervisor adapter's errors."""


class HypervisorUnavailable(HypervisorError):
    """The node cannot be reached now; try again."""


class VmNotFound(HypervisorError):
    """No VM of that name on the node."""


class ImageNotFound(HypervisorError):
    """The OS image asked for by a reinstall is not on the node."""


class BackupNotFound(HypervisorError):
    """No provider backup of that label on the node (never taken, or purged)."""


def check_backup_label(label: str) -> None:
    """Reject a label that cannot safely become a volume or snapshot name."""
    if not BACKUP_LABEL.match(label):
        raise ValueError(f"invalid backup label {label!r}")


class Hypervisor(Protocol):
    """One node's hypervisor. Each call is idempotent and returns whether it changed anything."""

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool: ...
    def power_on(self, vm_name: str) -> bool: ...
    def delete(self, vm_name: str) -> bool: ...
    def park(self, vm_name: str) -> bool: ...
    def unpark(self, vm_name: str) -> bool: ...
    def restart(self, vm_name: str) -> bool: ...
    def reinstall(self, vm_name: str, image: str) -> bool: ...
    def resize(self, vm_name: str, vcpus: int | None, memory_mb: int | None) -> bool: ...
    def create_backup(self, vm_name: str, label: str, kind: BackupKind) -> bool: ...
    def delete_backup(self, vm_name: str, label: str) -> bool: ...
    def list_backups(self, vm_name: str) -> list[VmBackup]: ...
    def rotate_backups(self, vm_name: str, keep: int) -> list[str]:
        """Delete the oldest automatic backups beyond `keep`; returns their labels, oldest first."""
        ...

    def keep_provider_backup(self, vm_name: str, label: str) -> list[str]:
        """Copy the VM's disks into provider backup `label` (before deletion); its volumes."""
        ...

    def purge_provider_backup(self, label: str) -> bool:
        """Remove provider backup `label`; False when it was already gone."""
        ...

    def restore_provider_backup(self, label: str, vm_name: str) -> bool:
        """Copy provider backup `label` onto the VM's disks; False when already restored there."""
        ...


class RecordingHypervisor:
    """Tracks VM power states in memory; what the simulator and workflow tests use."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.running: dict[str, bool] = {}
        self.deleted: set[str] = set()
        self.backups: dict[str, list[VmBackup]] = {}
        self.images: dict[str, str] = {}
        self.sizes: dict[str, tuple[int | None, int | None]] = {}
        """`resize`: (vcpus, memory_mb) per VM."""
        self.provider_backups: dict[str, list[str]] = {}
        self.backup_size_bytes = 2**30
        self.restored: dict[str, str] = {}

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
        self.backups.pop(vm_name, None)
        return changed

    def park(self, vm_name: str) -> bool:
        return self.power_off(vm_name, timedelta(0))

    def unpark(self, vm_name: str) -> bool:
        return self.power_on(vm_name)

    def _existing(self, vm_name: str) -> None:
        if vm_name in self.deleted:
            raise VmNotFound(vm_name)

    def restart(self, vm_name: str) -> bool:
        self._record("restart", vm_name)
        self._existing(vm_name)
        self.running[vm_name] = True
        return True

    def reinstall(self, vm_name: str, image: str) -> bool:
        self._record("reinstall", vm_name)
        self._existing(vm_name)
        self.images[vm_name] = image
        return True

    def resize(self, vm_name: str, vcpus: int | None, memory_mb: int | None) -> bool:
        self._record("resize", vm_name)
        self._existing(vm_name)
        before = self.sizes.get(vm_name, (None, None))
        after = (vcpus or before[0], memory_mb or before[1])
        self.sizes[vm_name] = after
        return after != before

    def create_backup(self, vm_name: str, label: str, kind: BackupKind) -> bool:
        self._record("create_backup", vm_name)
        self._existing(vm_name)
        check_backup_label(label)
        backups = self.backups.setdefault(vm_name, [])
        if any(backup.label == label for backup in backups):
            return False
        running = self.running.get(vm_name, True)
        backups.append(
            VmBackup(
                label=label,
                kind=kind,
                created_at=datetime.now(UTC),
                snapshot=f"backup-{label}" if running else None,
                volumes=[f"default/{vm_name}.backup.{label}.vda"],
                size_bytes=self.backup_size_bytes,
            )
        )
        return True

    def delete_backup(self, vm_name: str, label: str) -> bool:
        self._record("delete_backup", vm_name)
        self._existing(vm_name)
        backups = self.backups.get(vm_name, [])
        kept = [backup for backup in backups if backup.label != label]
        self.backups[vm_name] = kept
        return len(kept) != len(backups)

    def list_backups(self, vm_name: str) -> list[VmBackup]:
        self._existing(vm_name)
        return list(self.backups.get(vm_name, []))

    def rotate_backups(self, vm_name: str, keep: int) -> list[str]:
        self._record("rotate_backups", vm_name)
        self._existing(vm_name)
        automatic = [b.label for b in self.backups.get(vm_name, []) if b.kind is BackupKind.AUTOMATIC]
        doomed = automatic[: max(len(automatic) - keep, 0)]
        for label in doomed:
            self.delete_backup(vm_name, label)
        return doomed


    def keep_provider_backup(self, vm_name: str, label: str) -> list[str]:
        self._record("keep_provider_backup", vm_name)
        check_backup_label(label)
        if label in self.provider_backups:
            return self.provider_backups[label]
        self._existing(vm_name)
        self.provider_backups[label] = [f"default/provider.{label}.vda"]
        return self.provider_backups[label]

    def purge_provider_backup(self, label: str) -> bool:
        self._record("purge_provider_backup", label)
        check_backup_label(label)
        return self.provider_backups.pop(label, None) is not None

    def restore_provider_backup(self, label: str, vm_name: str) -> bool:
        self._record("restore_provider_backup", vm_name)
        check_backup_label(label)
        self._existing(vm_name)
        if label not in self.provider_backups:
            raise BackupNotFound(f"no provider backup {label}")
        if self.restored.get(vm_name) == label:
            return False
        self.restored[vm_name] = label
        return True


class HypervisorActivities:
    """Sync activities (libvirt blocks), run on the node worker's thread pool.

    `VmNotFound`, `ImageNotFound` and bad input fail for good; `HypervisorUnavailable` and other
    hypervisor errors propagate and are retried by the activity's retry policy.
    """

    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hypervisor = hypervisor

    def _call(self, vm_name: str, work: Callable[[], T]) -> T:
        """Run one hypervisor call, turning the errors a retry cannot fix into non-retryable ones."""
        from temporalio.exceptions import ApplicationError

        try:
            return work()
        except VmNotFound as exc:
            raise ApplicationError(f"VM {vm_name} not found", type="VmNotFound", non_retryable=True) from exc
        except ImageNotFound as exc:
            raise ApplicationError(str(exc), type="ImageNotFound", non_retryable=True) from exc
        except BackupNotFound as exc:
            raise ApplicationError(str(exc), type="BackupNotFound", non_retryable=True) from exc
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidRequest", non_retryable=True) from exc

    def _run(self, action: VmAction, request: VmActionInput) -> VmActionResult:
        from temporalio.exceptions import ApplicationError

        hypervisor = self.hypervisor
        graceful_timeout = timedelta(seconds=request.graceful_timeout_seconds)
        calls: dict[VmAction, Callable[[str], bool]] = {
            VmAction.POWER_OFF: lambda name: hypervisor.power_off(name, graceful_timeout),
            VmAction.POWER_ON: hypervisor.power_on,
            VmAction.DELETE: hypervisor.delete,
            VmAction.PARK: hypervisor.park,
            VmAction.UNPARK: hypervisor.unpark,
            VmAction.RESTART: hypervisor.restart,
        }
        if action is VmAction.REINSTALL:
            image = request.image
            if not image:
                raise ApplicationError("reinstall needs an image", type="InvalidRequest", non_retryable=True)
            calls[action] = lambda name: hypervisor.reinstall(name, image)
        if action is VmAction.RESIZE:
            calls[action] = lambda name: hypervisor.resize(name, request.vcpus, request.memory_mb)
        # Heartbeats while libvirt works; a call past the graceful wait + DEADLINES is a hang, retried.
        changed = self._call(
            request.vm_name,
            lambda: watched_sync(
                lambda: calls[action](request.vm_name),
                what=f"{action.value} {request.vm_name} on {request.node}",
                deadline=deadline_for("hypervisor", request.graceful_timeout_seconds),
            ),
        )
        activity.logger.info(
            "vm action", extra={"action": action.value, "vm": request.vm_name, "changed": changed}
        )
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

    @activity.defn
    def restart_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.RESTART, request)

    @activity.defn
    def resize_vm(self, request: VmActionInput) -> VmActionResult:
        """A plan change: vCPUs and memory in the VM's configuration (they apply at its next start)."""
        return self._run(VmAction.RESIZE, request)

    @activity.defn
    def reinstall_vm(self, request: VmActionInput) -> VmActionResult:
        return self._run(VmAction.REINSTALL, request)

    @activity.defn
    def create_vm_backup(self, request: VmBackupInput) -> VmBackupResult:
        changed = self._call(
            request.vm_name,
            lambda: self.hypervisor.create_backup(request.vm_name, request.label, request.kind),
        )
        taken = self._call(request.vm_name, lambda: self.hypervisor.list_backups(request.vm_name))
        size = next((b.size_bytes for b in taken if b.label == request.label), 0)
        activity.logger.info(
            "vm backup created",
            extra={
                "vm": request.vm_name,
                "label": request.label,
                "kind": request.kind.value,
                "changed": changed,
            },
        )
        return VmBackupResult(label=request.label, changed=changed, size_bytes=size)

    @activity.defn
    def delete_vm_backup(self, request: VmBackupInput) -> VmBackupResult:
        changed = self._call(
            request.vm_name, lambda: self.hypervisor.delete_backup(request.vm_name, request.label)
        )
        activity.logger.info(
            "vm backup deleted", extra={"vm": request.vm_name, "label": request.label, "changed": changed}
        )
        return VmBackupResult(label=request.label, changed=changed)

    @activity.defn
    def rotate_vm_backups(self, request: RotateVmBackupsInput) -> RotateVmBackupsResult:
        deleted = self._call(
            request.vm_name, lambda: self.hypervisor.rotate_backups(request.vm_name, request.keep)
        )
        activity.logger.info(
            "vm backups rotated", extra={"vm": request.vm_name, "keep": request.keep, "deleted": deleted}
        )
        return RotateVmBackupsResult(deleted=deleted)

    @activity.defn
    def list_vm_backups(self, request: VmActionInput) -> ListVmBackupsResult:
        return ListVmBackupsResult(
            backups=self._call(request.vm_name, lambda: self.hypervisor.list_backups(request.vm_name))
        )

    @activity.defn
    def keep_provider_backup(self, request: ProviderBackupInput) -> ProviderBackupResult:
        volumes = self._call(
            request.vm_name, lambda: self.hypervisor.keep_provider_backup(request.vm_name, request.label)
        )
        activity.logger.info(
            "provider backup kept", extra={"vm": request.vm_name, "label": request.label, "volumes": volumes}
        )
        return ProviderBackupResult(label=request.label, changed=True, volumes=volumes)

    @activity.defn
    def purge_provider_backup(self, request: ProviderBackupInput) -> ProviderBackupResult:
        changed = self._call(request.vm_name, lambda: self.hypervisor.purge_provider_backup(request.label))
        activity.logger.info("provider backup purged", extra={"label": request.label, "changed": changed})
        return ProviderBackupResult(label=request.label, changed=changed)

    @activity.defn
    def restore_provider_backup(self, request: ProviderBackupInput) -> ProviderBackupResult:
        changed = self._call(
            request.vm_name, lambda: self.hypervisor.restore_provider_backup(request.label, request.vm_name)
        )
        activity.logger.info(
            "provider backup restored", extra={"vm": request.vm_name, "label": request.label, "changed": changed}
        )
        return ProviderBackupResult(label=request.label, changed=changed)
