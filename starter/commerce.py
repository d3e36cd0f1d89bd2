"""Building the SPEC §6 requests a service needs: its profile's commerce rules and its product's plans.

The workflow never reads the rules files; the starter resolves them here, once per request, from
`policy/commerce.toml` and `policy/plans.toml` (or ops' own files: HOSTLIFE_COMMERCE, HOSTLIFE_PLANS).
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache

from policy.commerce import CommerceCatalog, CommerceRules, PlanChangeKind, load_commerce_rules
from policy.plans import PlansCatalog, configured_plans
from workflows.commerce_models import (
    ChangePlanRequest,
    ProviderDeletionRequest,
    RefundOnRequest,
)


@cache
def configured_commerce() -> CommerceCatalog:
    path = os.environ.get("HOSTLIFE_COMMERCE")
    return load_commerce_rules(path) if path else load_commerce_rules()


def rules_for(profile: str) -> CommerceRules:
    return configured_commerce().rules(profile)


def change_plan_request(
    profile: str,
    product: str,
    plan: str,
    kind: PlanChangeKind,
    current_plan: str | None = None,
    plans: PlansCatalog | None = None,
) -> ChangePlanRequest:
    """The request for `plan`; a plan of another product is refused here, naming the product."""
    catalog = plans or configured_plans()
    owner = catalog.product_of(profile, plan)
    if owner is not None and owner != product:
        raise ValueError(
            f"{plan} is a plan of {owner}; the service is {product}: plans change within a product"
        )
    tiers = catalog.product_plans(profile, product)
    tiers.plan(plan)  # an unknown plan is refused with the product's plans listed
    return ChangePlanRequest(
        plan=plan,
        kind=kind,
        product=product,
        tiers=tiers.plans,
        rules=rules_for(profile),
        current_plan=current_plan,
    )


def refund_request(
    profile: str,
    migration_hours: Decimal = Decimal(0),
    reason: str = "customer request",
    dry_run: bool = False,
) -> RefundOnRequest:
    return RefundOnRequest(
        rules=rules_for(profile), support_hours_on_migration=migration_hours, reason=reason, dry_run=dry_run
    )


def provider_deletion_request(profile: str, reason: str) -> ProviderDeletionRequest:
    return ProviderDeletionRequest(rules=rules_for(profile), reason=reason)
