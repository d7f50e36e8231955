"""Reports: the database location register and the compliance report, from the audit.

``register(vault, pack=...)`` and ``compliance(vault, jurisdiction=..., since=..., until=...)``
build a JSON-ready model; ``render(model, fmt)`` turns it into JSON, HTML or PDF bytes, and
``write_report(model, folder)`` writes all three (what the evidence pack includes). Reports
read only: the deployment is opened read-only and nothing is written to it.
"""

from domicile.reports.compliance import compliance
from domicile.reports.register import DUTIES, register
from domicile.reports.render import FORMATS, render, require_extra, write_report

__all__ = ["DUTIES", "FORMATS", "compliance", "register", "render", "require_extra", "write_report"]
