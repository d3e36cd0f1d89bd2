"""Calendar days in the provider's time zone, on a real or a compressed clock.

A milestone happens "on day D+n at local time t". On the real clock that is t on that calendar
day in the profile's time zone (DST-safe: a local time that does not exist is moved forward).
On a compressed clock (demo mode) a day lasts `seconds_per_day` real seconds counted from an
epoch instant, so a newcomer sees a year pass in an hour. Workflows pass the clock in their
input and read the time only through `workflow.now()`; nothing here reads the wall clock.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Clock(BaseModel):
    model_config = ConfigDict(frozen=True)

    time_zone: str = "Europe/Prague"
    seconds_per_day: int | None = Field(default=None, ge=1)
    epoch: datetime | None = None
    """Compressed clock only: the real instant at which `epoch_day` began."""
    epoch_day: date | None = None

    @model_validator(mode="after")
    def _compressed_needs_epoch(self) -> Clock:
        if self.seconds_per_day is not None and (self.epoch is None or self.epoch_day is None):
            raise ValueError("a compressed clock needs epoch and epoch_day")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def compressed(self) -> bool:
        return self.seconds_per_day is not None

    def instant(self, day: date, at: time = time(0, 0)) -> datetime:
        """The UTC instant of local time `at` on calendar day `day`."""
        if self.seconds_per_day is not None and self.epoch is not None and self.epoch_day is not None:
            fraction = (at.hour * 3600 + at.minute * 60 + at.second) / 86400
            offset = ((day - self.epoch_day).days + fraction) * self.seconds_per_day
            return self.epoch + timedelta(seconds=offset)
        local = datetime.combine(day, at, tzinfo=self.zone)
        utc = local.astimezone(UTC)
        if utc.astimezone(self.zone).replace(tzinfo=None) != local.replace(tzinfo=None):
            # A local time skipped by a DST change: the first real instant after the gap. Read
            # with the old offset (fold=0) the wall time lies after the change, with the new one
            # (fold=1) before it; the change itself, on a whole second, is found between them.
            high = math.ceil(local.replace(fold=0).timestamp())
            low = int(local.replace(fold=1).timestamp())
            after = datetime.fromtimestamp(high, self.zone).utcoffset()
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, self.zone).utcoffset() == after:
                    high = middle
                else:
                    low = middle
            utc = datetime.fromtimestamp(high, UTC)
        return utc

    def today(self, now: datetime) -> date:
        """The calendar day `now` falls on."""
        if self.seconds_per_day is not None and self.epoch is not None and self.epoch_day is not None:
            elapsed = (now - self.epoch).total_seconds()
            return self.epoch_day + timedelta(days=int(elapsed // self.seconds_per_day))
        return now.astimezone(self.zone).date()

    def local(self, now: datetime) -> datetime:
        """`now` as a local time of day (on a compressed clock, the scaled time within its day)."""
        if self.seconds_per_day is not None and self.epoch is not None and self.epoch_day is not None:
            elapsed = (now - self.epoch).total_seconds()
            whole_days, within = divmod(elapsed, self.seconds_per_day)
            day = self.epoch_day + timedelta(days=int(whole_days))
            seconds = within / self.seconds_per_day * 86400
            return datetime.combine(day, time(0), tzinfo=self.zone) + timedelta(seconds=seconds)
        return now.astimezone(self.zone)

    @classmethod
    def compressed_from(cls, now: datetime, seconds_per_day: int, time_zone: str = "Europe/Prague") -> Clock:
        """A compressed clock whose day 0 is today and began at `now`."""
        return cls(
            time_zone=time_zone,
            seconds_per_day=seconds_per_day,
            epoch=now.astimezone(UTC),
            epoch_day=now.astimezone(ZoneInfo(time_zone)).date(),
        )
