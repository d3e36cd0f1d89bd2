"""The policy catalog: every product's terms in every profile, loaded from TOML and validated.

A profile may extend another. A product's terms are resolved in this order, first found wins:
the product in this profile, this profile's own defaults, then the same two in the parent.
So a profile such as `hostico` that says `block_days = 30` means it for every product.
The resolved `ProductTerms` is what a workflow receives in its input: editing the catalog never
changes how a running service replays.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policy.money import Money
from policy.periods import parse_period
from policy.toml_files import load_policy_toml

DEFAULT_PROFILE = "default"


class ProductKind(StrEnum):
    SERVICE = "service"
    DOMAIN = "domain"
    DNS = "dns"
    SUPPORT = "support"


class CatalogError(ValueError):
    """The catalog file is not valid; the message names the field and the reason."""


class Terms(BaseModel):
    """Every rule a product's life follows. All fields are required once resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: str
    profile: str
    title: str
    kind: ProductKind = ProductKind.SERVICE
    time_zone: str
    currency: str
    invoice_lead_days: int = Field(ge=0, le=365)
    reminder_days: list[int]
    deletion_warning_days: int = Field(ge=0)
    grace_days: int = Field(ge=0)
    block_days: int = Field(ge=0)
    deferral_max_days: int = Field(ge=0)
    monthly_surcharge_percent: Decimal = Field(ge=0, le=100)
    backup_retention_days: int = Field(ge=0)
    restore_allowed: bool
    restore_fee: Money
    restore_fee_per_subserver: bool = False
    restore_support_hours: int = Field(default=0, ge=0)
    support_hour_rate: Money = Decimal("0.00")
    abuse_repeat_window_days: int = Field(ge=0)
    abuse_unblock_fee: Money
    mail_restore_fee: Money = Decimal("0.00")
    """Per mail domain restored from a deleted VPS's provider backup."""
    backup_storage_price_per_gib_month: Money = Decimal("0.00")
    """The customer's VPS backups (manual and automatic), billed per GiB and month, by the day."""
    periods: list[str] = ["P1Y"]
    cascade_to_subservers: bool = False
    mail_bounces_when_blocked: bool = False
    on_hypervisor: bool = False
    parking_allowed: bool = False
    orderable: bool = True
    renew_from_period_end: bool = True
    free_months_first_licence: int = Field(default=0, ge=0)
    minimum_months: int = Field(default=0, ge=0)
    milestone_times: dict[str, time] = {}
    credit_min_top_up: Money | None = None
    credit_max_top_up: Money | None = None
    credit_max_balance: Money | None = None
    credit_currency: str = "CZK"

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("periods")
    @classmethod
    def _valid_periods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one period is required")
        for period in value:
            parse_period(period)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Terms:
        if self.grace_days > self.block_days:
            raise ValueError(f"grace_days ({self.grace_days}) exceeds block_days ({self.block_days})")
        if any(day <= -self.invoice_lead_days - 1 for day in self.reminder_days if day < 0):
            raise ValueError("a reminder falls before the invoice is issued")
        return self

    def time_of(self, milestone: str) -> time:
        return self.milestone_times.get(milestone, time(0, 0))


class TldRules(BaseModel):
    """What a registry does with a domain after its expiry date D."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tld: str
    registry: str
    names: list[str] = []
    zone_remove_day: int | None = None
    renewable_until_day: int | None = None
    redemption_day: int | None = None
    quarantine_day: int | None = None
    release_day: int
    restore_fee: Money = Decimal("0.00")

    @model_validator(mode="after")
    def _ordered(self) -> TldRules:
        paid_restore_from = self.redemption_day if self.redemption_day is not None else self.quarantine_day
        if paid_restore_from is None and self.renewable_until_day is None:
            raise ValueError("a TLD needs renewable_until_day or a redemption/quarantine day")
        if paid_restore_from is not None and paid_restore_from > self.release_day:
            raise ValueError("redemption/quarantine starts after release")
        if self.renewable_until_day is not None and self.renewable_until_day >= self.release_day:
            raise ValueError("renewable_until_day must come before release_day")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    products: dict[str, Terms]
    tlds: dict[str, TldRules]

    def terms(self, product: str) -> Terms:
        try:
            return self.products[product]
        except KeyError:
            known = ", ".join(sorted(self.products))
            raise CatalogError(
                f"unknown product {product!r} in profile {self.name!r}; known: {known}"
            ) from None

    def tld_rules(self, domain_name: str) -> TldRules:
        """The registry rules for a domain name; an unknown TLD is refused with a clear error."""
        tld = domain_name.rstrip(".").rsplit(".", 1)[-1].lower()
        if "." not in domain_name.strip("."):
            raise CatalogError(f"{domain_name!r} is not a domain name")
        for rules in self.tlds.values():
            if tld == rules.tld or tld in rules.names:
                return rules
        known = sorted({r.tld for r in self.tlds.values()} | {n for r in self.tlds.values() for n in r.names})
        raise CatalogError(f"TLD .{tld} of {domain_name!r} has no registry rules; known: {', '.join(known)}")


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)

    profiles: dict[str, Profile]

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise CatalogError(
                f"unknown profile {name!r}; known: {', '.join(sorted(self.profiles))}"
            ) from None


_PROFILE_ONLY = {"description", "extends", "products", "tlds"}


def _profile_chain(raw: dict[str, Any], name: str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        if current in seen:
            raise CatalogError(f"profiles.{name}: 'extends' forms a cycle through {current!r}")
        if current not in raw:
            raise CatalogError(f"profiles.{name}: extends unknown profile {current!r}")
        seen.add(current)
        chain.append(raw[current])
        current = raw[current].get("extends")
    return chain


def _resolve_product(chain: list[dict[str, Any]], product: str, profile: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in reversed(chain):  # parent first, child last: later layers win
        merged.update({k: v for k, v in layer.items() if k not in _PROFILE_ONLY})
        merged.update(layer.get("products", {}).get(product, {}))
    merged["product"] = product
    merged["profile"] = profile
    return merged


def parse_catalog(raw: dict[str, Any]) -> Catalog:
    """Validate a whole catalog; the first problem is reported with its dotted path."""
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise CatalogError("catalog: [profiles] table is missing or empty")
    profiles: dict[str, Profile] = {}
    for name in profiles_raw:
        chain = _profile_chain(profiles_raw, name)
        product_names: list[str] = []
        tld_raw: dict[str, Any] = {}
        for layer in reversed(chain):
            product_names += [p for p in layer.get("products", {}) if p not in product_names]
            for tld, rules in layer.get("tlds", {}).items():
                tld_raw[tld] = {**tld_raw.get(tld, {}), **rules, "tld": tld}
        products: dict[str, Terms] = {}
        for product in product_names:
            resolved = _resolve_product(chain, product, name)
            if "tiers" in resolved:
                raise CatalogError(
                    f"profiles.{name}.products.{product}.tiers: the catalog has no tiers any more; "
                    "a product's plans and their tiers are in policy/plans.toml (HOSTLIFE_PLANS)"
                )
            try:
                products[product] = Terms.model_validate(resolved)
            except ValidationError as exc:
                raise CatalogError(_describe(f"profiles.{name}.products.{product}", exc)) from None
        tlds: dict[str, TldRules] = {}
        for tld, rules in tld_raw.items():
            try:
                tlds[tld] = TldRules.model_validate(rules)
            except ValidationError as exc:
                raise CatalogError(_describe(f"profiles.{name}.tlds.{tld}", exc)) from None
        description = next((layer["description"] for layer in chain if "description" in layer), name)
        profiles[name] = Profile(name=name, description=description, products=products, tlds=tlds)
    return Catalog(profiles=profiles)


def _describe(where: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{where}.{field}: {first['msg']}" if field else f"{where}: {first['msg']}"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load the shipped catalog, or ops' own file. Any error is a `CatalogError`, nothing half-loaded."""
    return load_policy_toml(path, "catalog.toml", "catalog", CatalogError, parse_catalog)


@cache
def default_catalog() -> Catalog:
    return load_catalog()
