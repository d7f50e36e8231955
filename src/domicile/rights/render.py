"""Readable pages: the subject's data (for an access or portability request) and an act
of destruction. Every value is escaped; the pages load nothing from elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1.5em}"
    "th,td{border:1px solid #999;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#eee}code{font-size:.9em}"
)


def _page(title: str, body: list[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def access_html(package: Mapping[str, Any]) -> str:
    body = [
        "<h1>Your personal data</h1>",
        f"<p>Request <code>{escape(package['request'])}</code> ({escape(package['kind'])}),"
        f" prepared {escape(package['generated_at'])}. Each table is one record, with the"
        " country where it is kept.</p>",
    ]
    refused = package.get("refused") or []
    if not package["records"] and not refused:
        body.append("<p>We hold no personal data about you.</p>")
    for rec in package["records"]:
        body.append(
            f"<h2>{escape(rec['collection'])}: kept in {escape(rec['country'])}"
            f" (site {escape(rec['site'])})</h2>"
        )
        if rec.get("masked"):
            body.append("<p>Shown masked: only the masked form may leave its country.</p>")
        rows = [
            (f"{name} ({rec['categories'].get(name, '')})", value)
            for name, value in sorted(rec["fields"].items())
        ]
        body.append(_table(rows))
    if package.get("copies_held_at"):
        body.append("<h2>Copies</h2><ul>")
        for c in package["copies_held_at"]:
            body.append(
                f"<li>{escape(str(c['copies']))} copies at site {escape(c['site'])}"
                f" ({escape(c['country'])}), of the records above</li>"
            )
        body.append("</ul>")
    if refused:
        body.append("<h2>Records not included</h2><ul>")
        for r in refused:
            body.append(
                f"<li>a record of {escape(r['collection'])} kept in {escape(r['country'])}"
                f" (site {escape(r['site'])}): the law did not let it go where this page was"
                " prepared</li>"
            )
        body.append("</ul>")
    return _page("Your personal data", body)


def act_html(act: Mapping[str, Any]) -> str:
    a = act["act"]
    body = [
        "<h1>Act of destruction of personal data</h1>",
        _table(
            [
                ("Act", a["id"]),
                ("Controller", a["controller"]),
                ("Reason", a["reason"]),
                ("Request received", a["request_received"]),
                ("Method", a["method"]),
                ("Performed by", a["performed_by"] or ""),
                ("Performed at", a["performed_at"]),
                ("Records destroyed", a["totals"]["records"]),
                ("Subject keys destroyed", a["totals"]["keys_destroyed"]),
            ]
        ),
        "<h2>What was destroyed, where</h2>",
    ]
    for d in a["destroyed"]:
        body.append(
            _table(
                [
                    ("Information system", d["information_system"]),
                    ("Location", d["location"]),
                    ("Country", d["country"]),
                    ("Subject (opaque id at the site)", d["subject"]),
                    ("Records", d["records"]),
                    ("Collections", ", ".join(d["collections"])),
                    ("Categories of personal data", ", ".join(d["categories"])),
                    ("Key destroyed", "yes" if d["key_destroyed"] else "no"),
                    ("Copies deleted at", ", ".join(d["copies_deleted"]) or "none"),
                    ("Copies still to delete at", ", ".join(d["copies_pending"]) or "none"),
                ]
            )
        )
    body.append("<h2>Extract from the audit logs</h2>")
    rows = "".join(
        f"<tr><td>{escape(e['site'])}</td><td>{e['seq']}</td><td>{escape(e['action'])}</td>"
        f"<td>{escape(str(e['at']))}</td><td><code>{escape(e['hash'][:16])}…</code></td></tr>"
        for e in a["log_extract"]
    )
    body.append(
        "<table><tr><th>site</th><th>entry</th><th>action</th><th>at</th><th>hash</th></tr>"
        f"{rows}</table>"
    )
    body.append("<h2>Signatures</h2><ul>")
    # The act's own signatures, then each other node's signature of its part (its entries).
    signed = [("", s) for s in act["signatures"]]
    signed += [("the part (its log's entries) of ", p) for p in a.get("parts", [])]
    for what, s in signed:
        body.append(
            f"<li>{what}site {escape(s['site'])}, {escape(s['algorithm'])}, key"
            f" <code>{escape(s['public_key'])}</code>: <code>{escape(s['signature'])}</code></li>"
        )
    body.append("</ul>")
    return _page(f"Act of destruction {a['id']}", body)
