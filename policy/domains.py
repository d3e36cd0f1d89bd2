"""Domain rules as pure functions: how long a domain may be renewed for, and its registry state.

SPEC §3.8: domains renew for 1 to 10 years, never more than 10 years paid ahead, so a domain is
renewable only while it expires in 9 years or less. SPEC §4: after the expiry date D a domain
follows its registry's rules (`TldRules`, chosen by TLD from the catalog). A workflow's update
validator calls `check_domain_renewal` so the customer is told *why* a renewal is refused, and
tests and the workflow read a domain's state on a given day from `registry_state_on`.

Years are added the way registries add them (`add_years`): 29 February falls back to the 28th.
There are no coupons here on purpose: discounts never apply to domain renewals (SPEC §3.11).
"""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum

from policy.catalog import TldRules

MIN_RENEWAL_YEARS = 1
MAX_RENEWAL_YEARS = 10
MAX_YEARS_PAID_AHEAD = 10
RENEWABLE_WITHIN_YEARS = MAX_YEARS_PAID_AHEAD - MIN_RENEWAL_YEARS
"""A domain can be renewed only while it expires in this many years or less (SPEC §3.8)."""


class RegistryState(StrEnum):
    """What the registry does with a domain on a given day; the names match `ServiceState`."""

    ACTIVE = "active"
    EXPIRED = "expired"
    """Past D, unpaid, still in the zone (.cz D+1..D+30)."""
    OUTZONE = "outzone"
    """Out of the DNS zone, still renewable by the original invoice (.cz D+31, .sk/gTLD D+1)."""
    REDEMPTION = "redemption"
    QUARANTINE = "quarantine"
    RELEASED = "released"


class RenewalPath(StrEnum):
    """How a payment can bring the domain back on a given day."""

    RENEW = "renew"
    """The original renewal invoice renews it (curExpDate renew at the registry)."""
    PAID_RESTORE = "paid_restore"
    """Only a paid restore (redemption/quarantine) followed by a renew."""
    NONE = "none"
    """Nothing: released, or between the last renewable day and a paid-restore period."""


def add_years(day: date, years: int) -> date:
    """`day` moved by whole years as a registry does (RFC 5731 renew): 29 February → 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def max_renewal_years(expires_on: date, today: date) -> int:
    """The longest renewal allowed `today` (0 when the domain is paid too far ahead to renew)."""
    cap = add_years(today, MAX_YEARS_PAID_AHEAD)
    allowed = [y for y in range(MIN_RENEWAL_YEARS, MAX_RENEWAL_YEARS + 1) if add_years(expires_on, y) <= cap]
    return max(allowed, default=0)


def check_domain_renewal(expires_on: date, today: date, years: int) -> None:
    """Refuse a renewal SPEC §3.8 forbids, with a reason a customer can act on; None when allowed.

    Renewal extends from the current expiry date (SPEC §3.1), expired or not, so the cap is on
    the new expiry date: at most 10 years after `today`.
    """
    if isinstance(years, bool) or not isinstance(years, int):
        raise ValueError(f"a renewal period is a whole number of years, got {years!r}")
    if not MIN_RENEWAL_YEARS <= years <= MAX_RENEWAL_YEARS:
        raise ValueError(
            f"a domain is renewed for {MIN_RENEWAL_YEARS} to {MAX_RENEWAL_YEARS} years, not {years}"
        )
    renewable_from = add_years(expires_on, -RENEWABLE_WITHIN_YEARS)
    if today < renewable_from:
        raise ValueError(
            f"the domain expires on {expires_on}, more than {RENEWABLE_WITHIN_YEARS} years ahead: "
            f"it can be renewed from {renewable_from}"
        )
    new_expiry = add_years(expires_on, years)
    cap = add_years(today, MAX_YEARS_PAID_AHEAD)
    if new_expiry > cap:
        longest = max_renewal_years(expires_on, today)
        raise ValueError(
            f"renewing for {years} years would pay until {new_expiry}, more than "
            f"{MAX_YEARS_PAID_AHEAD} years ahead of {today} (until {cap}); "
            f"at most {longest} year{'s' if longest != 1 else ''} now"
        )


def _first_day_of(rules: TldRules) -> list[tuple[RegistryState, int]]:
    days: list[tuple[RegistryState, int]] = []
    if rules.zone_remove_day is not None:
        days.append((RegistryState.OUTZONE, rules.zone_remove_day))
    if rules.redemption_day is not None:
        days.append((RegistryState.REDEMPTION, rules.redemption_day))
    if rules.quarantine_day is not None:
        days.append((RegistryState.QUARANTINE, rules.quarantine_day))
    days.append((RegistryState.RELEASED, rules.release_day))
    first_change = min(day for _, day in days)
    if first_change > 1:
        days.append((RegistryState.EXPIRED, 1))
    return sorted(days, key=lambda item: item[1])


def state_days(rules: TldRules) -> list[tuple[RegistryState, int]]:
    """Each state an unpaid domain passes through after D with its first day (offset from D).

    >>> state_days(TldRules(tld="cz", registry="FRED", zone_remove_day=31,
    ...                     renewable_until_day=60, release_day=61))  # doctest: +NORMALIZE_WHITESPACE
    [(<RegistryState.EXPIRED: 'expired'>, 1), (<RegistryState.OUTZONE: 'outzone'>, 31),
     (<RegistryState.RELEASED: 'released'>, 61)]
    """
    return _first_day_of(rules)


def registry_state_on(rules: TldRules, expires_on: date, day: date) -> RegistryState:
    """The state of a domain that expires on `expires_on` (D) and stays unpaid, on calendar `day`."""
    offset = (day - expires_on).days
    state = RegistryState.ACTIVE
    for candidate, first in _first_day_of(rules):
        if offset >= first:
            state = candidate
    return state


def renewal_path_on(rules: TldRules, expires_on: date, day: date) -> RenewalPath:
    """What a payment on `day` can still do for an unpaid domain expiring on `expires_on`."""
    state = registry_state_on(rules, expires_on, day)
    if state is RegistryState.RELEASED:
        return RenewalPath.NONE
    if state in (RegistryState.REDEMPTION, RegistryState.QUARANTINE):
        return RenewalPath.PAID_RESTORE
    last = rules.renewable_until_day
    if last is None or day <= expires_on + timedelta(days=last):
        return RenewalPath.RENEW
    return RenewalPath.NONE
