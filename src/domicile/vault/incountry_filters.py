"""The InCountry find language: the keys a filter may name, filters and find options, parsed
and checked (pure: no store is touched), and matched against a record's opened values.

A filter is a JSON object whose keys are ANDed (``shared/design/incountry-api.md``; the
public ``incountry`` SDK is the judge):

- string keys (``record_key``, ``profile_key``, ``parent_key``, ``service_key1-5``,
  ``key1-20``): a value, a non-empty list (any of), ``null`` (has no value), or
  ``{"$not": value, list or null}`` (``null``: has a value); ``key1-20`` also
  ``{"$like": "text"}`` (contains, case-insensitive);
- integer keys (``range_key1-10``, ``version``): the same, plus ``$gt``, ``$gte``, ``$lt``,
  ``$lte`` (combinable, but not ``$gt`` with ``$gte`` nor ``$lt`` with ``$lte``);
- date keys (``created_at``, ``updated_at``, ``expires_at``): the same on ISO 8601 strings;
  ``null`` and ``{"$not": null}`` only on ``expires_at`` (every record has the others);
- ``search_keys``: text contained in any of ``key1-20``, not combined with them;
- ``$or``: two or more filters over string keys, not nested.

``InCountryStorage.find`` (``vault/incountry.py``) narrows with the blind indexes where a
filter has equality conditions (``Cond.eq``), then checks the whole filter with
``Filter.matches`` on opened values.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from domicile.errors import BadInput

UTILITY_KEYS = ("record_key", "profile_key", "parent_key")
SERVICE_KEYS = tuple(f"service_key{i}" for i in range(1, 6))
SEARCH_KEYS = tuple(f"key{i}" for i in range(1, 21))
STRING_KEYS = UTILITY_KEYS + SERVICE_KEYS + SEARCH_KEYS
RANGE_KEYS = tuple(f"range_key{i}" for i in range(1, 11))
INT_KEYS = (*RANGE_KEYS, "version")
DATE_KEYS = ("created_at", "updated_at", "expires_at")
SORT_KEYS = SEARCH_KEYS + RANGE_KEYS + DATE_KEYS

# Keys a record may lack: ``null`` and ``{"$not": null}`` apply to them.
NULLABLE = frozenset((*STRING_KEYS, *INT_KEYS, "expires_at"))
RANGES = ("$gt", "$gte", "$lt", "$lte")

FIND_LIMIT = 100
SEARCH_MIN, SEARCH_MAX = 3, 200


# --- values ---------------------------------------------------------------------------------


def parse_time(value: Any, name: str) -> dt.datetime:
    """An ISO 8601 date or date-time, as an aware UTC datetime (naive means UTC)."""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be an ISO 8601 date-time string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"{name} is not an ISO 8601 date-time", hint="e.g. 2030-01-31T12:00:00+00:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is after year 9999 in UTC
        raise BadInput(
            f"{name} is outside the years 1 to 9999 in UTC", hint="e.g. 2030-01-31T12:00:00+00:00"
        ) from None


def iso(value: dt.datetime) -> str:
    """ISO 8601 in UTC with ``+00:00`` (the SDK's date parser does not read ``Z``)."""
    return value.astimezone(dt.UTC).isoformat()


def is_int(value: Any) -> bool:
    """A JSON integer: ``1``, or ``1.0`` (JSON does not tell them apart; see ``as_int``)."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def as_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) else value


# --- filters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """One key's condition; every part present must hold."""

    key: str
    eq: tuple[Any, ...] | None = None  # any of these values
    neq: tuple[Any, ...] | None = None  # none of these ($not); a missing value passes
    like: str | None = None  # contains, case-insensitive
    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    null: bool | None = None  # True: must be null; False: must not be null

    def matches(self, value: Any) -> bool:
        if self.null is True:
            return value is None
        if self.null is False and value is None:
            return False
        if self.eq is not None and value not in self.eq:
            return False
        if self.neq is not None and value in self.neq:
            return False
        if self.like is not None and (
            not isinstance(value, str) or self.like.lower() not in value.lower()
        ):
            return False
        for bound, holds in (
            (self.gt, operator.gt),
            (self.gte, operator.ge),
            (self.lt, operator.lt),
            (self.lte, operator.le),
        ):
            if bound is not None and (value is None or not holds(value, bound)):
                return False
        return True


@dataclass(frozen=True)
class Filter:
    conds: tuple[Cond, ...] = ()
    search: str | None = None  # search_keys: contained in any of key1-20
    any_of: tuple[tuple[Cond, ...], ...] = ()  # $or branches

    @property
    def keys(self) -> list[str]:
        names = {c.key for c in self.conds} | {c.key for b in self.any_of for c in b}
        if self.search is not None:
            names.add("search_keys")
        return sorted(names)

    def matches(self, get: Callable[[str], Any]) -> bool:
        if not all(c.matches(get(c.key)) for c in self.conds):
            return False
        if self.search is not None:
            needle = self.search.lower()
            if not any(needle in (v or "").lower() for v in map(get, SEARCH_KEYS)):
                return False
        return not self.any_of or any(all(c.matches(get(c.key)) for c in b) for b in self.any_of)


@dataclass(frozen=True)
class FindOptions:
    limit: int = FIND_LIMIT
    offset: int = 0
    sort: tuple[tuple[str, bool], ...] = ()  # (key, descending)


def _string_values(key: str, raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(v, str) for v in items):
        raise BadInput(f"filter {key}: give a string or a non-empty list of strings")
    return tuple(items)


def _int_values(key: str, raw: Any) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(is_int(v) for v in items):
        raise BadInput(f"filter {key}: give an integer or a non-empty list of integers")
    return tuple(as_int(v) for v in items)


def _date_values(key: str, raw: Any) -> tuple[dt.datetime, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise BadInput(f"filter {key}: give a date-time or a non-empty list of them")
    return tuple(parse_time(v, f"filter {key}") for v in items)


def _ops(key: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    if not raw:
        raise BadInput(f"filter {key}: an operator object cannot be empty")
    if any(op not in allowed for op in raw):
        raise BadInput(
            f"filter {key}: unsupported operator", hint=f"use {', '.join(sorted(allowed))}"
        )
    if "$gt" in raw and "$gte" in raw:
        raise BadInput(f"filter {key}: use $gt or $gte, not both")
    if "$lt" in raw and "$lte" in raw:
        raise BadInput(f"filter {key}: use $lt or $lte, not both")


def _not(key: str, raw: Any, values: Callable[[str, Any], tuple[Any, ...]]) -> dict[str, Any]:
    """``$not``: ``null`` means "has a value" (on every key that can lack one); a value or
    a list means "none of these" (a missing value passes)."""
    if raw is None:
        if key not in NULLABLE:
            raise BadInput(f"filter {key}: $not cannot be null", hint=f"every record has a {key}")
        return {"null": False}
    return {"neq": values(key, raw)}


def parse_cond(key: str, raw: Any) -> Cond:
    """One key's condition. Each key kind takes a value, a non-empty list (any of), ``null``
    (has no value) and an operator object: ``$not`` (a value, a list, or ``null`` for "has a
    value") everywhere, ``$like`` on ``key1-20``, the ranges on integers and dates.
    ``created_at`` and ``updated_at`` always have a value, so ``null`` is refused there."""
    if key in STRING_KEYS:
        values: Callable[[str, Any], tuple[Any, ...]] = _string_values
        allowed = {"$not", "$like"} if key in SEARCH_KEYS else {"$not"}
    elif key in INT_KEYS:
        values, allowed = _int_values, {"$not", *RANGES}
    elif key in DATE_KEYS:
        values, allowed = _date_values, {"$not", *RANGES}
    else:
        raise BadInput("unknown filter key", hint="see the InCountry find filters")
    if raw is None:
        if key not in NULLABLE:
            raise BadInput(f"filter {key}: cannot be null", hint=f"every record has a {key}")
        return Cond(key, null=True)
    if not isinstance(raw, Mapping):
        return Cond(key, eq=values(key, raw))
    _ops(key, raw, allowed)
    parts: dict[str, Any] = {}
    if "$like" in raw:
        if not isinstance(raw["$like"], str):
            raise BadInput(f"filter {key}: $like takes a string")
        parts["like"] = raw["$like"]
    for op in RANGES:
        if op not in raw:
            continue
        if key in INT_KEYS:
            if not is_int(raw[op]):
                raise BadInput(f"filter {key}: {op} takes an integer")
            parts[op[1:]] = as_int(raw[op])
        else:
            parts[op[1:]] = parse_time(raw[op], f"filter {key} {op}")
    if "$not" in raw:
        parts.update(_not(key, raw["$not"], values))
    return Cond(key, **parts)


def parse_filter(raw: Any) -> Filter:
    """The whole filter language, checked; errors name the key, never the value."""
    if raw is None:
        return Filter()
    if not isinstance(raw, Mapping):
        raise BadInput("filter must be a JSON object")
    conds: list[Cond] = []
    search: str | None = None
    branches: list[tuple[Cond, ...]] = []
    for key, value in raw.items():
        if key == "search_keys":
            if not isinstance(value, str) or not SEARCH_MIN <= len(value) <= SEARCH_MAX:
                raise BadInput(
                    f"filter search_keys takes a string of {SEARCH_MIN} to {SEARCH_MAX} characters"
                )
            search = value
        elif key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise BadInput("filter $or takes a list of two or more filters")
            for i, branch in enumerate(value):
                if not isinstance(branch, Mapping) or not branch:
                    raise BadInput(f"filter $or[{i}] must be a non-empty object")
                wrong = sorted(str(k) for k in branch if k not in STRING_KEYS)
                if wrong:
                    raise BadInput(
                        f"filter $or[{i}]: only string keys may be used in $or",
                        hint="record_key, profile_key, parent_key, service_key1-5, key1-20; $or is not nested",
                    )
                branches.append(tuple(parse_cond(k, v) for k, v in branch.items()))
        else:
            conds.append(parse_cond(str(key), value))
    if search is not None:
        if any(c.key in SEARCH_KEYS for c in conds):
            raise BadInput("filter search_keys cannot be combined with key1-20 filters")
        if branches:
            raise BadInput("filter search_keys cannot be combined with $or")
    return Filter(tuple(conds), search, tuple(branches))


def parse_options(raw: Any) -> FindOptions:
    if raw is None:
        return FindOptions()
    if not isinstance(raw, Mapping):
        raise BadInput("options must be a JSON object")
    bad = sorted(str(k) for k in raw if k not in ("limit", "offset", "sort"))
    if bad:
        raise BadInput("unknown find option", hint="the options are limit, offset and sort")
    limit = raw.get("limit", FIND_LIMIT)
    offset = raw.get("offset", 0)
    if limit is None:
        limit = FIND_LIMIT
    if not is_int(limit) or not 1 <= limit <= FIND_LIMIT:
        raise BadInput(f"options.limit must be an integer from 1 to {FIND_LIMIT}")
    if offset is None:
        offset = 0
    if not is_int(offset) or offset < 0:
        raise BadInput("options.offset must be an integer of 0 or more")
    limit, offset = as_int(limit), as_int(offset)
    sort: list[tuple[str, bool]] = []
    raw_sort = raw.get("sort") or []
    if not isinstance(raw_sort, list):
        raise BadInput("options.sort must be a list of {key: 'asc' | 'desc'}")
    for item in raw_sort:
        if not isinstance(item, Mapping) or len(item) != 1:
            raise BadInput("each options.sort item names exactly one key: {key: 'asc' | 'desc'}")
        ((key, order),) = item.items()
        if key not in SORT_KEYS:
            raise BadInput(
                "cannot sort by that key",
                hint="key1-20, range_key1-10, created_at, updated_at, expires_at",
            )
        if order not in ("asc", "desc"):
            raise BadInput(f"sort order of {key} must be 'asc' or 'desc'")
        if key not in [k for k, _ in sort]:  # a repeated key cannot change the order
            sort.append((key, order == "desc"))
    return FindOptions(limit, offset, tuple(sort))


def check_find(body: Any) -> tuple[Filter, FindOptions]:
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise BadInput("the find request is a JSON object: {filter, options}")
    if any(k not in ("filter", "options") for k in body):
        raise BadInput("unknown find request field", hint="a find request has filter and options")
    return parse_filter(body.get("filter")), parse_options(body.get("options"))
