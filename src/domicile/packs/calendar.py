"""Working days, for waiting periods such as Russia's ten working days after an Art. 12 notice.

A pack's calendar names a country whose public holidays (and working weekends, such as
Russia's transferred Saturdays) come from the ``holidays`` library, plus dates of its own.
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property

import holidays

from domicile.packs.model import Calendar

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WorkingCalendar:
    def __init__(self, spec: Calendar) -> None:
        self.spec = spec
        self._weekend = frozenset(_WEEKDAYS.index(d) for d in spec.weekend)
        self._extra_holidays = frozenset(spec.extra_holidays)
        self._extra_working = frozenset(spec.extra_working_days)

    @cached_property
    def _holidays(self) -> holidays.HolidayBase | None:
        if self.spec.holidays_of is None:
            return None
        return holidays.country_holidays(self.spec.holidays_of)

    def is_working_day(self, day: dt.date) -> bool:
        if day in self._extra_working:
            return True
        if day in self._extra_holidays:
            return False
        table = self._holidays
        if table is not None:
            is_holiday = day in table  # also loads the year's working weekends
            if day in getattr(table, "weekend_workdays", ()):
                return True
            if is_holiday:
                return False
        return day.weekday() not in self._weekend

    def add_working_days(self, start: dt.date, count: int) -> dt.date:
        """The ``count``-th working day after ``start`` (``start`` itself not counted)."""
        day = start
        remaining = count
        while remaining:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                remaining -= 1
        return day

    def earliest_after(
        self, filed: dt.date, *, working_days: int | None, days: int | None
    ) -> dt.date:
        """The first date on which a period that started with a filing has run out."""
        if working_days is not None:
            return self.add_working_days(filed, working_days) + dt.timedelta(days=1)
        assert days is not None
        return filed + dt.timedelta(days=days + 1)
