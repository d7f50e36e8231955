from __future__ import annotations

import datetime as dt

from domicile.packs.calendar import WorkingCalendar
from domicile.packs.model import Calendar

D = dt.date


def test_russian_calendar_knows_holidays_and_working_saturdays() -> None:
    cal = WorkingCalendar(Calendar(holidays_of="RU"))
    assert not cal.is_working_day(D(2025, 1, 3))  # New Year holidays
    assert not cal.is_working_day(D(2025, 11, 4))  # Unity Day
    assert not cal.is_working_day(D(2025, 11, 3))  # substituted day off
    assert cal.is_working_day(D(2025, 11, 1))  # a Saturday made a working day
    assert cal.is_working_day(D(2025, 11, 5))


def test_weekends_only_calendar() -> None:
    cal = WorkingCalendar(Calendar())
    # Friday 5 Sep 2025 + 10 working days = Friday 19 Sep; allowed from Saturday 20 Sep.
    assert cal.add_working_days(D(2025, 9, 5), 10) == D(2025, 9, 19)
    assert cal.earliest_after(D(2025, 9, 5), working_days=10, days=None) == D(2025, 9, 20)
    assert cal.earliest_after(D(2025, 9, 5), working_days=None, days=60) == D(2025, 11, 5)


def test_pack_additions_override_the_library() -> None:
    cal = WorkingCalendar(
        Calendar(
            holidays_of="RU", extra_holidays=[D(2025, 9, 10)], extra_working_days=[D(2025, 9, 13)]
        )
    )
    assert not cal.is_working_day(D(2025, 9, 10))
    assert cal.is_working_day(D(2025, 9, 13))


def test_other_weekends() -> None:
    cal = WorkingCalendar(Calendar(weekend=["fri", "sat"]))
    assert not cal.is_working_day(D(2025, 9, 5))  # Friday
    assert cal.is_working_day(D(2025, 9, 7))  # Sunday
