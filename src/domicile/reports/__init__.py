"""Reports: the database location register and the compliance report, from the audit.

``register(vault, pack=...)`` and ``compliance(vault, jurisdiction=..., since=..., until=...)``
build a JSON-ready model; ``render(model, fmt)`` turns it into JSON, HTML or PDF bytes, and
``write_report(model, folder)`` writes all three; ``report_files(vault, since=, until=)``
gives every report of a period as files (what the evidence pack includes). Reports
read only: the deployment is opened read-only and nothing is written to it.
"""

from domicile.reports.bundle import report_files
from domicile.reports.compliance import compliance
from domicile.reports.register import duties_for, register
from domicile.reports.render import FORMATS, name_of, render, require_extra, write_report

__all__ = [
    "FORMATS",
    "compliance",
    "duties_for",
    "name_of",
    "register",
    "render",
    "report_files",
    "require_extra",
    "write_report",
]
