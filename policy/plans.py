"""Plan tiers of a product (SPEC §6 upgrades and downgrades), loaded from TOML and validated.

A plan change moves a service between plans of its own product only; the tier number orders them,
so a higher tier is an upgrade. The starter resolves a product's tiers here and sends them with the
`change_plan` update, so a running workflow never reads this file and a catalog edit never changes
how a service replays (the same rule as `policy.catalog`).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from policy.money import Money
from policy.toml_files import load_policy_toml


class PlansError(ValueError):
    """The plans file is not valid, or a plan asked for does not exist; the message says which."""


class PlanTier(BaseModel):
    """One plan: its place among the product's plans, its yearly price and what it provides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=60, pattern=r"^[a-z0-9][a-z0-9.-]*$")
    tier: int = Field(ge=1)
    title: str = ""
    price: Money
    """Yearly price in the profile's price currency."""
    resources: dict[str, int] = {}

    @model_validator(mode="after")
    def _positive(self) -> PlanTier:
        if self.price <= 0:
            raise ValueError(f"plan {self.name}: price must be positive, got {self.price}")
        return self


class ProductPlans(BaseModel):
    """The plans of one product, lowest tier first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: str
    plans: list[PlanTier] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> ProductPlans:
        names = [p.name for p in self.plans]
        tiers = [p.tier for p in self.plans]
        if len(set(names)) != len(names):
            raise ValueError(f"plan names repeat: {', '.join(sorted(names))}")
        if len(set(tiers)) != len(tiers):
            raise ValueError("two plans share a tier; tiers order the plans and must differ")
        object.__setattr__(self, "plans", sorted(self.plans, key=lambda p: p.tier))
        return self

    def plan(self, name: str) -> PlanTier:
        for plan in self.plans:
            if plan.name == name:
                return plan
        known = ", ".join(p.name for p in self.plans)
        raise PlansError(f"{self.product} has no plan {name!r}; its plans: {known}")


class PlansCatalog(BaseModel):
    model_config = ConfigDict(frozen=True)

    profiles: dict[str, dict[str, ProductPlans]]

    def product_plans(self, profile: str, product: str) -> ProductPlans:
        """The tiers of one product; a product without plans cannot change plan (the error says so)."""
        if profile not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise PlansError(f"unknown profile {profile!r}; known: {known}")
        try:
            return self.profiles[profile][product]
        except KeyError:
            offered = ", ".join(sorted(self.profiles[profile])) or "none"
            raise PlansError(
                f"{product} has no plan tiers in profile {profile!r}, so its plan cannot change "
                f"(products with plans: {offered})"
            ) from None

    def product_of(self, profile: str, plan: str) -> str | None:
        """The product a plan name belongs to in a profile (names are unique per profile)."""
        for product, plans in self.profiles.get(profile, {}).items():
            if any(p.name == plan for p in plans.plans):
                return product
        return None


def _chain(raw: dict[str, Any], name: str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        if current in seen:
            raise PlansError(f"profiles.{name}: 'extends' forms a cycle through {current!r}")
        layer = raw.get(current)
        if not isinstance(layer, dict):
            raise PlansError(f"profiles.{name}: extends unknown profile {current!r}")
        seen.add(current)
        chain.append(layer)
        current = layer.get("extends")
    return chain


def parse_plans(raw: dict[str, Any]) -> PlansCatalog:
    """Validate every profile's plans; the first problem is reported with its dotted path."""
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise PlansError("plans: [profiles] table is missing or empty")
    profiles: dict[str, dict[str, ProductPlans]] = {}
    for name in profiles_raw:
        products_raw: dict[str, Any] = {}
        for layer in reversed(_chain(profiles_raw, name)):
            products_raw.update(layer.get("products", {}))
        products: dict[str, ProductPlans] = {}
        owner: dict[str, str] = {}
        for product, body in products_raw.items():
            try:
                products[product] = ProductPlans.model_validate({"product": product, **body})
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"])
                raise PlansError(f"profiles.{name}.products.{product}.{field}: {first['msg']}") from None
            for plan in products[product].plans:
                if plan.name in owner:
                    raise PlansError(
                        f"profiles.{name}: plan {plan.name!r} belongs to both {owner[plan.name]} and {product}"
                    )
                owner[plan.name] = product
        profiles[name] = products
    return PlansCatalog(profiles=profiles)


def load_plans(path: str | Path | None = None) -> PlansCatalog:
    """The shipped plans, or ops' own file. Any error is a `PlansError`."""
    return load_policy_toml(path, "plans.toml", "plans", PlansError, parse_plans)


@cache
def configured_plans() -> PlansCatalog:
    """Ops' plans (HOSTLIFE_PLANS) when set, else the shipped ones."""
    path = os.environ.get("HOSTLIFE_PLANS")
    return load_plans(path) if path else load_plans()
