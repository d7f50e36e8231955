"""Masked forms of values, for reads that a pack refuses in full but lets through masked."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from domicile.categories import is_under


def mask(method: str, value: Any) -> Any:
    """The masked form of ``value``; ``None`` when the method withholds it."""
    text = str(value)
    if method == "initials":
        parts = [p for p in re.split(r"[\s\-]+", text) if p]
        return " ".join(f"{p[0].upper()}." for p in parts) or None
    if method == "domain":
        _, at, domain = text.rpartition("@")
        return f"*@{domain}" if at and domain else None
    if method == "last4":
        digits = text[-4:]
        return "*" * max(len(text) - 4, 0) + digits
    if method == "year":
        match = re.match(r"^(\d{4})", text)
        return match.group(1) if match else None
    return None


def method_for(category: str, masks: Mapping[str, str]) -> str | None:
    """The mask of ``category``: the one named for it, or for its nearest ancestor."""
    best: tuple[int, str] | None = None
    for key, method in masks.items():
        if is_under(category, key) and (best is None or len(key) > best[0]):
            best = (len(key), method)
    return best[1] if best else None


def masked_fields(
    fields: Mapping[str, Any], categories: Mapping[str, str], masks: Mapping[str, str]
) -> dict[str, Any]:
    """Only what the masks let through: each field in its masked form, or left out."""
    out = {}
    for name, value in fields.items():
        method = method_for(categories[name], masks)
        shown = mask(method, value) if method else None
        if shown is not None:
            out[name] = shown
    return out


def mask_methods(
    shown: Iterable[str], categories: Mapping[str, str], masks: Mapping[str, str]
) -> dict[str, str]:
    """The mask applied to each field shown (for the audit of a masked disclosure)."""
    out = {}
    for name in shown:
        method = method_for(categories[name], masks)
        if method is not None:
            out[name] = method
    return out
