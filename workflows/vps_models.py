"""Inputs, messages, state and results of the VPS side workflows (no temporalio here).

`VpsBackupsWorkflow` (customer backups of one VPS), `VpsSupportActionWorkflow` (one authorised
support action) and `IsoImageWorkflow` (one ISO image kept while its storage is paid).
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from activities.hypervisor import BackupKind
from policy.clock import Clock
from policy.money import Money
from workflows.models import JournalEntry

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
Rotation = Literal[0, 3, 7]
"""Automatic backups kept: 3-day or 7-day rotation, 0 when automatic backup is off."""


def vps_backups_workflow_id(service_id: str) -> str:
    return f"vps-backups-{service_id}"


def support_workflow_id(service_id: str, action: str, request_id: str) -> str:
    return f"vps-support-{service_id}-{action}-{request_id}"


def iso_image_workflow_id(image_id: str) -> str:
    return f"iso-image-{image_id}"


# ---------------------------------------------------------------- backups


class VpsBackupsConfig(BaseModel):
    service_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
    node: str
    vm_name: str
    clock: Clock = Clock()
    backup_time: time = time(3, 0)
    """Local time of the automatic daily backup."""
    days_per_run: int = Field(default=30, ge=1)
    """Continue as new after this many daily ticks, so history stays bounded."""
    customer_id: str = ""
    price_per_gib_month: Money = Decimal("0.00")
    """Backup storage price (catalog `backup_storage_price_per_gib_month`); 0: not billed here."""


class BackupRecord(BaseModel):
    label: str
    kind: BackupKind
    day: date
    """Local calendar day the backup was taken."""
    taken_at: datetime
    size_bytes: int = 0


class BackupUsageDay(BaseModel):
    """What the customer's backup space held on one day, at the daily backup time: the billing basis."""

    day: date
    automatic: int
    manual: int
    labels: list[str]
    size_bytes: int = 0


class VpsBackupsState(BaseModel):
    """Everything the workflow knows; carried whole across continue-as-new."""

    config: VpsBackupsConfig
    rotation: Rotation = 0
    backups: list[BackupRecord] = []
    last_tick: date | None = None
    usage: list[BackupUsageDay] = []
    journal: list[JournalEntry] = []
    journal_sequence: int = 0
    manual_taken: int = 0
    deleted: bool = False
    storage_month: date | None = None
    """First day of the month whose backup storage is being measured (charged when it ends)."""
    storage_byte_days: int = 0
    storage_debt: Money = Decimal("0.00")
    """Charges the credit did not cover, added to the next month's charge."""
    storage_charged: list[StorageCharge] = []
    failures: int = 0
    last_error: str | None = None
    runs: int = 1


class StorageCharge(BaseModel):
    month: date
    byte_days: int
    amount: Money
    """This month's storage plus any debt carried into it."""
    paid: bool


class VpsBackupsInput(BaseModel):
    """Start from `config` and `rotation`, or carry `state` over from the previous run."""

    config: VpsBackupsConfig | None = None
    rotation: Rotation = 0
    state: VpsBackupsState | None = None


class AutomaticBackupSettings(BaseModel):
    rotation: Rotation
    backup_time: time | None = None


class ManualBackupRequest(BaseModel):
    note: str = ""


class DeleteBackupRequest(BaseModel):
    label: str


class VpsDeleted(BaseModel):
    reason: str = "VPS deleted"


class BackupCommandResult(BaseModel):
    message: str
    label: str | None = None
    removed: list[str] = []


class VpsBackupsStatus(BaseModel):
    service_id: str
    node: str
    vm_name: str
    rotation: Rotation
    backup_time: time
    next_backup_at: datetime | None
    backups: list[BackupRecord]
    deleted: bool
    failures: int
    last_error: str | None
    runs: int
    storage_charged: list[StorageCharge] = []
    storage_debt: Money = Decimal("0.00")


class VpsBackupsResult(BaseModel):
    service_id: str
    removed: list[str]
    usage_days: int


# ---------------------------------------------------------------- support actions


class SupportAction(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    REINSTALL = "reinstall"


class SupportActionRequest(BaseModel):
    """One authorised customer request, as support files it."""

    service_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
    node: str
    vm_name: str
    action: SupportAction
    request_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    """The ticket or request number; one request runs once."""
    requested_by: str = Field(min_length=1)
    """Who authorised it (customer contact, support agent), for the audit trail."""
    reason: str = ""
    image: str | None = None
    """OS image (a volume on the node) for `reinstall`."""
    graceful_timeout_seconds: int = Field(default=120, ge=0, le=3600)


class SupportActionResult(BaseModel):
    service_id: str
    node: str
    action: SupportAction
    request_id: str
    requested_by: str
    changed: bool
    message: str
    finished_at: datetime


# ---------------------------------------------------------------- ISO images


class IsoImageConfig(BaseModel):
    image_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
    customer_id: str
    node: str
    pool: str = "default"
    volume: str
    size_gib: Decimal = Field(gt=0)
    price_per_gib_month: Money
    currency: str = "CZK"
    clock: Clock = Clock()
    grace_days: int = Field(default=14, ge=0)
    """Days between the first refused charge (warned) and deletion; the charge is retried daily."""
    periods_per_run: int = Field(default=12, ge=1)


class IsoCharge(BaseModel):
    period_start: date
    period_end: date
    amount: Money


class IsoImageState(BaseModel):
    config: IsoImageConfig
    paid_until: date | None = None
    charges: list[IsoCharge] = []
    unpaid_since: date | None = None
    delete_on: date | None = None
    deleted_on: date | None = None
    deleted_reason: str | None = None
    journal: list[JournalEntry] = []
    journal_sequence: int = 0
    runs: int = 1


class IsoImageInput(BaseModel):
    config: IsoImageConfig | None = None
    state: IsoImageState | None = None


class DeleteIsoImageRequest(BaseModel):
    reason: str = "deleted by the customer"


class IsoImageStatus(BaseModel):
    image_id: str
    paid_until: date | None
    unpaid_since: date | None
    delete_on: date | None
    deleted_on: date | None
    monthly_amount: Money
    charges: list[IsoCharge]


class IsoImageResult(BaseModel):
    image_id: str
    deleted_on: date
    reason: str
