"""From a product's terms and an expiry date to the ordered milestones of one billing cycle.

This is SPEC §1–4 as arithmetic: "on day D+n at local time t, do X". A workflow only walks
this list; every number comes from `Terms` (and `TldRules` for domains), nothing is hard-coded
in the workflow. Days are calendar days; the clock (`policy.clock`) turns them into instants.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, time, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from policy.catalog import ProductKind, Terms, TldRules


class MilestoneKind(StrEnum):
    AUTO_RENEW = "auto_renew"
    ISSUE_INVOICE = "issue_invoice"
    REMINDER = "reminder"
    EXPIRE = "expire"
    ZONE_REMOVE = "zone_remove"
    REDEMPTION = "redemption"
    QUARANTINE = "quarantine"
    CANCEL = "cancel"
    BLOCK = "block"
    DELETION_WARNING = "deletion_warning"
    DELETE = "delete"
    PURGE = "purge"
    RELEASE = "release"


_ORDER = {kind: index for index, kind in enumerate(MilestoneKind)}

NOTICE_ONLY = frozenset({MilestoneKind.REMINDER, MilestoneKind.DELETION_WARNING, MilestoneKind.AUTO_RENEW})
"""Milestones skipped rather than done when long overdue: notices, and the daily credit debit
attempts a later attempt repeats anyway."""


class Milestone(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: MilestoneKind
    on: date
    at: time = time(0, 0)
    offset: int
    """Calendar days from the expiry date D (negative: before D)."""

    @property
    def key(self) -> str:
        """Unique within a cycle; also the stem of the idempotency keys of its side effects."""
        return f"{self.kind.value}@{self.on.isoformat()}"

    def describe(self) -> str:
        sign = "+" if self.offset >= 0 else "-"
        return f"{self.kind.value} on {self.on.isoformat()} (D{sign}{abs(self.offset)})"


class CycleFacts(BaseModel):
    """What the timeline of the current cycle depends on besides the terms."""

    model_config = ConfigDict(frozen=True)

    expires_on: date
    deferral_until: date | None = None
    """Payment deferred until this day (hostico): the block waits until the day after."""
    cancel_effective_on: date | None = None
    """Last day of a service the customer cancelled; it ends the next day. A day after D ends a
    later cycle: this one runs (and is invoiced) as usual."""
    invoice_lead_days: int | None = None
    """The customer's own invoice lead, where they chose one."""
    auto_renew: bool = False
    """Renew from the credit account (SPEC §3.9): no invoice; a debit is tried every day from the
    invoice lead day until D, and only if all fail is an invoice issued on D+1 (it expires unpaid)."""


def _at(terms: Terms, kind: MilestoneKind, day: date, expires_on: date) -> Milestone:
    return Milestone(kind=kind, on=day, at=terms.time_of(kind.value), offset=(day - expires_on).days)


def deletion_day(terms: Terms, expires_on: date) -> date:
    return expires_on + timedelta(days=terms.block_days + 1)


def block_day(terms: Terms, facts: CycleFacts) -> date:
    block_on = facts.expires_on + timedelta(days=terms.grace_days + 1)
    if facts.deferral_until is not None:
        block_on = max(block_on, facts.deferral_until + timedelta(days=1))
    return min(block_on, deletion_day(terms, facts.expires_on))


def timeline(terms: Terms, facts: CycleFacts, tld: TldRules | None = None) -> list[Milestone]:
    """Every milestone of the cycle that ends at `facts.expires_on`, in the order they happen."""
    d = facts.expires_on
    day = lambda offset: d + timedelta(days=offset)  # noqa: E731 - reads as the SPEC's "D+n"
    items: list[Milestone] = []

    def add(kind: MilestoneKind, on: date) -> None:
        items.append(_at(terms, kind, on, d))

    if facts.cancel_effective_on is not None and facts.cancel_effective_on <= d:
        ends = facts.cancel_effective_on + timedelta(days=1)
        add(MilestoneKind.CANCEL, ends)
        if terms.kind is ProductKind.DOMAIN:
            add(MilestoneKind.RELEASE, ends)
        else:
            add(MilestoneKind.DELETE, ends)
            add(MilestoneKind.PURGE, ends + timedelta(days=terms.backup_retention_days))
        return _sorted(items)

    lead = facts.invoice_lead_days if facts.invoice_lead_days is not None else terms.invoice_lead_days
    if facts.auto_renew:
        for offset in range(-lead, 1):
            add(MilestoneKind.AUTO_RENEW, day(offset))
        add(MilestoneKind.ISSUE_INVOICE, day(1))
    else:
        add(MilestoneKind.ISSUE_INVOICE, day(-lead))

    if terms.kind is ProductKind.DOMAIN:
        if tld is None:
            raise ValueError("a domain's timeline needs the registry rules of its TLD")
        end = day(tld.release_day)
        paid_restore = tld.redemption_day if tld.redemption_day is not None else tld.quarantine_day
        for offset in terms.reminder_days:
            if day(offset) < (day(paid_restore) if paid_restore is not None else end):
                add(MilestoneKind.REMINDER, day(offset))
        first_change = min(
            [x for x in (tld.zone_remove_day, tld.redemption_day, tld.quarantine_day) if x is not None],
            default=tld.release_day,
        )
        if first_change > 1:
            add(MilestoneKind.EXPIRE, day(1))
        if tld.zone_remove_day is not None:
            add(MilestoneKind.ZONE_REMOVE, day(tld.zone_remove_day))
        if tld.redemption_day is not None:
            add(MilestoneKind.REDEMPTION, day(tld.redemption_day))
        if tld.quarantine_day is not None:
            add(MilestoneKind.QUARANTINE, day(tld.quarantine_day))
        if terms.deletion_warning_days and day(tld.release_day - terms.deletion_warning_days) > d:
            add(MilestoneKind.DELETION_WARNING, day(tld.release_day - terms.deletion_warning_days))
        add(MilestoneKind.RELEASE, end)
        return _sorted(items)

    block_on = block_day(terms, facts)
    delete_on = deletion_day(terms, d)
    for offset in terms.reminder_days:
        if day(offset) < delete_on:
            add(MilestoneKind.REMINDER, day(offset))
    if block_on > day(1):
        add(MilestoneKind.EXPIRE, day(1))
    add(MilestoneKind.BLOCK, block_on)
    warning_on = delete_on - timedelta(days=terms.deletion_warning_days)
    if terms.deletion_warning_days and warning_on > d:
        add(MilestoneKind.DELETION_WARNING, warning_on)
    add(MilestoneKind.DELETE, delete_on)
    add(MilestoneKind.PURGE, delete_on + timedelta(days=terms.backup_retention_days))
    return _sorted(items)


def _sorted(items: Iterable[Milestone]) -> list[Milestone]:
    return sorted(items, key=lambda m: (m.on, m.at, _ORDER[m.kind]))


def next_milestone(
    terms: Terms, facts: CycleFacts, done: Iterable[str], tld: TldRules | None = None
) -> Milestone | None:
    """The first milestone of the cycle not yet done, or None when the cycle has run out."""
    finished = set(done)
    return next((m for m in timeline(terms, facts, tld) if m.key not in finished), None)


def is_stale(milestone: Milestone, today: date) -> bool:
    """A notice more than a day overdue (a service started late in its cycle) is not sent."""
    return milestone.kind in NOTICE_ONLY and (today - milestone.on).days > 1
