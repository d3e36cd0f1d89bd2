"""Plan tiers (policy/plans.toml): the shipped file, inheritance, and every refusal naming its field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from policy.plans import PlansError, load_plans, parse_plans


def test_shipped_plans_are_ordered_by_tier_and_inherited_by_hostico() -> None:
    plans = load_plans()
    vps = plans.product_plans("hostico", "vps")
    assert [(p.name, p.tier, p.price) for p in vps.plans] == [
        ("vps-s", 1, Decimal("3600.00")),
        ("vps-m", 2, Decimal("7200.00")),
        ("vps-l", 3, Decimal("14400.00")),
    ]
    assert vps.plan("vps-m").resources == {"vcpus": 2, "memory_mb": 4096, "disk_gb": 80}
    assert plans.product_of("hostico", "hosting-premium") == "hosting"
    assert plans.product_of("hostico", "nothing") is None


def test_unknown_plans_products_and_profiles_are_named() -> None:
    plans = load_plans()
    with pytest.raises(
        PlansError, match="hosting has no plan 'gold'; its plans: hosting-start, hosting-standard"
    ):
        plans.product_plans("default", "hosting").plan("gold")
    with pytest.raises(PlansError, match="domain has no plan tiers in profile 'default'"):
        plans.product_plans("default", "domain")
    with pytest.raises(PlansError, match="unknown profile 'nope'"):
        plans.product_plans("nope", "vps")


def raw(**products: Any) -> dict[str, Any]:
    return {"profiles": {"default": {"products": products}}}


def tier(name: str, number: int, price: str = "100.00") -> dict[str, Any]:
    return {"name": name, "tier": number, "price": price}


def test_tiers_are_sorted_whatever_order_the_file_gives() -> None:
    catalog = parse_plans(raw(web={"plans": [tier("b", 2), tier("a", 1)]}))
    assert [p.name for p in catalog.product_plans("default", "web").plans] == ["a", "b"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"\[profiles\] table is missing"),
        (raw(web={"plans": [tier("a", 1), tier("b", 1)]}), "two plans share a tier"),
        (raw(web={"plans": [tier("a", 1), tier("a", 2)]}), "plan names repeat"),
        (raw(web={"plans": [tier("a", 1, "0.00")]}), "price must be positive"),
        (raw(web={"plans": [tier("a", 1, "1.001")]}), "profiles.default.products.web.plans.0.price"),
        (raw(web={"plans": []}), "profiles.default.products.web.plans"),
        (raw(web={"plans": [{**tier("a", 1), "colour": "red"}]}), "colour"),
        (raw(web={"plans": [tier("a", 1)]}, mail={"plans": [tier("a", 1)]}), "belongs to both web and mail"),
        ({"profiles": {"x": {"extends": "y"}}}, "extends unknown profile 'y'"),
        ({"profiles": {"x": {"extends": "x"}}}, "cycle"),
    ],
)
def test_a_bad_plans_file_is_refused_naming_the_problem(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PlansError, match=message):
        parse_plans(data)


def test_ops_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "plans.toml"
    bad.write_text("[profiles.default.products.web]\nplans = [{ name = 'a', tier = 0, price = '1.00' }]\n")
    with pytest.raises(PlansError, match=f"{bad}: profiles.default.products.web.plans.0.tier"):
        load_plans(bad)
    with pytest.raises(PlansError, match="cannot read plans"):
        load_plans(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[profiles\n")
    with pytest.raises(PlansError, match="not valid TOML"):
        load_plans(broken)
