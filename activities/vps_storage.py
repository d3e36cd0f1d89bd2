"""Storage a VPS customer pays for outside the VPS itself: ISO images (SPEC §5, VPS backups).

    StorageError
     ├── InsufficientCredit   (not retried: the credit account does not cover the charge)
     └── ImageUnavailable     (retried: the node holding the image cannot be reached now)

An ISO image is independent of any VPS and is kept while the customer's credit covers its
storage. Two adapters serve `IsoImageWorkflow`:

* `StorageBilling` debits the credit account (lifecycle task queue): `charge_iso_storage`, and
  `warn_iso_storage_unpaid` tells the customer the image will be deleted unless they top up.
* `IsoImageStore` removes the image volume on its node (`hypervisor-<node>` task queue):
  `delete_iso_image`. `LibvirtIsoImageStore` shares the node's `LibvirtHypervisor` connection and
  imports libvirt only when called, so workflows can import this module.

Every call is idempotent on its key: a retried charge is charged once, a deleted image deletes again
as `changed=False`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError


class StorageError(Exception):
    """Root of the storage adapters' errors."""


class InsufficientCredit(StorageError):
    """The credit account does not cover the charge; topping it up is the customer's move."""


class ImageUnavailable(StorageError):
    """The node holding the image cannot be reached now; try again."""


class ChargeIsoStorageInput(BaseModel):
    idempotency_key: str
    """`iso-<image>:storage:<period start>`, so a retry never charges a month twice."""
    customer_id: str
    image_id: str
    period_start: date
    period_end: date
    size_gib: Decimal
    amount: Decimal
    currency: str = "CZK"


class ChargeIsoStorageResult(BaseModel):
    charged: bool
    """False when this key was charged before (a retry)."""
    balance: Decimal


class ChargeBackupStorageInput(BaseModel):
    idempotency_key: str
    """`vps-backups-<service>:storage:<month>`, so a retry never charges a month twice."""
    customer_id: str
    service_id: str
    month: date
    """First day of the month charged."""
    byte_days: int
    amount: Decimal
    currency: str = "CZK"


class WarnBackupStorageInput(BaseModel):
    idempotency_key: str
    customer_id: str
    service_id: str
    amount: Decimal
    """What the credit did not cover; carried to the next month's charge."""


class WarnIsoStorageInput(BaseModel):
    idempotency_key: str
    customer_id: str
    image_id: str
    amount: Decimal
    delete_on: date


class WarnIsoStorageResult(BaseModel):
    sent: bool


class DeleteIsoImageInput(BaseModel):
    idempotency_key: str
    image_id: str
    node: str
    pool: str
    volume: str


class DeleteIsoImageResult(BaseModel):
    changed: bool


class StorageBilling(Protocol):
    """The customer's credit account, as far as storage charges go."""

    def charge(self, key: str, customer_id: str, amount: Decimal, description: str) -> tuple[bool, Decimal]:
        """Debit `amount` once per `key`; (charged now, balance). Raises `InsufficientCredit`."""
        ...

    def warn(self, key: str, customer_id: str, message: str) -> bool:
        """Tell the customer once per `key`; True when sent now."""
        ...


class IsoImageStore(Protocol):
    def delete_image(self, pool: str, volume: str) -> bool:
        """Remove the image volume; False when it was already gone."""
        ...


class RecordingStorageBilling:
    """Credit balances in memory; what tests and the simulator use."""

    def __init__(self, balances: dict[str, Decimal] | None = None) -> None:
        self.balances: dict[str, Decimal] = dict(balances or {})
        self.charges: list[tuple[str, str, Decimal, str]] = []
        self.refused: list[tuple[str, str, Decimal]] = []
        self.warnings: list[tuple[str, str, str]] = []
        self._charged: set[str] = set()
        self._warned: set[str] = set()

    def charge(self, key: str, customer_id: str, amount: Decimal, description: str) -> tuple[bool, Decimal]:
        balance = self.balances.get(customer_id, Decimal("0.00"))
        if key in self._charged:
            return False, balance
        if balance < amount:
            self.refused.append((key, customer_id, amount))
            raise InsufficientCredit(f"credit {balance} does not cover {amount}")
        self._charged.add(key)
        self.balances[customer_id] = balance - amount
        self.charges.append((key, customer_id, amount, description))
        return True, self.balances[customer_id]

    def warn(self, key: str, customer_id: str, message: str) -> bool:
        if key in self._warned:
            return False
        self._warned.add(key)
        self.warnings.append((key, customer_id, message))
        return True


class RecordingIsoImageStore:
    def __init__(self, volumes: set[str] | None = None) -> None:
        self.volumes: set[str] = set(volumes or set())
        """`pool/volume` names present on the node."""
        self.deleted: list[str] = []

    def delete_image(self, pool: str, volume: str) -> bool:
        name = f"{pool}/{volume}"
        if name not in self.volumes:
            return False
        self.volumes.discard(name)
        self.deleted.append(name)
        return True


class LibvirtIsoImageStore:
    """Deletes ISO volumes through a node's `LibvirtHypervisor` connection (reconnecting as it does)."""

    def __init__(self, hypervisor: Any) -> None:
        self.hypervisor = hypervisor

    def delete_image(self, pool: str, volume: str) -> bool:
        import libvirt

        from activities.hypervisor import HypervisorUnavailable

        try:
            conn = self.hypervisor.connection()
        except HypervisorUnavailable as exc:
            raise ImageUnavailable(str(exc)) from exc
        try:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
                return False
            raise ImageUnavailable(f"{pool}/{volume}: {exc}") from exc
        return True


class VpsStorageActivities:
    """Storage charges on the lifecycle queue; ISO deletion on the node's queue (`node_activities`)."""

    def __init__(self, billing: StorageBilling | None = None, images: IsoImageStore | None = None) -> None:
        self.billing = billing
        self.images = images

    def _charge(self, key: str, customer_id: str, amount: Decimal, description: str) -> tuple[bool, Decimal]:
        """Debit storage from the customer's credit once per key; too little credit is final, not retried."""
        assert self.billing is not None, "storage is charged on the lifecycle worker"
        try:
            return self.billing.charge(key, customer_id, amount, description)
        except InsufficientCredit as exc:
            raise ApplicationError(str(exc), type="InsufficientCredit", non_retryable=True) from exc

    @activity.defn
    def charge_iso_storage(self, request: ChargeIsoStorageInput) -> ChargeIsoStorageResult:
        assert self.billing is not None, "charge_iso_storage runs on the lifecycle worker"
        description = (
            f"ISO image {request.image_id} storage {request.size_gib} GiB, "
            f"{request.period_start}..{request.period_end}"
        )
        charged, balance = self._charge(request.idempotency_key, request.customer_id, request.amount, description)
        activity.logger.info(
            "iso storage charged", extra={"image": request.image_id, "amount": str(request.amount)}
        )
        return ChargeIsoStorageResult(charged=charged, balance=balance)

    @activity.defn
    def warn_iso_storage_unpaid(self, request: WarnIsoStorageInput) -> WarnIsoStorageResult:
        assert self.billing is not None, "warn_iso_storage_unpaid runs on the lifecycle worker"
        message = (
            f"ISO image {request.image_id}: storage of {request.amount} is not covered by your credit; "
            f"the image will be deleted on {request.delete_on} unless you top up"
        )
        return WarnIsoStorageResult(
            sent=self.billing.warn(request.idempotency_key, request.customer_id, message)
        )

    @activity.defn
    def charge_backup_storage(self, request: ChargeBackupStorageInput) -> ChargeIsoStorageResult:
        """A month of the VPS's backups, debited from the customer's credit."""
        assert self.billing is not None, "charge_backup_storage runs on the lifecycle worker"
        gib_days = Decimal(request.byte_days) / Decimal(2**30)
        description = (
            f"VPS {request.service_id} backup storage {request.month:%Y-%m}: {gib_days:.3f} GiB-days"
        )
        charged, balance = self._charge(request.idempotency_key, request.customer_id, request.amount, description)
        activity.logger.info(
            "backup storage charged", extra={"service": request.service_id, "amount": str(request.amount)}
        )
        return ChargeIsoStorageResult(charged=charged, balance=balance)

    @activity.defn
    def warn_backup_storage_unpaid(self, request: WarnBackupStorageInput) -> WarnIsoStorageResult:
        assert self.billing is not None, "warn_backup_storage_unpaid runs on the lifecycle worker"
        message = (
            f"VPS {request.service_id}: backup storage of {request.amount} is not covered by your credit; "
            "it is charged with next month's storage, please top up"
        )
        return WarnIsoStorageResult(
            sent=self.billing.warn(request.idempotency_key, request.customer_id, message)
        )

    @activity.defn
    def delete_iso_image(self, request: DeleteIsoImageInput) -> DeleteIsoImageResult:
        assert self.images is not None, "delete_iso_image runs on the node worker"
        changed = self.images.delete_image(request.pool, request.volume)
        activity.logger.info(
            "iso image deleted",
            extra={"image": request.image_id, "volume": request.volume, "changed": changed},
        )
        return DeleteIsoImageResult(changed=changed)
