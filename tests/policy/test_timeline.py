"""Exact milestone days per product and profile (SPEC §3–4, §6), and properties of every timeline."""

from __future__ import annotations

from collections import Counter
from datetime import date, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.catalog import Catalog, ProductKind, Terms, TldRules, load_catalog
from policy.timeline import (
    CycleFacts,
    Milestone,
    MilestoneKind,
    block_day,
    deletion_day,
    is_stale,
    next_milestone,
    timeline,
)

K = MilestoneKind
CATALOG: Catalog = load_catalog()
D = date(2027, 6, 30)

INVOICE, REMINDER, EXPIRE, BLOCK = K.ISSUE_INVOICE, K.REMINDER, K.EXPIRE, K.BLOCK
WARNING, DELETE, PURGE = K.DELETION_WARNING, K.DELETE, K.PURGE


def terms(profile: str, product: str) -> Terms:
    return CATALOG.profile(profile).terms(product)


def offsets(milestones: list[Milestone]) -> list[tuple[MilestoneKind, int]]:
    return [(m.kind, m.offset) for m in milestones]


def service_timeline(
    block: int, delete: int, purge: int, warning: int | None = None, expire: bool = False
) -> list[tuple[MilestoneKind, int]]:
    items = [(INVOICE, -30), (REMINDER, -14), (REMINDER, -3), (REMINDER, 1)]
    if expire:
        items.append((EXPIRE, 1))
    items.append((BLOCK, block))
    items.append((WARNING, delete - 7 if warning is None else warning))
    items += [(DELETE, delete), (PURGE, purge)]
    return items


EXPECTED = {
    # default: blocked on D+1, deleted on D + block days + 1, purged after backup retention
    ("default", "hosting"): service_timeline(block=1, delete=61, purge=75),
    ("default", "multihosting"): service_timeline(block=1, delete=61, purge=75),
    ("default", "mnw"): service_timeline(block=1, delete=61, purge=75),
    ("default", "moje-stranky"): service_timeline(block=1, delete=61, purge=61),
    ("default", "eshop"): service_timeline(block=1, delete=61, purge=61),
    ("default", "extra-mail"): service_timeline(block=1, delete=61, purge=75),
    ("default", "email"): service_timeline(block=1, delete=15, purge=15),
    ("default", "exchange"): service_timeline(block=1, delete=15, purge=15),
    ("default", "vps"): service_timeline(block=1, delete=31, purge=45),
    ("default", "aps"): service_timeline(block=1, delete=31, purge=45),
    ("default", "vms"): service_timeline(block=1, delete=31, purge=45),
    ("default", "dns"): service_timeline(block=1, delete=61, purge=75),
    # hostico: 7 days' grace (expired but running), blocked D+8, deleted D+31, backup kept 30 days
    **{
        ("hostico", product): service_timeline(block=8, delete=31, purge=61, expire=True)
        for product in ("hosting", "multihosting", "email", "eshop", "vps", "aps", "vms", "dns")
    },
}


@pytest.mark.parametrize(("profile", "product"), list(EXPECTED), ids=[f"{p}-{q}" for p, q in EXPECTED])
def test_exact_milestones(profile: str, product: str) -> None:
    milestones = timeline(terms(profile, product), CycleFacts(expires_on=D))
    assert offsets(milestones) == EXPECTED[(profile, product)]
    for m in milestones:
        assert m.on == D + timedelta(days=m.offset)
        assert m.at == time(0, 0)


def test_default_hosting_by_calendar_date() -> None:
    milestones = timeline(terms("default", "hosting"), CycleFacts(expires_on=date(2027, 12, 31)))
    assert [m.describe() for m in milestones] == [
        "issue_invoice on 2027-12-01 (D-30)",
        "reminder on 2027-12-17 (D-14)",
        "reminder on 2027-12-28 (D-3)",
        "reminder on 2028-01-01 (D+1)",
        "block on 2028-01-01 (D+1)",
        "deletion_warning on 2028-02-23 (D+54)",
        "delete on 2028-03-01 (D+61)",
        "purge on 2028-03-15 (D+75)",
    ]


def test_system_updates_are_deleted_after_a_year_unpaid() -> None:
    milestones = timeline(terms("default", "system-updates"), CycleFacts(expires_on=D))
    assert offsets(milestones)[-2:] == [(DELETE, 366), (PURGE, 366)]


@pytest.mark.parametrize("profile", ["default", "hostico"])
def test_block_and_deletion_day_helpers(profile: str) -> None:
    t = terms(profile, "hosting")
    facts = CycleFacts(expires_on=D)
    assert deletion_day(t, D) == D + timedelta(days=t.block_days + 1)
    assert block_day(t, facts) == D + timedelta(days=t.grace_days + 1)


# ----------------------------------------------------------------------------- domains

DOMAINS = {
    "example.cz": [
        (INVOICE, -30),
        (REMINDER, -14),
        (REMINDER, -3),
        (REMINDER, 1),
        (EXPIRE, 1),
        (K.ZONE_REMOVE, 31),
        (WARNING, 54),
        (K.RELEASE, 61),
    ],
    "example.sk": [
        (INVOICE, -30),
        (REMINDER, -14),
        (REMINDER, -3),
        (REMINDER, 1),
        (K.ZONE_REMOVE, 1),
        (WARNING, 34),
        (K.RELEASE, 41),
    ],
    # quarantine from D itself: the D+1 reminder would offer a renewal that no longer exists
    "example.eu": [
        (INVOICE, -30),
        (REMINDER, -14),
        (REMINDER, -3),
        (K.QUARANTINE, 0),
        (WARNING, 33),
        (K.RELEASE, 40),
    ],
    "example.com": [
        (INVOICE, -30),
        (REMINDER, -14),
        (REMINDER, -3),
        (REMINDER, 1),
        (K.ZONE_REMOVE, 1),
        (K.REDEMPTION, 31),
        (WARNING, 54),
        (K.RELEASE, 61),
    ],
}


@pytest.mark.parametrize("profile", ["default", "hostico"])
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_domain_milestones_follow_the_registry(profile: str, domain: str) -> None:
    rules = CATALOG.profile(profile).tld_rules(domain)
    milestones = timeline(terms(profile, "domain"), CycleFacts(expires_on=D), rules)
    assert offsets(milestones) == DOMAINS[domain]
    assert BLOCK not in {m.kind for m in milestones}


def test_domain_without_tld_rules_is_refused() -> None:
    with pytest.raises(ValueError, match="registry rules of its TLD"):
        timeline(terms("default", "domain"), CycleFacts(expires_on=D))


def test_domain_hostico_grace_does_not_delay_registry() -> None:
    rules = CATALOG.profile("hostico").tld_rules("example.cz")
    milestones = timeline(terms("hostico", "domain"), CycleFacts(expires_on=D), rules)
    assert (K.ZONE_REMOVE, 31) in offsets(milestones)


# ----------------------------------------------------------------------------- deferral, cancellation, lead


@pytest.mark.parametrize(
    ("deferral", "block"),
    [
        (None, 8),
        (3, 8),  # a deferral inside the grace changes nothing
        (7, 8),
        (10, 11),
        (14, 15),  # the longest a customer may ask for
        (29, 30),
        (30, 31),  # support granted more: block never later than deletion
        (45, 31),
    ],
)
def test_hostico_deferral_moves_the_block(deferral: int | None, block: int) -> None:
    t = terms("hostico", "hosting")
    until = None if deferral is None else D + timedelta(days=deferral)
    facts = CycleFacts(expires_on=D, deferral_until=until)
    milestones = timeline(t, facts)
    blocks = [m for m in milestones if m.kind is BLOCK]
    assert [m.offset for m in blocks] == [block]
    assert block_day(t, facts) == D + timedelta(days=block)
    assert [m.offset for m in milestones if m.kind is DELETE] == [31], "deferral never moves deletion"
    assert (EXPIRE, 1) in offsets(milestones)


def test_default_deferral_moves_the_block_and_adds_expiry() -> None:
    t = terms("default", "hosting")
    milestones = timeline(t, CycleFacts(expires_on=D, deferral_until=D + timedelta(days=5)))
    assert (EXPIRE, 1) in offsets(milestones)
    assert [m.offset for m in milestones if m.kind is BLOCK] == [6]


@pytest.mark.parametrize(
    ("profile", "product", "cancel", "expected"),
    [
        ("default", "hosting", -10, [(K.CANCEL, -9), (DELETE, -9), (PURGE, 5)]),
        ("default", "hosting", None, [(K.CANCEL, 1), (DELETE, 1), (PURGE, 15)]),
        ("default", "email", -1, [(K.CANCEL, 0), (DELETE, 0), (PURGE, 0)]),
        ("hostico", "vps", -100, [(K.CANCEL, -99), (DELETE, -99), (PURGE, -69)]),
        ("default", "domain", -5, [(K.CANCEL, -4), (K.RELEASE, -4)]),
    ],
)
def test_cancellation_yields_cancel_delete_purge_only(
    profile: str, product: str, cancel: int | None, expected: list[tuple[MilestoneKind, int]]
) -> None:
    # "on a given date, or on D if none": the caller passes D itself when no date was given
    effective = D + timedelta(days=cancel if cancel is not None else 0)
    rules = CATALOG.profile(profile).tld_rules("a.cz") if product == "domain" else None
    milestones = timeline(
        terms(profile, product), CycleFacts(expires_on=D, cancel_effective_on=effective), rules
    )
    assert offsets(milestones) == expected


def test_a_cancellation_after_d_leaves_this_cycle_as_it_is() -> None:
    # e.g. the end of a minimum term: this cycle is invoiced and runs; a later one ends.
    plain = timeline(terms("default", "hosting"), CycleFacts(expires_on=D))
    later = timeline(terms("default", "hosting"), CycleFacts(expires_on=D, cancel_effective_on=D + timedelta(days=20)))
    assert later == plain


def test_customer_invoice_lead() -> None:
    milestones = timeline(terms("default", "hosting"), CycleFacts(expires_on=D, invoice_lead_days=45))
    assert offsets(milestones)[0] == (INVOICE, -45)
    milestones = timeline(terms("default", "hosting"), CycleFacts(expires_on=D, invoice_lead_days=10))
    assert [m.offset for m in milestones if m.kind is INVOICE] == [-10]


def test_milestone_time_of_day_comes_from_terms() -> None:
    t = terms("default", "hosting")
    t = t.model_copy(
        update={"milestone_times": {**t.milestone_times, "block": time(9, 30), "reminder": time(8)}}
    )
    milestones = timeline(t, CycleFacts(expires_on=D))
    block = next(m for m in milestones if m.kind is BLOCK)
    assert block.at == time(9, 30)
    assert {m.at for m in milestones if m.kind is REMINDER} == {time(8)}
    assert next(m for m in milestones if m.kind is DELETE).at == time(0, 0)
    # same day: the reminder at 08:00 comes before the block at 09:30
    day1 = [m.kind for m in milestones if m.offset == 1]
    assert day1 == [REMINDER, BLOCK]


def test_milestone_key_and_describe() -> None:
    m = Milestone(kind=BLOCK, on=date(2027, 7, 1), offset=1)
    assert m.key == "block@2027-07-01"
    assert m.describe() == "block on 2027-07-01 (D+1)"
    assert Milestone(kind=INVOICE, on=date(2027, 5, 31), offset=-30).describe().endswith("(D-30)")


# ----------------------------------------------------------------------------- next_milestone, is_stale


def test_next_milestone_walks_the_timeline() -> None:
    t = terms("default", "vps")
    facts = CycleFacts(expires_on=D)
    full = timeline(t, facts)
    done: list[str] = []
    walked = []
    while (m := next_milestone(t, facts, done)) is not None:
        walked.append(m)
        done.append(m.key)
    assert walked == full
    assert next_milestone(t, facts, done) is None


def test_next_milestone_skips_only_what_is_done() -> None:
    t = terms("default", "hosting")
    facts = CycleFacts(expires_on=D)
    full = timeline(t, facts)
    # done out of order: the earliest not done comes next
    assert next_milestone(t, facts, [full[1].key, full[2].key]) == full[0]
    assert next_milestone(t, facts, [full[0].key, full[2].key]) == full[1]
    rules = CATALOG.profile("default").tld_rules("a.eu")
    assert next_milestone(terms("default", "domain"), facts, [], rules) == Milestone(
        kind=INVOICE, on=D - timedelta(days=30), offset=-30
    )


@pytest.mark.parametrize(
    ("kind", "late", "stale"),
    [
        (REMINDER, 0, False),
        (REMINDER, 1, False),
        (REMINDER, 2, True),
        (WARNING, 2, True),
        (WARNING, -5, False),
        (BLOCK, 30, False),
        (DELETE, 30, False),
        (INVOICE, 30, False),
    ],
)
def test_is_stale_only_for_notices_more_than_a_day_late(kind: MilestoneKind, late: int, stale: bool) -> None:
    m = Milestone(kind=kind, on=D, offset=0)
    assert is_stale(m, D + timedelta(days=late)) is stale


# ----------------------------------------------------------------------------- properties

PRODUCTS = [
    (profile, product) for profile in CATALOG.profiles for product in CATALOG.profile(profile).products
]
DOMAIN_NAMES = ["a.cz", "a.sk", "a.eu", "a.com", "a.org", "a.xyz"]


@st.composite
def cycles(draw: st.DrawFn) -> tuple[Terms, CycleFacts, TldRules | None]:
    profile, product = draw(st.sampled_from(PRODUCTS))
    t = terms(profile, product)
    rules = None
    if t.kind is ProductKind.DOMAIN:
        rules = CATALOG.profile(profile).tld_rules(draw(st.sampled_from(DOMAIN_NAMES)))
    expires_on = draw(st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)))
    near = st.integers(min_value=-400, max_value=400).map(lambda n: expires_on + timedelta(days=n))
    facts = CycleFacts(
        expires_on=expires_on,
        deferral_until=draw(st.none() | near),
        cancel_effective_on=draw(st.none() | st.none() | near),
        invoice_lead_days=draw(st.none() | st.integers(min_value=1, max_value=90)),
    )
    return t, facts, rules


@settings(max_examples=400, deadline=None)
@given(cycles())
def test_timeline_properties(cycle: tuple[Terms, CycleFacts, TldRules | None]) -> None:
    t, facts, rules = cycle
    d = facts.expires_on
    milestones = timeline(t, facts, rules)
    kinds = [m.kind for m in milestones]
    count = Counter(kinds)

    assert milestones, "a cycle always has something to do"
    assert [(m.on, m.at) for m in milestones] == sorted((m.on, m.at) for m in milestones)
    assert len({m.key for m in milestones}) == len(milestones)
    for m in milestones:
        assert m.offset == (m.on - d).days

    if facts.cancel_effective_on is not None and facts.cancel_effective_on <= d:
        ends = facts.cancel_effective_on + timedelta(days=1)
        if t.kind is ProductKind.DOMAIN:
            assert kinds == [K.CANCEL, K.RELEASE]
        else:
            assert kinds == [K.CANCEL, DELETE, PURGE]
            assert milestones[2].on == ends + timedelta(days=t.backup_retention_days)
        assert milestones[0].on == milestones[1].on == ends
        assert ends <= d + timedelta(days=1)
        return

    invoices = [m for m in milestones if m.kind is INVOICE]
    assert len(invoices) == 1
    assert invoices[0].on < d
    lead = facts.invoice_lead_days if facts.invoice_lead_days is not None else t.invoice_lead_days
    assert invoices[0].offset == -lead
    assert count[K.CANCEL] == 0

    if t.kind is ProductKind.DOMAIN:
        assert rules is not None
        assert count[K.RELEASE] == 1 and kinds[-1] is K.RELEASE
        assert milestones[-1].offset == rules.release_day
        assert count[BLOCK] == count[DELETE] == count[PURGE] == 0
        return

    for kind in (BLOCK, DELETE, PURGE):
        assert count[kind] == 1, kind
    assert count[EXPIRE] <= 1 and count[WARNING] <= 1
    delete_at = kinds.index(DELETE)
    assert kinds[delete_at + 1 :] == [PURGE], "nothing after deletion but the purge"
    assert kinds[-1] is PURGE
    delete = milestones[delete_at]
    block = next(m for m in milestones if m.kind is BLOCK)
    assert delete.on == deletion_day(t, d) == d + timedelta(days=t.block_days + 1)
    assert d < block.on <= delete.on
    assert block.on == block_day(t, facts)
    if facts.deferral_until is not None and facts.deferral_until + timedelta(days=1) <= delete.on:
        assert block.on >= facts.deferral_until + timedelta(days=1)
    if EXPIRE in kinds:
        assert next(m for m in milestones if m.kind is EXPIRE).offset == 1
        assert block.offset > 1
    else:
        assert block.offset == 1
    assert all(m.on < delete.on for m in milestones if m.kind in (REMINDER, WARNING))


@settings(max_examples=150, deadline=None)
@given(cycles(), st.integers(min_value=0, max_value=20))
def test_next_milestone_is_the_first_not_done(
    cycle: tuple[Terms, CycleFacts, TldRules | None], done_count: int
) -> None:
    t, facts, rules = cycle
    full = timeline(t, facts, rules)
    done = [m.key for m in full[:done_count]]
    expected = full[done_count] if done_count < len(full) else None
    assert next_milestone(t, facts, done, rules) == expected
