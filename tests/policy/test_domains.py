"""SPEC §3.8 (domain renewal periods) and §4 (registry rules by TLD) as plain tables and properties."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activities.registrar import renewed_expiry
from policy.catalog import CatalogError, TldRules, load_catalog
from policy.domains import (
    RegistryState,
    RenewalPath,
    add_years,
    check_domain_renewal,
    max_renewal_years,
    registry_state_on,
    renewal_path_on,
    state_days,
)
from policy.timeline import CycleFacts, MilestoneKind, timeline

PROFILE = load_catalog().profile("default")
TODAY = date(2026, 11, 22)
S = RegistryState


def rules(domain_name: str) -> TldRules:
    return PROFILE.tld_rules(domain_name)


# --- renewal periods (SPEC §3.8) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_on", "years"),
    [
        (TODAY + timedelta(days=30), 1),  # the ordinary yearly renewal, invoiced 30 days ahead
        (TODAY, 10),  # expiring today: 10 years from today is exactly the cap
        (TODAY - timedelta(days=35), 10),  # expired (outzone): renewed from D, never from today
        (add_years(TODAY, 9), 1),  # expires in exactly 9 years: still renewable by one year
        (add_years(TODAY, 5), 5),
        (TODAY + timedelta(days=30), 9),  # D-30: nine years fit under the cap, ten would not
    ],
)
def test_allowed_renewals(expires_on: date, years: int) -> None:
    check_domain_renewal(expires_on, TODAY, years)


@pytest.mark.parametrize(
    ("expires_on", "years", "reason"),
    [
        (TODAY, 0, "1 to 10 years, not 0"),
        (TODAY, 11, "1 to 10 years, not 11"),
        (TODAY, -1, "1 to 10 years, not -1"),
        (
            add_years(TODAY, 9) + timedelta(days=1),
            1,
            "expires on 2035-11-23, more than 9 years ahead: it can be renewed from 2026-11-23",
        ),
        (
            TODAY + timedelta(days=30),
            10,
            "more than 10 years ahead of 2026-11-22 (until 2036-11-22); at most 9 years now",
        ),
        (add_years(TODAY, 8), 3, "at most 2 years now"),
        (add_years(TODAY, 9), 2, "at most 1 year now"),
    ],
)
def test_refused_renewals_say_why(expires_on: date, years: int, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_domain_renewal(expires_on, TODAY, years)
    assert reason in str(caught.value)


@pytest.mark.parametrize("years", [True, 1.0, "1"])
def test_years_must_be_a_whole_number(years: object) -> None:
    with pytest.raises(ValueError, match="whole number of years"):
        check_domain_renewal(TODAY, TODAY, years)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("day", "years", "expected"),
    [
        (date(2027, 3, 10), 1, date(2028, 3, 10)),
        (date(2028, 2, 29), 1, date(2029, 2, 28)),  # no 29 February: the registry's 28th
        (date(2028, 2, 29), 4, date(2032, 2, 29)),
        (date(2027, 2, 28), 1, date(2028, 2, 28)),  # a registry does not move to the month's end
        (date(2027, 3, 10), -9, date(2018, 3, 10)),
    ],
)
def test_add_years_like_a_registry(day: date, years: int, expected: date) -> None:
    assert add_years(day, years) == expected


days = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))


@given(day=days, years=st.integers(min_value=1, max_value=10))
def test_add_years_matches_the_registrar_adapter(day: date, years: int) -> None:
    assert add_years(day, years) == renewed_expiry(day, years)


@given(expires_on=days, today=days, years=st.integers(min_value=-3, max_value=14))
def test_allowed_exactly_when_within_periods_and_the_ten_year_cap(
    expires_on: date, today: date, years: int
) -> None:
    allowed = 1 <= years <= 10 and add_years(expires_on, years) <= add_years(today, 10)
    try:
        check_domain_renewal(expires_on, today, years)
    except ValueError as exc:
        assert not allowed, exc
        assert str(exc)
    else:
        assert allowed


@given(expires_on=days, today=days)
def test_renewable_at_all_only_while_it_expires_in_nine_years_or_less(expires_on: date, today: date) -> None:
    longest = max_renewal_years(expires_on, today)
    assert (longest >= 1) == (expires_on <= add_years(today, 9))
    if longest:
        check_domain_renewal(expires_on, today, longest)
    if longest < 10:
        with pytest.raises(ValueError):
            check_domain_renewal(expires_on, today, longest + 1)


@given(expires_on=days, today=days, later=st.integers(min_value=0, max_value=4000))
def test_a_renewal_allowed_today_stays_allowed_later(expires_on: date, today: date, later: int) -> None:
    """So an invoice checked when it is issued needs no second check when it is paid."""
    longest = max_renewal_years(expires_on, today)
    if longest:
        check_domain_renewal(expires_on, today + timedelta(days=later), longest)


# --- registry rules by TLD (SPEC §4) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("domain_name", "expected"),
    [
        # .cz: works through D+30, out of the zone D+31, released D+61.
        ("example.cz", [(S.EXPIRED, 1), (S.OUTZONE, 31), (S.RELEASED, 61)]),
        # .sk: protective period (not working) from D+1, deleted D+41.
        ("example.sk", [(S.OUTZONE, 1), (S.RELEASED, 41)]),
        # .eu: quarantine from D itself, released after the 40-day quarantine.
        ("example.eu", [(S.QUARANTINE, 0), (S.RELEASED, 40)]),
        # gTLDs: out of the zone D+1, redemption D+31, released D+61.
        ("example.com", [(S.OUTZONE, 1), (S.REDEMPTION, 31), (S.RELEASED, 61)]),
        ("example.org", [(S.OUTZONE, 1), (S.REDEMPTION, 31), (S.RELEASED, 61)]),
        ("example.shop", [(S.OUTZONE, 1), (S.REDEMPTION, 31), (S.RELEASED, 61)]),
    ],
)
def test_state_days_per_tld(domain_name: str, expected: list[tuple[RegistryState, int]]) -> None:
    assert state_days(rules(domain_name)) == expected


D = date(2027, 6, 30)
A, E, O, R, Q, X = S.ACTIVE, S.EXPIRED, S.OUTZONE, S.REDEMPTION, S.QUARANTINE, S.RELEASED
RENEW, RESTORE, NONE = RenewalPath.RENEW, RenewalPath.PAID_RESTORE, RenewalPath.NONE


@pytest.mark.parametrize(
    ("domain_name", "offset", "state", "path"),
    [
        ("example.cz", -1, A, RENEW),
        ("example.cz", 0, A, RENEW),
        ("example.cz", 1, E, RENEW),
        ("example.cz", 30, E, RENEW),
        ("example.cz", 31, O, RENEW),
        ("example.cz", 60, O, RENEW),  # renewable by the original invoice through D+60
        ("example.cz", 61, X, NONE),
        ("example.sk", 0, A, RENEW),
        ("example.sk", 1, O, RENEW),
        ("example.sk", 40, O, RENEW),  # renewable through D+40
        ("example.sk", 41, X, NONE),
        ("example.eu", -1, A, RENEW),
        ("example.eu", 0, Q, RESTORE),  # quarantine from D itself: paid release only
        ("example.eu", 39, Q, RESTORE),
        ("example.eu", 40, X, NONE),
        ("example.com", 0, A, RENEW),
        ("example.com", 1, O, RENEW),
        ("example.com", 30, O, RENEW),  # original conditions through D+30
        ("example.com", 31, R, RESTORE),  # redemption: paid restore only
        ("example.com", 60, R, RESTORE),
        ("example.com", 61, X, NONE),
    ],
)
def test_state_and_renewal_path_on_each_day(
    domain_name: str, offset: int, state: RegistryState, path: RenewalPath
) -> None:
    day = D + timedelta(days=offset)
    assert registry_state_on(rules(domain_name), D, day) is state
    assert renewal_path_on(rules(domain_name), D, day) is path


@pytest.mark.parametrize("tld", ["cz", "sk", "eu", "gtld"])
def test_state_days_are_the_timelines_days(tld: str) -> None:
    """The registry's days here and the workflow's milestones (policy.timeline) never drift apart."""
    tld_rules = PROFILE.tlds[tld]
    milestones = timeline(PROFILE.terms("domain"), CycleFacts(expires_on=D), tld_rules)
    kind_to_state = {
        MilestoneKind.EXPIRE: S.EXPIRED,
        MilestoneKind.ZONE_REMOVE: S.OUTZONE,
        MilestoneKind.REDEMPTION: S.REDEMPTION,
        MilestoneKind.QUARANTINE: S.QUARANTINE,
        MilestoneKind.RELEASE: S.RELEASED,
    }
    from_timeline = [(kind_to_state[m.kind], m.offset) for m in milestones if m.kind in kind_to_state]
    assert from_timeline == state_days(tld_rules)


@given(tld=st.sampled_from(["cz", "sk", "eu", "gtld"]), offset=st.integers(min_value=-400, max_value=400))
def test_states_only_move_forward(tld: str, offset: int) -> None:
    order = list(RegistryState)
    tld_rules = PROFILE.tlds[tld]
    today = registry_state_on(tld_rules, D, D + timedelta(days=offset))
    tomorrow = registry_state_on(tld_rules, D, D + timedelta(days=offset + 1))
    assert order.index(tomorrow) >= order.index(today)


def test_a_tld_without_rules_is_refused_by_name() -> None:
    with pytest.raises(CatalogError, match=r"TLD \.de of 'example\.de' has no registry rules; known: "):
        rules("example.de")
