"""Optional capabilities: which extra brings which packages, and the one check that a
command needing one makes before it imports them.

The core (``pip install domicile``) runs the vault, the policy engine and the service.
Each extra of ``pyproject.toml`` (but ``dev``) is listed here with the modules it provides;
``tests/test_packaging.py`` checks that a plain install lacks none but these, and that
installing the extra brings them.
"""

from __future__ import annotations

import importlib

from domicile.errors import MissingExtra

EXTRAS: dict[str, tuple[str, ...]] = {
    # the ORM with encrypted columns that `bench vault` measures against
    "bench": ("sqlalchemy", "sqlalchemy_utils"),
    # `scan` and `bench scan`: databases through SQLAlchemy (PyMySQL for MariaDB/MySQL),
    # files through DuckDB and PyArrow
    "scan": ("duckdb", "pyarrow", "sqlalchemy", "pymysql"),
    # `report --format html|pdf`: the template, the charts, the PDF (which also needs the
    # system's pango: scripts/report-deps)
    "reports": ("jinja2", "matplotlib", "weasyprint"),
    # the web console (`serve`, /console) and the offline Swagger UI of /docs
    "console": ("jinja2", "fastapi_offline"),
    # nodes over mutual TLS: the node channel (httpx over HTTP/2) and the node server
    "federation": ("httpx", "h2", "hypercorn"),
    # a site's keys in a PKCS#11 token (an HSM): key_provider kind pkcs11
    "hsm": ("pkcs11",),
    # a site's keys in HashiCorp Vault Transit: key_provider kind transit
    "kms": ("hvac",),
    # `scan --engine spark`: the scan's full pass as a Spark job (mapInArrow needs PyArrow
    # and pandas; Spark itself needs a Java 17 runtime)
    "spark": ("pyspark", "pyarrow", "pandas"),
}


def require(extra: str, what: str) -> None:
    """Return if every module of ``extra`` imports; otherwise ``MissingExtra`` in one line
    naming the extra (exit 2): ``what`` needs it."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtra(
                f"{what} needs the '{extra}' extra",
                hint=f"pip install 'domicile[{extra}]'",
            ) from None
