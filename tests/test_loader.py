"""Pack loading: malformed packs are refused naming file, line and field; user packs override."""

from __future__ import annotations

from pathlib import Path

import pytest

from domicile.errors import PackError
from domicile.packs import load_packs, read_pack, read_pack_file
from domicile.policy import PolicyEngine

from .conftest import PACKS, TEST_PACKS

AA = (TEST_PACKS / "aa.yaml").read_text(encoding="utf-8")


def broken(old: str, new: str) -> str:
    assert old in AA, old
    return AA.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "words"),
    [
        ("  countries: [AT]", "  countries: [ZZ]", "countries: [ZZ]", "pack.countries", "ISO 3166"),
        (
            "    mode: primary",
            "    mode: primary\n    colour: red",
            "colour: red",
            "rules[0].colour",
            "unknown field",
        ),
        (
            "    operations: [collect, store, update, retrieve]\n",
            "",
            "  - id: aa.local",
            "rules[0].operations",
            "missing",
        ),
        (
            "effective: {from: 2020-01-01}",
            "effective: {from: 2020-02-30}",
            None,
            None,
            "must exist",
        ),
        (
            "applies: {coverage: citizens}\n    mode",
            "applies: {coverage: citizen}\n    mode",
            "coverage: citizen}",
            "rules[0].applies.coverage",
            "no coverage named",
        ),
        (
            'cite: [{source: act, pinpoint: "s. 1"}]',
            "cite: [{source: acts}]",
            "source: acts",
            "rules[0].cite[0].source",
            "unknown source",
        ),
        (
            "{filed: aa.notice}}",
            "{filed: aa.notise}}",
            "filed: aa.notise",
            "rules[1].routes[0].requires.filed",
            "unknown filing",
        ),
        (
            "when: {destination_in_list: friends}",
            "when: {destination_in_list: foes}",
            "foes",
            "rules[1].routes[0].when.destination_in_list",
            "no list named",
        ),
        (
            "waives: [aa.local]",
            "waives: [aa.locale]",
            "aa.locale",
            "exemptions[0].waives[0]",
            "unknown rule",
        ),
        (
            "{citizen_of: territory}",
            "{citizen_of: territory, resident_of: AT}",
            "citizens: {when",
            "coverage.citizens.when",
            "exactly one key",
        ),
        (
            "    violation: escalate\n    duty",
            "    violation: escalate\n    interpretation: {status: contested}\n    violation: deny\n    duty",
            None,
            None,
            "",
        ),
    ],
)
def test_malformed_pack_names_file_line_and_field(
    old: str, new: str, needle: str | None, field: str | None, words: str
) -> None:
    text = broken(old, new)
    with pytest.raises(PackError) as caught:
        read_pack(text, "mine.yaml")
    err = caught.value
    assert err.file == "mine.yaml"
    assert words in str(err)
    if needle is not None:
        assert err.line == line_of(text, needle), str(err)
    if field is not None:
        assert err.field == field


def test_contested_rule_must_escalate() -> None:
    text = broken("  - id: aa.ban\n", "  - id: aa.ban\n    interpretation: {status: contested}\n")
    with pytest.raises(PackError, match="contested rule must have `violation: escalate`"):
        read_pack(text, "mine.yaml")


def test_yaml_syntax_error_names_the_line() -> None:
    text = broken("  aa.notice: {title:", "  aa.notice: {title: [")
    with pytest.raises(PackError) as caught:
        read_pack(text, "mine.yaml")
    assert caught.value.line is not None
    assert "not valid YAML" in str(caught.value)


def test_unsupported_format_and_non_mapping() -> None:
    with pytest.raises(PackError, match="format: 1"):
        read_pack(AA.replace("format: 1", "format: 2"), "mine.yaml")
    with pytest.raises(PackError, match="YAML mapping"):
        read_pack("- just\n- a list\n", "mine.yaml")


def test_missing_file_is_a_pack_error(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="no such file"):
        read_pack_file(tmp_path / "absent.yaml")


def test_category_additions_need_an_existing_parent() -> None:
    text = AA.replace("groups:", 'categories:\n  user.nonsense.thing: "x"\ngroups:', 1)
    with pytest.raises(PackError, match="must sit under an existing category"):
        read_pack(text, "mine.yaml")
    ok = AA.replace("groups:", 'categories:\n  user.contact.email.work: "work email"\ngroups:', 1)
    _, taxonomy = read_pack(ok, "mine.yaml")
    assert "user.contact.email.work" in taxonomy


def test_a_user_pack_overrides_the_built_in_one(tmp_path: Path) -> None:
    text = (PACKS / "ru.yaml").read_text(encoding="utf-8")
    text = text.replace("version: 1.1.0", "version: 9.9.9", 1)
    text = text.replace("foreign_copies: contested", "foreign_copies: transfer_rules", 1)
    mine = tmp_path / "ru-lenient.yaml"
    mine.write_text(text, encoding="utf-8")
    packs = load_packs([mine], env=False)
    assert packs.packs["ru"].overrides == "builtin:ru.yaml"
    assert packs.get("ru").pack.version == "9.9.9"
    engine = PolicyEngine(packs)
    d = engine.decide(
        engine.request(
            subject={"citizenship": "RU"}, categories="user.name", operation="store",
            site_country="DE", date="2025-09-01", facts={"replica": True},
            filings={"ru.art12_notice": "2024-01-01"},
        )
    )  # fmt: skip
    assert d.outcome.value == "allow"
    assert dict(d.packs)["ru"] == "9.9.9"


def test_packs_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aa.yaml").write_text(AA, encoding="utf-8")
    monkeypatch.setenv("DOMICILE_PACKS", str(tmp_path))
    assert "aa" in load_packs().packs
    assert "aa" not in load_packs(env=False).packs


def test_a_source_address_must_be_a_web_address(tmp_path: Path) -> None:
    """Source and regulator addresses become links in reports and the console: a
    ``javascript:`` or ``data:`` address in a pack is refused when the pack is read."""
    text = (PACKS / "ru.yaml").read_text(encoding="utf-8")
    assert 'url: "https://' in text
    for bad in ("javascript:alert(1)", "data:text/html,x", "/etc/passwd"):
        path = tmp_path / "ru.yaml"
        path.write_text(text.replace('url: "https://', f'url: "{bad}#', 1), encoding="utf-8")
        with pytest.raises(PackError, match="url"):
            read_pack_file(path)
