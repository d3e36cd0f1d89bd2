"""The shipped catalog against SPEC §4 and §6, and the refusal of bad catalog files."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from policy.catalog import (
    Catalog,
    CatalogError,
    ProductKind,
    Terms,
    TldRules,
    default_catalog,
    load_catalog,
    parse_catalog,
)

SHIPPED = resources.files("policy").joinpath("catalog.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def terms(catalog: Catalog, profile: str, product: str) -> Terms:
    return catalog.profile(profile).terms(product)


def shipped_raw() -> dict[str, Any]:
    return tomllib.loads(SHIPPED)


# ----------------------------------------------------------------------------- SPEC §4, profile default

# product, block days, restore allowed, restore fee, fee per subserver, cascade, mail bounces
SPEC_4 = [
    ("hosting", 60, True, "500.00", False, False, True),
    ("multihosting", 60, True, "500.00", True, True, True),
    ("mnw", 60, True, "500.00", False, False, False),
    ("moje-stranky", 60, False, "0.00", False, False, False),
    ("email", 14, False, "0.00", False, False, True),
    ("eshop", 60, False, "0.00", False, False, False),
    ("extra-mail", 60, True, "500.00", False, False, True),
    ("exchange", 14, False, "0.00", False, False, False),
    ("vms", 30, True, "500.00", True, True, False),
    ("vps", 30, True, "500.00", False, False, False),
    ("aps", 30, True, "500.00", False, False, False),
]


@pytest.mark.parametrize(
    ("product", "block_days", "restore", "fee", "per_subserver", "cascade", "bounces"),
    SPEC_4,
    ids=[row[0] for row in SPEC_4],
)
def test_default_profile_follows_spec_table(
    catalog: Catalog,
    product: str,
    block_days: int,
    restore: bool,
    fee: str,
    per_subserver: bool,
    cascade: bool,
    bounces: bool,
) -> None:
    t = terms(catalog, "default", product)
    assert t.product == product
    assert t.profile == "default"
    assert t.kind is ProductKind.SERVICE
    assert t.block_days == block_days
    assert t.grace_days == 0, "block starts on D+1 in the default profile"
    assert t.restore_allowed is restore
    assert t.restore_fee == Decimal(fee)
    assert t.restore_fee_per_subserver is per_subserver
    assert t.cascade_to_subservers is cascade
    assert t.mail_bounces_when_blocked is bounces
    assert t.time_zone == "Europe/Prague"
    assert t.currency == "CZK"
    assert t.invoice_lead_days == 30
    assert t.reminder_days == [-14, -3, 1]
    assert t.deletion_warning_days == 7
    assert t.deferral_max_days == 0


def test_default_catalog_has_exactly_the_spec_products(catalog: Catalog) -> None:
    expected = {row[0] for row in SPEC_4} | {"dns", "domain", "system-updates", "vip-support"}
    assert set(catalog.profile("default").products) == expected
    assert set(catalog.profile("hostico").products) == expected
    assert set(catalog.profiles) == {"default", "hostico"}


@pytest.mark.parametrize("product", ["vps", "aps", "vms"])
def test_servers_renew_yearly_or_monthly_with_ten_percent(catalog: Catalog, product: str) -> None:
    t = terms(catalog, "default", product)
    assert t.periods == ["P1Y", "P1M"]
    assert t.monthly_surcharge_percent == Decimal("10")


@pytest.mark.parametrize("product", ["hosting", "multihosting", "email", "eshop", "dns"])
def test_hosting_like_products_renew_yearly_only(catalog: Catalog, product: str) -> None:
    assert terms(catalog, "default", product).periods == ["P1Y"]


def test_vps_and_aps_run_on_a_hypervisor_and_can_park(catalog: Catalog) -> None:
    for product in ("vps", "aps"):
        t = terms(catalog, "default", product)
        assert t.on_hypervisor and t.parking_allowed
    hosting = terms(catalog, "default", "hosting")
    assert not hosting.on_hypervisor and not hosting.parking_allowed


def test_discontinued_products_cannot_be_ordered(catalog: Catalog) -> None:
    not_orderable = {name for name, t in catalog.profile("default").products.items() if not t.orderable}
    assert not_orderable == {"mnw", "extra-mail", "exchange"}


def test_domains_renew_one_to_ten_years(catalog: Catalog) -> None:
    t = terms(catalog, "default", "domain")
    assert t.kind is ProductKind.DOMAIN
    assert t.periods == [f"P{n}Y" for n in range(1, 11)]


def test_dns_follows_its_domain_and_restores_records(catalog: Catalog) -> None:
    t = terms(catalog, "default", "dns")
    assert t.kind is ProductKind.DNS
    assert t.restore_allowed


def test_support_plans(catalog: Catalog) -> None:
    updates = terms(catalog, "default", "system-updates")
    assert updates.kind is ProductKind.SUPPORT
    assert updates.renew_from_period_end
    assert updates.free_months_first_licence == 3
    assert updates.periods == ["P1Y"]
    vip = terms(catalog, "default", "vip-support")
    assert vip.periods == ["P1M"]
    assert vip.minimum_months == 6
    assert vip.monthly_surcharge_percent == 0


def test_abuse_unblock_fee_is_1000(catalog: Catalog) -> None:
    for profile in ("default", "hostico"):
        assert terms(catalog, profile, "hosting").abuse_unblock_fee == Decimal("1000.00")


def test_vps_backup_kept_about_14_days_after_deletion(catalog: Catalog) -> None:
    assert terms(catalog, "default", "vps").backup_retention_days == 14


# ----------------------------------------------------------------------------- SPEC §6, profile hostico

HOSTICO_SERVICES = [
    "hosting",
    "multihosting",
    "email",
    "eshop",
    "vms",
    "vps",
    "aps",
    "exchange",
    "moje-stranky",
]


@pytest.mark.parametrize("product", HOSTICO_SERVICES)
def test_hostico_grace_block_deletion_and_deferral(catalog: Catalog, product: str) -> None:
    t = terms(catalog, "hostico", product)
    assert t.profile == "hostico"
    assert t.grace_days == 7, "blocked on D+8"
    assert t.block_days == 30, "deleted on D+31"
    assert t.deferral_max_days == 14
    assert t.restore_allowed
    assert t.support_hour_rate == Decimal("600.00")


def test_hostico_restore_hours_shared_vs_vps(catalog: Catalog) -> None:
    assert terms(catalog, "hostico", "hosting").restore_support_hours == 2
    assert terms(catalog, "hostico", "vps").restore_support_hours == 4
    assert terms(catalog, "hostico", "aps").restore_support_hours == 4


def test_hostico_credit_limits(catalog: Catalog) -> None:
    t = terms(catalog, "hostico", "hosting")
    assert t.credit_min_top_up == Decimal("10.00")
    assert t.credit_max_top_up == Decimal("1000.00")
    assert t.credit_max_balance == Decimal("1000.00")
    assert t.credit_currency == "EUR"
    d = terms(catalog, "default", "hosting")
    assert d.credit_min_top_up is None and d.credit_max_balance is None
    assert d.credit_currency == "CZK"


def test_hostico_domains_have_no_grace(catalog: Catalog) -> None:
    assert terms(catalog, "hostico", "domain").grace_days == 0
    assert terms(catalog, "hostico", "domain").kind is ProductKind.DOMAIN


def test_hostico_inherits_product_facts_it_does_not_override(catalog: Catalog) -> None:
    assert terms(catalog, "hostico", "vps").periods == ["P1Y", "P1M"]
    assert terms(catalog, "hostico", "multihosting").cascade_to_subservers
    assert terms(catalog, "hostico", "email").mail_bounces_when_blocked
    assert terms(catalog, "hostico", "hosting").title == "Shared hosting"
    assert catalog.profile("hostico").description.startswith("SPEC §6")


def test_unknown_product_and_profile_are_refused(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r"unknown product 'webhosting' in profile 'default'.*hosting"):
        catalog.profile("default").terms("webhosting")
    with pytest.raises(CatalogError, match=r"unknown profile 'wedos'; known: default, hostico"):
        catalog.profile("wedos")


def test_terms_are_frozen(catalog: Catalog) -> None:
    t = terms(catalog, "default", "hosting")
    with pytest.raises(ValueError):
        t.block_days = 1  # type: ignore[misc]


def test_default_catalog_is_the_shipped_file() -> None:
    assert default_catalog() == load_catalog()
    assert default_catalog() is default_catalog()


# ----------------------------------------------------------------------------- TLDs

TLD_TABLE = [
    # domain, table, zone_remove, renewable_until, redemption, quarantine, release
    ("example.cz", "cz", 31, 60, None, None, 61),
    ("example.sk", "sk", 1, 40, None, None, 41),
    ("example.eu", "eu", None, None, None, 0, 40),
    ("example.com", "gtld", 1, 30, 31, None, 61),
    ("example.net", "gtld", 1, 30, 31, None, 61),
    ("example.org", "gtld", 1, 30, 31, None, 61),
    ("example.info", "gtld", 1, 30, 31, None, 61),
    ("example.biz", "gtld", 1, 30, 31, None, 61),
    ("example.mobi", "gtld", 1, 30, 31, None, 61),
    ("shop.example.online", "gtld", 1, 30, 31, None, 61),
]


@pytest.mark.parametrize("profile", ["default", "hostico"])
@pytest.mark.parametrize(
    ("domain", "table", "zone_remove", "renewable_until", "redemption", "quarantine", "release"),
    TLD_TABLE,
    ids=[row[0] for row in TLD_TABLE],
)
def test_tld_rules(
    catalog: Catalog,
    profile: str,
    domain: str,
    table: str,
    zone_remove: int | None,
    renewable_until: int | None,
    redemption: int | None,
    quarantine: int | None,
    release: int,
) -> None:
    rules = catalog.profile(profile).tld_rules(domain)
    assert isinstance(rules, TldRules)
    assert rules.tld == table
    assert rules.zone_remove_day == zone_remove
    assert rules.renewable_until_day == renewable_until
    assert rules.redemption_day == redemption
    assert rules.quarantine_day == quarantine
    assert rules.release_day == release


@pytest.mark.parametrize("domain", ["EXAMPLE.CZ", "example.cz.", "www.shop.example.cz"])
def test_tld_lookup_ignores_case_trailing_dot_and_subdomains(catalog: Catalog, domain: str) -> None:
    assert catalog.profile("default").tld_rules(domain).tld == "cz"


def test_paid_registry_restores_cost_something(catalog: Catalog) -> None:
    profile = catalog.profile("default")
    assert profile.tld_rules("a.eu").restore_fee > 0
    assert profile.tld_rules("a.com").restore_fee > 0


@pytest.mark.parametrize("domain", ["example.de", "example.co.uk", "example.xn--p1ai"])
def test_unknown_tld_is_refused_clearly(catalog: Catalog, domain: str) -> None:
    tld = domain.rsplit(".", 1)[-1]
    with pytest.raises(CatalogError) as info:
        catalog.profile("default").tld_rules(domain)
    message = str(info.value)
    assert f"TLD .{tld}" in message
    assert repr(domain) in message
    assert "has no registry rules" in message
    assert "cz" in message and "com" in message, "the message lists the known TLDs"


@pytest.mark.parametrize("name", ["cz", "localhost", "", "."])
def test_a_bare_label_is_not_a_domain_name(catalog: Catalog, name: str) -> None:
    with pytest.raises(CatalogError, match="is not a domain name"):
        catalog.profile("default").tld_rules(name)


# ----------------------------------------------------------------------------- bad catalog files


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped catalog with one exact edit (asserted to apply)."""
    assert SHIPPED.count(old) == 1, old
    return write(tmp_path, SHIPPED.replace(old, new))


def refused(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value)


def test_shipped_catalog_text_loads_from_a_path(tmp_path: Path) -> None:
    assert load_catalog(write(tmp_path, SHIPPED)) == load_catalog()


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, SHIPPED + "\n[profiles.default\nblock_days = 3\n")
    message = refused(path)
    assert str(path) in message
    assert "is not valid TOML" in message


def test_unreadable_file(tmp_path: Path) -> None:
    message = refused(tmp_path / "missing.toml")
    assert "cannot read catalog" in message
    assert "missing.toml" in message


def test_not_utf8_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_bytes(SHIPPED.replace('title = "Shared hosting"', 'title = "Sd\xedlen\xfd"').encode("latin-1"))
    message = refused(path)
    assert str(path) in message
    assert "not UTF-8" in message


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        pytest.param(
            'title = "Shared hosting"',
            'title = "Shared hosting"\nblok_days = 60',
            "profiles.default.products.hosting.blok_days",
            "Extra inputs are not permitted",
            id="unknown-field-in-product",
        ),
        pytest.param(
            'title = "E-mail (ACTIVE 24)"\nblock_days = 14',
            'title = "E-mail (ACTIVE 24)"\nblock_days = -14',
            "profiles.default.products.email.block_days",
            "greater than or equal to 0",
            id="negative-block-days",
        ),
        pytest.param(
            'title = "VPS"\nblock_days = 30',
            'title = "VPS"\nblock_days = 30\ngrace_days = 31',
            "profiles.default.products.vps",
            "grace_days (31) exceeds block_days (30)",
            id="grace-beyond-block",
        ),
        pytest.param(
            'title = "VMS"\nblock_days = 30\nrestore_allowed = true\nrestore_fee = "500.00"\n'
            'restore_fee_per_subserver = true\ncascade_to_subservers = true\nperiods = ["P1Y", "P1M"]',
            'title = "VMS"\nblock_days = 30\nrestore_allowed = true\nrestore_fee = "500.00"\n'
            'restore_fee_per_subserver = true\ncascade_to_subservers = true\nperiods = ["P1Y", "P1W"]',
            "profiles.default.products.vms.periods",
            "'P1W'",
            id="bad-period",
        ),
        pytest.param(
            'periods = ["P1M"]\nmonthly_surcharge_percent = "0"',
            'periods = ["P11Y"]\nmonthly_surcharge_percent = "0"',
            "profiles.default.products.vip-support.periods",
            "between 1 month and 10 years",
            id="period-over-ten-years",
        ),
        pytest.param(
            'restore_fee = "1500.00"',
            'restore_fee = "1500.005"',
            "profiles.default.tlds.eu.restore_fee",
            "more than 2 decimal places",
            id="money-with-three-decimals",
        ),
        pytest.param(
            "redemption_day = 31\nrelease_day = 61",
            "redemption_day = 62\nrelease_day = 61",
            "profiles.default.tlds.gtld",
            "redemption/quarantine starts after release",
            id="redemption-after-release",
        ),
        pytest.param(
            'registry = "SK-NIC"',
            'registry = "SK-NIC"\nzone_remove = 1',
            "profiles.default.tlds.sk.zone_remove",
            "Extra inputs are not permitted",
            id="unknown-field-in-tld",
        ),
        pytest.param(
            "[profiles.hostico.products.domain]\ngrace_days = 0",
            "[profiles.hostico.products.domain]\ngrace_days = 31",
            "profiles.hostico.products.domain",
            "grace_days (31) exceeds block_days (30)",
            id="error-only-in-child-profile",
        ),
    ],
)
def test_bad_field_is_refused_with_its_dotted_path(
    tmp_path: Path, old: str, new: str, path: str, reason: str
) -> None:
    message = refused(edited(tmp_path, old, new))
    assert f"{path}" in message
    assert reason in message
    assert message.startswith(str(tmp_path / "catalog.toml") + ": ")


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        (
            "grace_days = 0\nblock_days = 60",
            "grace_days = -1\nblock_days = 60",
            "grace_days",
            "greater than or equal to 0",
        ),
        ('time_zone = "Europe/Prague"', 'time_zone = "Europe/Praha"', "time_zone", "unknown time zone"),
        ('time_zone = "Europe/Prague"', 'time_zone = "../etc/passwd"', "time_zone", "unknown time zone"),
        ("invoice_lead_days = 30", "invoice_lead_days = 10", "", "a reminder falls before the invoice"),
        (
            "block_days = 60\ndeferral",
            "block_days = 60\nblok_days = 60\ndeferral",
            "blok_days",
            "Extra inputs",
        ),
    ],
    ids=["negative-grace", "unknown-zone", "zone-path", "reminder-before-invoice", "unknown-profile-field"],
)
def test_bad_profile_default_is_refused_naming_the_field(
    tmp_path: Path, old: str, new: str, field: str, reason: str
) -> None:
    message = refused(edited(tmp_path, old, new))
    assert "profiles.default." in message
    if field:
        assert f".{field}:" in message
    assert reason in message


def test_extends_cycle(tmp_path: Path) -> None:
    text = (
        SHIPPED
        + '\n[profiles.a]\ndescription = "a"\nextends = "b"\n\n[profiles.b]\ndescription = "b"\nextends = "a"\n'
    )
    message = refused(write(tmp_path, text))
    assert "profiles.a" in message
    assert "cycle" in message


def test_extends_itself(tmp_path: Path) -> None:
    message = refused(edited(tmp_path, 'extends = "default"', 'extends = "hostico"'))
    assert "profiles.hostico" in message
    assert "cycle" in message


def test_extends_unknown_parent(tmp_path: Path) -> None:
    message = refused(edited(tmp_path, 'extends = "default"', 'extends = "defualt"'))
    assert "profiles.hostico" in message
    assert "extends unknown profile 'defualt'" in message


def test_tiers_in_the_catalog_are_refused_pointing_to_the_plans(tmp_path: Path) -> None:
    """VPS tiers were one of two names for the same thing: plans (policy/plans.toml) are the one."""
    message = refused(
        edited(
            tmp_path,
            '[profiles.default.products.vps]\ntitle = "VPS"',
            '[profiles.default.products.vps]\ntitle = "VPS"\ntiers = ["S", "M", "L", "XL"]',
        )
    )
    assert "profiles.default.products.vps.tiers: the catalog has no tiers any more" in message
    assert "policy/plans.toml" in message


def test_missing_profiles_table() -> None:
    with pytest.raises(CatalogError, match=r"\[profiles\] table is missing or empty"):
        parse_catalog({})
    with pytest.raises(CatalogError, match=r"\[profiles\] table is missing or empty"):
        parse_catalog({"profiles": {}})


def test_a_later_bad_profile_refuses_the_whole_catalog() -> None:
    raw = shipped_raw()
    raw["profiles"]["zz-last"] = {"extends": "default", "description": "x", "block_days": -1}
    with pytest.raises(CatalogError, match=r"profiles\.zz-last\.products\.[a-z-]+\.block_days"):
        parse_catalog(raw)


def test_nothing_half_loaded(tmp_path: Path) -> None:
    """A refused file leaves no partial catalog behind and does not poison the shipped one."""
    before = default_catalog()
    bad = edited(
        tmp_path,
        "[profiles.hostico.products.domain]\ngrace_days = 0",
        "[profiles.hostico.products.domain]\ngrace_days = 99",
    )
    result: Catalog | None = None
    with pytest.raises(CatalogError):
        result = load_catalog(bad)
    assert result is None
    assert default_catalog() is before
    assert load_catalog() == before
    # the raw dict is not mutated by parsing (a retry after a fix sees the original data)
    raw = shipped_raw()
    snapshot = tomllib.loads(SHIPPED)
    parse_catalog(raw)
    assert raw == snapshot


def test_child_profile_overrides_parent_per_product() -> None:
    raw = {
        "profiles": {
            "base": {
                "description": "base",
                "time_zone": "UTC",
                "currency": "CZK",
                "invoice_lead_days": 20,
                "reminder_days": [-5],
                "deletion_warning_days": 3,
                "grace_days": 0,
                "block_days": 10,
                "deferral_max_days": 0,
                "monthly_surcharge_percent": "10",
                "backup_retention_days": 5,
                "restore_allowed": False,
                "restore_fee": "0",
                "abuse_repeat_window_days": 90,
                "abuse_unblock_fee": "1000",
                "products": {"web": {"title": "Web", "block_days": 40}, "mail": {"title": "Mail"}},
                "tlds": {"cz": {"registry": "x", "renewable_until_day": 5, "release_day": 9}},
            },
            "child": {
                "description": "child",
                "extends": "base",
                "grace_days": 2,
                "products": {"mail": {"block_days": 3}},
                "tlds": {"cz": {"release_day": 20}},
            },
        }
    }
    catalog = parse_catalog(raw)
    assert catalog.profile("base").terms("web").block_days == 40
    assert catalog.profile("base").terms("mail").block_days == 10
    child = catalog.profile("child")
    assert child.terms("mail").block_days == 3
    assert child.terms("mail").grace_days == 2
    assert child.terms("mail").title == "Mail"
    assert child.terms("mail").time_zone == "UTC"
    assert child.terms("mail").restore_fee == Decimal("0.00")
    cz = child.tld_rules("a.cz")
    assert (cz.renewable_until_day, cz.release_day, cz.registry) == (5, 20, "x")
    assert catalog.profile("base").tld_rules("a.cz").release_day == 9
