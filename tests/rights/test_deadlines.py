"""Deadlines for subjects' requests from the packs, against dates checked by hand on the
countries' calendars (Russia's production calendar, with its transferred days off and
working Saturday; weekends for the EU's month periods)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import domicile.packs
from domicile.errors import PackError
from domicile.packs import load_packs, read_pack
from domicile.rights.deadlines import add_months, deadlines

PACKS = load_packs(env=False)
DATA = Path(domicile.packs.__file__).parent / "data"


def builtin_text(pack: str) -> str:
    return (DATA / f"{pack}.yaml").read_text(encoding="utf-8")


def due(pack: str, kind: str, received: str) -> tuple[str, dt.date, dt.date | None]:
    [d] = deadlines(PACKS, [pack], kind, dt.date.fromisoformat(received))
    return d.rule, d.due, d.extended_due


@pytest.mark.parametrize(
    ("received", "expected", "extended"),
    [
        # Fri 26 Dec 2025: 29, 30 Dec; 31 Dec and 1-11 Jan are days off; then 12-16, 19-21.
        ("2025-12-26", "2026-01-21", "2026-01-28"),
        # Mon 28 Apr 2025: 29, 30 Apr; 1-4 and 8-11 May off; 5-7, 12-16 May.
        ("2025-04-28", "2025-05-16", "2025-05-23"),
        # Thu 30 Oct 2025: 31 Oct, Sat 1 Nov is a working day, 3-4 Nov off, 5-7, 10-14 Nov.
        ("2025-10-30", "2025-11-14", "2025-11-21"),
        # An ordinary fortnight.
        ("2026-12-04", "2026-12-18", "2026-12-25"),
    ],
)
def test_russia_access_counts_working_days_of_its_calendar(
    received: str, expected: str, extended: str
) -> None:
    rule, day, ext = due("ru", "access", received)
    assert rule == "ru.access_2022"
    assert (day.isoformat(), ext and ext.isoformat()) == (expected, extended)


def test_russia_before_the_2022_amendment_gave_30_days_without_extension() -> None:
    assert due("ru", "access", "2022-08-20") == (
        "ru.access_before_2022",
        dt.date(2022, 9, 19),
        None,
    )
    assert due("ru", "access", "2022-09-01")[0] == "ru.access_2022"


def test_russia_rectification_is_seven_working_days() -> None:
    # Mon 28 Apr 2025: 29, 30 Apr, 5, 6, 7, 12, 13 May.
    assert due("ru", "rectification", "2025-04-28")[1] == dt.date(2025, 5, 13)


def test_gdpr_month_ends_on_the_same_date_or_the_next_working_day() -> None:
    assert due("eu", "access", "2025-05-23")[1:] == (dt.date(2025, 6, 23), dt.date(2025, 8, 25))
    # 31 Jan: February has no 31st, so 28 Feb 2026, a Saturday: Monday 2 March.
    assert due("eu", "erasure", "2026-01-31")[1] == dt.date(2026, 3, 2)
    assert deadlines(PACKS, ["eu"], "access", dt.date(2018, 5, 24)) == []  # before the GDPR


def test_brazil_switzerland_and_turkey_count_calendar_days() -> None:
    assert due("br", "access", "2026-12-04")[1] == dt.date(2026, 12, 19)
    assert due("ch", "access", "2026-12-04")[1] == dt.date(2027, 1, 3)
    assert due("ch", "access", "2023-08-31")[0] == "ch.access_before_2023"
    assert due("tr", "erasure", "2026-12-04")[1] == dt.date(2027, 1, 3)


def test_the_earliest_deadline_binds_and_kinds_without_one_are_left_out() -> None:
    found = deadlines(PACKS, ["eu", "ru", "tr", "br"], "rectification", dt.date(2025, 4, 28))
    assert [(d.pack, d.due.isoformat()) for d in found] == [
        ("ru", "2025-05-13"), ("eu", "2025-05-28"), ("tr", "2025-05-28"),
    ]  # fmt: skip
    assert "Art. 20(3)" in found[0].citations[0]
    assert deadlines(PACKS, ["br"], "erasure", dt.date(2025, 4, 28)) == []


def test_add_months_keeps_the_date_or_takes_the_month_end() -> None:
    assert add_months(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2025, 11, 30), 3) == dt.date(2026, 2, 28)
    assert add_months(dt.date(2025, 12, 15), 1) == dt.date(2026, 1, 15)


_EXTRA = """
  - id: ru.again
    kinds: [access]
    answer_within: {days: 3}
    says: "overlaps the 2022 access rule"
    cite: [{source: fz152_art20}]
"""


def test_a_pack_with_two_deadlines_for_one_day_is_refused() -> None:
    text = builtin_text("ru") + _EXTRA
    with pytest.raises(PackError, match="both set the deadline"):
        read_pack(text, "mine.yaml")


_WITHDRAWAL = """
  - id: eu.withdrawal
    kinds: [withdrawal]
    answer_within: {days: 3}
    says: "a made-up deadline"
    cite: [{source: gdpr}]
"""


def test_a_deadline_citing_an_unknown_source_or_extension_without_terms_is_refused() -> None:
    eu = builtin_text("eu")
    pack, _ = read_pack(eu + _WITHDRAWAL, "mine.yaml")  # well cited, it loads
    assert [r.id for r in pack.rights] == ["eu.art12_3", "eu.withdrawal"]
    with pytest.raises(PackError, match="unknown source"):
        read_pack(eu + _WITHDRAWAL.replace("source: gdpr", "source: nowhere"), "mine.yaml")
    lonely = _WITHDRAWAL.replace("{days: 3}", "{days: 3}\n    extension: {days: 5}")
    with pytest.raises(PackError, match="extension_needs"):
        read_pack(eu + lonely, "mine.yaml")
