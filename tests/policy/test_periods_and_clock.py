"""Calendar arithmetic of periods (SPEC §3.1, §3.8) and the real and compressed clocks."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policy.clock import Clock
from policy.periods import Period, add_months, add_period, parse_period

PRAGUE = ZoneInfo("Europe/Prague")


def is_month_end(day: date) -> bool:
    return day.day == calendar.monthrange(day.year, day.month)[1]


# ----------------------------------------------------------------------------- parse_period


@pytest.mark.parametrize(
    ("text", "years", "months"),
    [
        ("P1Y", 1, 0),
        ("P1M", 0, 1),
        ("P10Y", 10, 0),
        ("P1Y6M", 1, 6),
        ("p2y", 2, 0),
        (" P3M ", 0, 3),
        ("P120M", 0, 120),
    ],
)
def test_parse_period(text: str, years: int, months: int) -> None:
    period = parse_period(text)
    assert period == Period(years=years, months=months)
    assert str(period) == text.strip().upper()


@pytest.mark.parametrize(
    "text", ["", "P", "1Y", "P1D", "P1W", "P-1Y", "P1.5Y", "P0Y", "P0M", "P11Y", "P121M", "PT1H"]
)
def test_parse_period_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="period must be"):
        parse_period(text)


def test_period_properties() -> None:
    assert parse_period("P1M").is_monthly
    assert not parse_period("P1Y").is_monthly
    assert parse_period("P2Y3M").total_months == 27


# ----------------------------------------------------------------------------- add_months / add_period


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (date(2027, 1, 31), 1, date(2027, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2027, 1, 30), 1, date(2027, 2, 28)),
        (date(2027, 3, 31), -1, date(2027, 2, 28)),
        (date(2027, 12, 15), 1, date(2028, 1, 15)),
        (date(2027, 1, 15), -1, date(2026, 12, 15)),
        (date(2027, 5, 31), 13, date(2028, 6, 30)),
    ],
)
def test_add_months_clamps_to_month_end(start: date, months: int, end: date) -> None:
    assert add_months(start, months) == end


@pytest.mark.parametrize(
    ("start", "period", "end"),
    [
        (date(2027, 1, 31), "P1M", date(2027, 2, 28)),
        (date(2028, 1, 31), "P1M", date(2028, 2, 29)),
        (date(2027, 2, 28), "P1M", date(2027, 3, 31)),  # month-end stays month-end
        (date(2028, 2, 29), "P1M", date(2028, 3, 31)),
        (date(2027, 4, 30), "P1M", date(2027, 5, 31)),
        (date(2028, 2, 28), "P1M", date(2028, 3, 28)),  # Feb 28 in a leap year is not month-end
        (date(2028, 2, 29), "P1Y", date(2029, 2, 28)),
        (date(2027, 2, 28), "P1Y", date(2028, 2, 29)),  # month-end: no day lost in the leap year
        (date(2028, 2, 29), "P4Y", date(2032, 2, 29)),
        (date(2027, 6, 15), "P1Y", date(2028, 6, 15)),
        (date(2027, 6, 15), "P10Y", date(2037, 6, 15)),
        (date(2027, 12, 31), "P1M", date(2028, 1, 31)),
        (date(2027, 8, 30), "P1M", date(2027, 9, 30)),
        (date(2027, 8, 30), "P6M", date(2028, 2, 29)),
    ],
)
def test_add_period(start: date, period: str, end: date) -> None:
    assert add_period(start, period) == end
    assert add_period(start, parse_period(period)) == end


def test_add_period_times() -> None:
    assert add_period(date(2027, 1, 31), "P1M", times=3) == date(2027, 4, 30)
    assert add_period(date(2027, 6, 15), "P1Y", times=2) == date(2029, 6, 15)


def test_renewal_from_d_not_from_payment_day() -> None:
    """SPEC §3.1: the new D depends only on the old D, so paying early or late changes nothing."""
    d = date(2027, 6, 30)
    assert add_period(d, "P1Y") == date(2028, 6, 30)


DAYS = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31))
PERIODS = st.sampled_from(["P1M", "P2M", "P3M", "P6M", "P1Y", "P1Y1M", "P2Y", "P5Y", "P10Y"])


@settings(max_examples=300, deadline=None)
@given(DAYS, DAYS, PERIODS)
def test_add_period_is_monotonic(a: date, b: date, period: str) -> None:
    first, second = sorted((a, b))
    assert add_period(first, period) <= add_period(second, period)
    assert add_period(first, period) > first


@settings(max_examples=300, deadline=None)
@given(DAYS, PERIODS)
def test_add_period_keeps_the_day(day: date, period: str) -> None:
    moved = add_period(day, period)
    months = parse_period(period).total_months
    assert (moved.year * 12 + moved.month) - (day.year * 12 + day.month) == months
    if is_month_end(day):
        assert is_month_end(moved)
    else:
        last = calendar.monthrange(moved.year, moved.month)[1]
        assert moved.day == min(day.day, last)


@settings(max_examples=200, deadline=None)
@given(DAYS, st.integers(min_value=1, max_value=24))
def test_monthly_renewals_never_drift(day: date, n: int) -> None:
    """n renewals of a month equal one renewal of n months from a month-end or a day <= 27.

    (The 28th and 29th are excluded on purpose: renewing from D alone, Jan 28 -> Feb 28 is a
    month-end in a common year and so continues Mar 31.)
    """
    assume(day.day <= 27 or is_month_end(day))
    step = day
    for _ in range(n):
        step = add_period(step, "P1M")
    assert step == add_period(day, "P1M", times=n)


# ----------------------------------------------------------------------------- the real clock


def test_midnight_maps_to_the_local_calendar_day_every_day_for_years() -> None:
    clock = Clock()
    day = date(2024, 1, 1)
    while day <= date(2031, 12, 31):
        at = clock.instant(day)
        assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
        assert clock.today(at) == day
        assert clock.today(at - timedelta(microseconds=1)) == day - timedelta(days=1)
        assert clock.local(at).replace(tzinfo=None) == datetime.combine(day, time(0))
        day += timedelta(days=1)


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [
        (date(2027, 3, 27), 23),  # the day before: still CET (UTC+1) at midnight
        (date(2027, 3, 28), 23),  # spring forward at 02:00, midnight is still CET
        (date(2027, 3, 29), 22),  # CEST (UTC+2)
        (date(2027, 10, 30), 22),
        (date(2027, 10, 31), 22),  # fall back at 03:00, midnight is still CEST
        (date(2027, 11, 1), 23),
    ],
)
def test_prague_midnight_around_dst(day: date, utc_hour: int) -> None:
    at = Clock().instant(day)
    assert at == datetime.combine(day - timedelta(days=1), time(utc_hour), tzinfo=UTC)


def test_spring_forward_day_is_23_hours_and_fall_back_day_25() -> None:
    clock = Clock()
    assert clock.instant(date(2027, 3, 29)) - clock.instant(date(2027, 3, 28)) == timedelta(hours=23)
    assert clock.instant(date(2027, 11, 1)) - clock.instant(date(2027, 10, 31)) == timedelta(hours=25)


def test_nonexistent_local_time_moves_to_the_first_instant_after_the_gap() -> None:
    clock = Clock()
    at = clock.instant(date(2027, 3, 28), time(2, 30))
    assert at == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 03:00 CEST
    local = clock.local(at)
    assert (local.date(), local.time()) == (date(2027, 3, 28), time(3, 0))
    assert clock.today(at) == date(2027, 3, 28)
    before = clock.instant(date(2027, 3, 28), time(1, 59))
    assert before < at
    assert clock.local(at - timedelta(seconds=1)).time() < time(2, 0)


def test_ambiguous_local_time_is_the_first_occurrence() -> None:
    clock = Clock()
    at = clock.instant(date(2027, 10, 31), time(2, 30))
    assert at == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first of the two
    assert clock.local(at).time() == time(2, 30)


ZONES = [
    "Europe/Prague",
    "Europe/Bucharest",
    "America/New_York",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.dates(min_value=date(1995, 1, 1), max_value=date(2060, 12, 31)),
    st.times().map(lambda t: t.replace(microsecond=0)),
)
def test_instant_is_the_local_time_or_the_first_instant_after_a_gap(
    zone_name: str, day: date, at: time
) -> None:
    clock = Clock(time_zone=zone_name)
    zone = ZoneInfo(zone_name)
    wall = datetime.combine(day, at)
    instant = clock.instant(day, at)
    local = instant.astimezone(zone).replace(tzinfo=None)
    if datetime.combine(day, at, tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        assert local == wall
    else:  # skipped by a DST change
        assert local > wall
        assert (instant - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None) < wall
    assert clock.today(instant) == day


def skipped_local_times(zone_name: str, years: range) -> list[tuple[date, time]]:
    """Every local quarter-hour that a DST change skips in `zone_name` during `years`."""
    zone = ZoneInfo(zone_name)
    found = []
    day = date(years.start, 1, 1)
    while day.year < years.stop:
        if (
            datetime.combine(day, time(0), tzinfo=zone).utcoffset()
            != datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).utcoffset()
        ):
            for minutes in range(0, 24 * 60, 15):
                at = time(minutes // 60, minutes % 60)
                wall = datetime.combine(day, at, tzinfo=zone)
                if wall.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall.replace(tzinfo=None):
                    found.append((day, at))
        day += timedelta(days=1)
    return found


@pytest.mark.parametrize("zone_name", ZONES)
def test_every_skipped_local_time_maps_to_the_end_of_its_gap(zone_name: str) -> None:
    clock = Clock(time_zone=zone_name)
    zone = ZoneInfo(zone_name)
    gaps = skipped_local_times(zone_name, range(2020, 2036))
    if zone_name == "Asia/Kolkata":
        assert gaps == []
    else:
        assert len(gaps) >= 16
    for day, at in gaps:
        instant = clock.instant(day, at)
        wall = datetime.combine(day, at)
        assert instant.astimezone(zone).replace(tzinfo=None) > wall, (day, at)
        just_before = (instant - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
        assert just_before < wall, (zone_name, day, at, instant)
        assert clock.today(instant) == day


def test_today_reads_the_zone_not_utc() -> None:
    clock = Clock()
    late = datetime(2027, 6, 30, 22, 30, tzinfo=UTC)  # 00:30 CEST on 1 July
    assert clock.today(late) == date(2027, 7, 1)
    assert Clock(time_zone="UTC").today(late) == date(2027, 6, 30)
    assert not clock.compressed


# ----------------------------------------------------------------------------- the compressed clock

EPOCH = datetime(2027, 6, 1, 12, 0, 7, tzinfo=UTC)
EPOCH_DAY = date(2027, 6, 1)


def compressed(seconds_per_day: int = 10) -> Clock:
    return Clock(seconds_per_day=seconds_per_day, epoch=EPOCH, epoch_day=EPOCH_DAY)


def test_compressed_clock_needs_an_epoch() -> None:
    with pytest.raises(ValidationError, match="needs epoch and epoch_day"):
        Clock(seconds_per_day=10)
    with pytest.raises(ValidationError):
        Clock(seconds_per_day=0, epoch=EPOCH, epoch_day=EPOCH_DAY)


def test_compressed_day_length() -> None:
    clock = compressed(10)
    assert clock.compressed
    assert clock.instant(EPOCH_DAY) == EPOCH
    assert clock.instant(EPOCH_DAY + timedelta(days=1)) - clock.instant(EPOCH_DAY) == timedelta(seconds=10)
    assert clock.instant(EPOCH_DAY + timedelta(days=365)) == EPOCH + timedelta(seconds=3650)
    assert clock.instant(EPOCH_DAY, time(12)) == EPOCH + timedelta(seconds=5)
    # DST days are as long as any other on a compressed clock
    assert clock.instant(date(2027, 10, 31)) - clock.instant(date(2027, 10, 30)) == timedelta(seconds=10)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=86400),
    st.integers(min_value=-3000, max_value=3000),
    st.times().map(lambda t: t.replace(microsecond=0)),
)
def test_compressed_round_trip(seconds_per_day: int, days: int, at: time) -> None:
    clock = compressed(seconds_per_day)
    day = EPOCH_DAY + timedelta(days=days)
    start = clock.instant(day)
    assert start == EPOCH + timedelta(seconds=days * seconds_per_day)
    assert clock.today(start) == day
    assert clock.today(clock.instant(day, at)) == day
    assert clock.today(start - timedelta(microseconds=1)) == day - timedelta(days=1)
    assert clock.instant(day + timedelta(days=1)) - start == timedelta(seconds=seconds_per_day)
    local = clock.local(start)
    assert (local.date(), local.time()) == (day, time(0))
    assert clock.local(clock.instant(day, at)).date() == day


def test_compressed_local_time_of_day() -> None:
    clock = compressed(24)  # one real second is one local hour
    assert clock.local(EPOCH + timedelta(seconds=30)) == datetime(
        2027, 6, 2, 6, tzinfo=ZoneInfo("Europe/Prague")
    )


def test_compressed_from_now() -> None:
    now = datetime(2027, 6, 30, 22, 30, tzinfo=UTC)  # already 1 July in Prague
    clock = Clock.compressed_from(now, seconds_per_day=60)
    assert clock.epoch == now
    assert clock.epoch_day == date(2027, 7, 1)
    assert clock.today(now) == date(2027, 7, 1)
    assert clock.today(now + timedelta(minutes=10)) == date(2027, 7, 11)
    assert clock.instant(date(2027, 7, 2)) == now + timedelta(seconds=60)
