"""Messages and state of coupons, price changes and usage notices (SPEC §6; no temporalio here).

Coupons live in one `CouponWorkflow` per code (`coupon-<CODE>`): its redemptions are decided one
at a time by a synchronous update handler, so a limited coupon is never redeemed more often than
allowed however many orders race for it. A subscription asks for a redemption through an activity
(a workflow cannot send an update) keyed by its service id, so a retry redeems nothing twice.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from policy.catalog import ProductKind
from policy.commerce import CommerceRules, Coupon, CouponDecision, CouponPurpose, UsageReported, UsageRule
from policy.money import Money

COUPON_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,39}$")


def normalize_coupon_code(code: str) -> str:
    """Codes are case-insensitive for customers; stored upper-case. ValueError for a bad one."""
    normalized = code.strip().upper()
    if not COUPON_CODE.match(normalized):
        raise ValueError(
            f"bad coupon code {code!r}: 1-40 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return normalized


def coupon_workflow_id(code: str) -> str:
    return f"coupon-{normalize_coupon_code(code)}"


# ----------------------------------------------------------------------------- the coupon workflow


class CouponRedemption(BaseModel):
    service_id: str
    customer_id: str
    at: datetime
    price: Money
    discount: Money


class CouponState(BaseModel):
    coupon: Coupon
    redemptions: list[CouponRedemption] = []
    refusals: int = 0
    retired: str | None = None
    """Why ops withdrew the coupon; a retired coupon refuses every further order."""
    runs: int = 1


class CouponInput(BaseModel):
    """Create a coupon (`coupon`) or carry `state` across continue-as-new."""

    coupon: Coupon | None = None
    state: CouponState | None = None


class RedeemRequest(BaseModel):
    """An order's facts; the coupon workflow adds its own (time, uses so far) and decides."""

    service_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    customer_is_new: bool
    is_first_period: bool
    other_coupon_applied: bool
    order_paid: bool
    purpose: CouponPurpose
    product_kind: ProductKind
    product: str
    period: str
    price: Money
    rules: CommerceRules


class RedeemAnswer(BaseModel):
    decision: CouponDecision
    uses: int
    repeated: bool = False
    """This service had redeemed the coupon before; the first answer is repeated, nothing counted."""


class RetireCoupon(BaseModel):
    reason: str = Field(min_length=1)


class CouponStatus(BaseModel):
    coupon: Coupon
    uses: int
    remaining: int | None
    """None: not limited in number."""
    refusals: int
    retired: str | None
    redemptions: list[CouponRedemption]


# ----------------------------------------------------------------------------- subscription messages


class ApplyCoupon(BaseModel):
    code: str

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        return normalize_coupon_code(value)


class PriceAnnouncement(BaseModel):
    """A new price for existing services of `product` (and `plan`, when given) billed per `period`."""

    product: str = Field(min_length=1)
    plan: str | None = None
    price: Money
    period: str = "P1Y"
    """The period `price` is for; services billed per another period get it converted."""
    effective_on: date
    reference: str = Field(default="", max_length=200)
    """Ops' name for the change (e.g. "2027 price list"), for the audit trail."""


UsageDelivery = Literal["delivered", "unknown service", "ended"]
"""What became of one measurement sent to a service: it got it, there is no such service, or it ended."""


UsageReport = UsageReported
"""A monitoring measurement of one VPS (the `usage_report` signal): the policy's own model."""


# ----------------------------------------------------------------------------- subscription state


class AppliedCoupon(BaseModel):
    code: str
    discount: Money
    price: Money
    """The first-period price the discount was computed on."""
    applied_at: datetime
    used: bool = False
    """The first period's invoice was paid: the coupon is spent and never touches a renewal."""


class ScheduledPrice(BaseModel):
    price: Money
    period: str
    effective_on: date
    """The day ops named."""
    applies_from: date
    """The first renewal period starting on or after the later of `effective_on` and the notice."""
    announced_on: date
    reference: str = ""
    applied: bool = False


class OffersState(BaseModel):
    """The part of a subscription's state the commerce rules of SPEC §6 keep."""

    rules: CommerceRules | None = None
    """The profile's commerce rules, resolved once (a recorded local activity) and then kept."""
    coupon: AppliedCoupon | None = None
    price_change: ScheduledPrice | None = None
    usage_notices: int = 0
    """Notices sent for the breach that is still there; a clean measurement resets it."""
    usage_episode: int = 0
    usage_last_notice_at: datetime | None = None
    usage_breaches: list[UsageRule] = []
    usage_last_measured_at: datetime | None = None


class OffersStatus(BaseModel):
    coupon: AppliedCoupon | None
    price_change: ScheduledPrice | None
    usage_notices: int
    usage_breaches: list[UsageRule]
    notices_before_suspension: int | None
