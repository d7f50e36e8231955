"""Deadlines for subjects' requests from the packs, against dates checked by hand on the
countries' calendars (Russia's and Belarus's production calendars, with their transferred days
off and working Saturdays; weekends for the EU's month periods)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import domicile.packs
from domicile.errors import PackError
from domicile.packs import load_packs, read_pack
from domicile.packs.changes import law_calendar
from domicile.rights.deadlines import KINDS, add_months, deadlines

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


# --- the deadlines researched for by, id, sa and vn (Dec 2026) ---------------------------


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        # Thu 24 Apr 2025: Fri 25, Sat 26 (a working Saturday), 28 and 29 Apr off (the day
        # moved from the 26th, Radunitsa), Wed 30, 1 May off, Fri 2 May, Mon 5 May.
        ("2025-04-24", "2025-05-05"),
        # Tue 8 Jul 2025: 9, 10, 11, Sat 12 Jul (worked for the 4th), Mon 14.
        ("2025-07-08", "2025-07-14"),
        # Wed 2 Jul 2025: 3 Jul (Independence Day) and 4 Jul (moved) off; 7-11 Jul.
        ("2025-07-02", "2025-07-11"),
    ],
)
def test_belarus_information_counts_working_days_of_its_calendar(
    received: str, expected: str
) -> None:
    assert due("by", "access", received) == (
        "by.information",
        dt.date.fromisoformat(expected),
        None,
    )


def test_belarus_changes_deletion_and_withdrawal_are_fifteen_days_from_november_2021() -> None:
    for kind, rule in (
        ("rectification", "by.changes"),
        ("erasure", "by.stop_and_delete"),
        ("withdrawal", "by.withdrawal"),
    ):
        assert due("by", kind, "2026-12-04") == (rule, dt.date(2026, 12, 19), None)
    assert deadlines(PACKS, ["by"], "access", dt.date(2021, 11, 14)) == []  # before 99-Z
    assert deadlines(PACKS, ["by"], "restriction", dt.date(2026, 12, 4)) == []  # no such right


def test_indonesia_counts_three_times_24_hours_from_october_2024() -> None:
    # 72 hours end on the third calendar day; holidays (Eid, 21-22 Mar 2026) do not stop them.
    for kind in ("access", "rectification", "restriction", "withdrawal"):
        rule, day, ext = due("id", kind, "2026-03-18")
        assert (rule, day, ext) == (f"id.{kind}", dt.date(2026, 3, 21), None)
    assert deadlines(PACKS, ["id"], "access", dt.date(2024, 10, 16)) == []  # in transition
    assert due("id", "access", "2024-10-17")[1] == dt.date(2024, 10, 20)
    assert deadlines(PACKS, ["id"], "erasure", dt.date(2026, 3, 18)) == []  # no period in law


def test_saudi_arabia_gives_thirty_days_and_thirty_more_with_notice() -> None:
    assert due("sa", "access", "2026-12-04") == (
        "sa.ir_art3", dt.date(2027, 1, 3), dt.date(2027, 2, 2),
    )  # fmt: skip
    [d] = deadlines(PACKS, ["sa"], "erasure", dt.date(2026, 12, 4))
    assert d.extension == "30 days"
    assert "in advance" in (d.extension_needs or "")
    assert any("Art. 3(1)(a)" in c for c in d.citations)
    assert deadlines(PACKS, ["sa"], "access", dt.date(2023, 9, 13)) == []  # before the PDPL
    assert (
        deadlines(PACKS, ["sa"], "withdrawal", dt.date(2026, 12, 4)) == []
    )  # "without undue delay"


def test_vietnam_72_hours_under_decree_13_then_decree_356() -> None:
    assert due("vn", "access", "2025-12-30") == ("vn.decree13_requests", dt.date(2026, 1, 2), None)
    assert due("vn", "withdrawal", "2025-12-31")[:2] == ("vn.decree13_stop", dt.date(2026, 1, 3))
    # From 1 Jan 2026: 15 days for a withdrawal or restriction, once extendable by 15.
    assert due("vn", "restriction", "2026-01-05") == (
        "vn.decree356_stop", dt.date(2026, 1, 20), dt.date(2026, 2, 4),
    )  # fmt: skip
    # Decree 356's periods for access and erasure were not read: no deadline rather than a guess.
    assert deadlines(PACKS, ["vn"], "access", dt.date(2026, 1, 5)) == []
    assert deadlines(PACKS, ["vn"], "access", dt.date(2023, 6, 30)) == []  # before Decree 13


def test_packs_without_a_deadline_say_why_in_their_notes() -> None:
    day = dt.date(2026, 12, 4)
    for pack in ("cn", "in", "kz", "ng", "uz"):
        lp = PACKS.packs[pack]
        assert lp.pack.rights == []
        assert all(deadlines(PACKS, [pack], kind, day) == [] for kind in KINDS)
        notes = [q for q in lp.pack.pack.open_questions if q.startswith("Subjects' requests")]
        assert len(notes) == 1, pack
        assert "no deadline is recorded" in notes[0], pack


def test_the_calendar_shows_vietnam_changing_its_deadlines_on_1_january_2026() -> None:
    day = dt.date(2026, 1, 1)
    changes = law_calendar(PACKS, since=day, until=day, only=["vn"])
    got = {(c.kind, c.rule, c.replaces) for c in changes if c.kind.startswith("deadline")}
    assert got == {
        ("deadline_changes", "vn.decree356_stop", "vn.decree13_stop"),
        ("deadline_ends", "vn.decree13_requests", None),
    }


def test_a_deadline_says_how_firm_the_reading_behind_it_is() -> None:
    """Russia's 10 working days are the statute's words; Vietnam's 72 hours under Decree 13
    come from a law firm's summary, and the request shows it (with the pack's note)."""
    [ru] = deadlines(PACKS, ["ru"], "access", dt.date(2026, 12, 4))
    assert ru.to_dict()["reading"] == {"status": "statutory", "note": None}
    [vn] = deadlines(PACKS, ["vn"], "access", dt.date(2025, 6, 2))
    reading = vn.to_dict()["reading"]
    assert reading["status"] == "practitioner"
    assert "not read" in reading["note"]
