"""Discovery: find personal data in sources domicile has never seen (``domicile scan``).

The recognizers and the classifier need only python-stdnum and phonenumbers; reading
databases and files needs the ``scan`` extra (DuckDB, PyArrow, SQLAlchemy, PyMySQL), which
the modules that read import when they run.
"""

from domicile.discovery.classify import Tally, Verdict, decide, tally
from domicile.discovery.recognizers import KINDS, Kind, kinds_of
from domicile.discovery.scan import Link
from domicile.discovery.scan import scan as run_scan
from domicile.discovery.sources import open_source, require_extra
from domicile.errors import MissingExtra, SourceError, SourceUnavailable

__all__ = [
    "KINDS",
    "Kind",
    "Link",
    "MissingExtra",
    "SourceError",
    "SourceUnavailable",
    "Tally",
    "Verdict",
    "decide",
    "kinds_of",
    "open_source",
    "require_extra",
    "run_scan",
    "tally",
]
