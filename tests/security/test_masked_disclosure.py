"""Finding 9 of the trust review: a masked disclosure was logged as an Art. 12 transfer with
no filing, which reads to an inspector as an unlawful transfer.

As the inspector would look, against a real ``domicile serve``: a US client reads a Russian
subject's record while no Art. 12 notice is on record (masked forms only), then after a
ban (refused), then with a notice filed (the full record). The site's audit, the transfer
ledger (``domicile transfers`` and ``/v1/transfers``) and the year-to-date counters must
show one transfer, with its filing; the masked read as a masked disclosure with the mask
applied to each field; and the refused read as a refusal, neither of the two.
"""

from __future__ import annotations

import sqlite3

from .conftest import Served

ANNA = {"full_name": "Anna Sergeevna Volkova", "email": "anna.volkova@example.ru", "city": "Kazan"}


def _ytd_subjects(served: Served, site: str, to_country: str) -> int:
    conn = sqlite3.connect(f"file:{served.data / f'{site}.sqlite'}?mode=ro", uri=True)
    try:
        (n,) = conn.execute(
            "SELECT count(*) FROM transfer_subjects WHERE to_country = ?", (to_country,)
        ).fetchone()
    finally:
        conn.close()
    return int(n)


def test_a_masked_read_is_a_masked_disclosure_not_a_transfer(served: Served) -> None:
    _, admin = served.client("ops", "admin")
    r = served.http.post(
        "/v1/collections/profiles/records",
        json={"subject": {"citizenship": "RU"}, "fields": ANNA, "purpose": "signup"},
        headers=admin,
    )
    token = r.json()["token"]
    reader, us = served.client(
        "us-app", "records:read", "site:us", "collection:profiles", "purpose:recruiting"
    )
    view = {"purpose": "recruiting"}

    # No Art. 12 notice: masked forms only.
    r = served.http.get(f"/v1/records/{token}", params=view, headers=us)
    assert (r.json()["masked"], r.json()["transfer"]) == (True, False)
    # A ban: refused.
    served.cli("filings", "add", "ru.transfer_ban.US=2025-01-01")
    assert served.http.get(f"/v1/records/{token}", params=view, headers=us).status_code == 403
    # The ban lifted and a notice filed long ago: the full record crosses, a transfer.
    served.cli("filings", "withdraw", "ru.transfer_ban.US")
    served.cli("filings", "add", "ru.art12_notice=2025-01-01")
    r = served.http.get(f"/v1/records/{token}", params=view, headers=us)
    assert (r.json()["fields"], r.json()["transfer"]) == (ANNA, True)

    # The site's audit says what each read was.
    reads = [e for e in served.audit("ru") if e.get("client") == reader]
    assert [e["action"] for e in reads] == ["disclose_masked", "refuse", "transfer"]
    masked, refused, transfer = reads
    assert masked["detail"]["masks"] == {"email": "domain", "full_name": "initials"}
    assert masked["detail"]["withheld"] == ["city"]
    assert masked["fields"] == ["email", "full_name"]
    assert (masked["detail"]["from_country"], masked["detail"]["to_country"]) == ("RU", "US")
    assert "filings" not in masked["detail"]
    assert "routes" not in masked["detail"]
    assert refused["detail"]["to_country"] == "US"
    assert transfer["detail"]["filings"] == ["ru.art12_notice"]
    assert "masked" not in transfer["detail"]

    # The ledger lists the transfer only; the masked disclosure is counted apart and listed
    # on request; the year-to-date counters count the transfer only.
    ledger = served.cli("transfers")
    assert ledger["total"] == 1
    assert [e["filings"] for e in ledger["entries"]] == [["ru.art12_notice"]]
    assert ledger["entries"][0]["client"] == reader
    assert ledger["masked_disclosures"] == {"total": 1, "by_destination": {"US": 1}}
    listed = served.cli("transfers", "--masked")["masked_disclosures"]["entries"]
    assert [(e["client"], e["masks"]) for e in listed] == [
        (reader, {"email": "domain", "full_name": "initials"})
    ]
    _, auditor = served.client("dpo", "transfers:read")
    over_http = served.http.get("/v1/transfers", params={"masked": "true"}, headers=auditor)
    assert over_http.json()["total"] == 1
    assert len(over_http.json()["masked_disclosures"]["entries"]) == 1
    assert _ytd_subjects(served, "ru", "US") == 1
