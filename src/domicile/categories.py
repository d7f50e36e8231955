"""Data categories: fideslang's taxonomy keys, plus the finer keys some laws need.

A category is a dotted key such as ``user.contact.email``. A rule that names a category
matches that key and every key below it, so a rule on ``user.government_id`` covers
``user.government_id.national_identification_number.ru_snils``.

Packs may add keys (always under an existing parent); ``Taxonomy.extended`` returns a new
taxonomy with them, so the built-in one is never changed in place.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from domicile.errors import UnknownCategory

# Keys domicile adds beneath fideslang's, each with a short label. They are needed by the
# shipped packs (Russian identity numbers, payment-system data under India's RBI rules).
DOMICILE_CATEGORIES: dict[str, str] = {
    "user.government_id.national_identification_number.ru_inn": "Russian taxpayer number (INN)",
    "user.government_id.national_identification_number.ru_snils": (
        "Russian individual insurance account number (SNILS)"
    ),
    "user.government_id.passport_number.ru_internal": "Russian internal passport",
    "user.government_id.passport_number.ru_international": "Russian international passport",
    "user.government_id.national_identification_number.cn_resident_id": (
        "Chinese resident identity card number"
    ),
    "user.government_id.national_identification_number.in_aadhaar": "Indian Aadhaar number",
    "user.payment.transaction": "Payment transaction details (payer, payee, amount, time)",
    "user.payment.credentials": "Payment credentials (card data, tokens, PINs)",
}


def is_under(key: str, ancestor: str) -> bool:
    """True when ``key`` is ``ancestor`` or one of its descendants."""
    return key == ancestor or key.startswith(ancestor + ".")


@dataclass(frozen=True)
class Taxonomy:
    """A closed set of category keys with their labels."""

    labels: Mapping[str, str] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.labels

    def keys(self) -> list[str]:
        return sorted(self.labels)

    def label(self, key: str) -> str:
        return self.labels[key]

    def parent(self, key: str) -> str | None:
        head, _, _ = key.rpartition(".")
        return head or None

    def check(self, key: str) -> str:
        """Return ``key`` if known, else raise ``UnknownCategory`` with the nearest keys."""
        key = key.strip()
        if key in self.labels:
            return key
        near = difflib.get_close_matches(key, self.labels, n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(near)}?"
            if near
            else "run `domicile policy categories` for the list"
        )
        raise UnknownCategory("unknown data category", hint=hint)

    def extended(self, additions: Mapping[str, str]) -> Taxonomy:
        """A new taxonomy with ``additions``; each key's parent must already exist."""
        labels = dict(self.labels)
        # Parents first, so a pack may add a chain of new keys in any order.
        for key in sorted(additions, key=lambda k: k.count(".")):
            parent = self.parent(key)
            if parent is None or parent not in labels:
                raise UnknownCategory(
                    f"category {key!r} must sit under an existing category",
                    hint=f"add its parent {parent!r} first, or choose a fideslang key",
                )
            labels[key] = additions[key]
        return Taxonomy(labels)

    def descendants(self, key: str) -> Iterable[str]:
        return (k for k in self.labels if is_under(k, key))


@cache
def default_taxonomy() -> Taxonomy:
    """fideslang's data categories and domicile's additions."""
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    labels = {c.fides_key: c.name or c.fides_key for c in DEFAULT_TAXONOMY.data_category}
    return Taxonomy(labels).extended(DOMICILE_CATEGORIES)
