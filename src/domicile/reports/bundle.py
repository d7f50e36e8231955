"""The reports of a period as files, for the evidence pack (``domicile.evidence``): the
register of every loaded law that keeps one, and the compliance report of every
jurisdiction that reaches the deployment (a law of a site's country, or a law that keeps a
register), each in every format asked for, from one read of the audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from domicile.reports.compliance import compliance
from domicile.reports.ledger import AuditView
from domicile.reports.register import duties_for, register
from domicile.reports.render import FORMATS, name_of, render
from domicile.vault.service import Domicile


def report_files(
    vault: Domicile,
    *,
    since: dt.date,
    until: dt.date,
    formats: Sequence[str] = FORMATS,
    today: dt.date | None = None,
) -> dict[str, bytes]:
    """``{"reports/register-ru.pdf": b"...", ...}``: every report of the period in each
    of ``formats``, by a path relative to the pack's root. Reads only."""
    view = AuditView.read(vault)
    duties = duties_for(vault)
    site_countries = {s.country for s in vault.config.sites}
    jurisdictions = sorted(
        {
            lp.pack.pack.jurisdiction
            for lp in vault.engine.packs
            if lp.id in duties or site_countries & set(lp.pack.pack.countries)
        }
    )
    models = [register(vault, pack=p, today=today, view=view) for p in sorted(duties)]
    models += [
        compliance(vault, jurisdiction=j, since=since, until=until, today=today, view=view)
        for j in jurisdictions
    ]
    return {f"reports/{name_of(m)}.{fmt}": render(m, fmt) for m in models for fmt in formats}
