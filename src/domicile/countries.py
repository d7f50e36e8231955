"""ISO 3166-1 alpha-2 country codes: validation and names (from pycountry)."""

from __future__ import annotations

from functools import cache

import pycountry

from domicile.errors import UnknownCountry

# Codes people type that are not ISO alpha-2, with the code they mean.
_ALIASES = {"UK": "GB", "EL": "GR"}


@cache
def _codes() -> dict[str, str]:
    return {c.alpha_2: c.name for c in pycountry.countries}


def country(code: str, *, what: str = "country") -> str:
    """Return ``code`` as an upper-case ISO alpha-2 code, or raise ``UnknownCountry``.

    The error never repeats what was given: a country is often evidence about a person
    (a citizenship, a residence), and errors carry no values."""
    cc = code.strip().upper() if isinstance(code, str) else ""
    codes = _codes()
    if cc in codes:
        return cc
    raise UnknownCountry(
        f"{what} is not an ISO 3166-1 alpha-2 code",
        hint="give two letters such as RU, DE or US (GB for the United Kingdom, GR for Greece)",
    )


def is_country(code: str) -> bool:
    return code in _codes()


def country_name(code: str) -> str:
    return _codes().get(code, code)
