"""Finding 10, continued: every parser that takes outside input, fuzzed.

The InCountry filter language (``parse_filter``, ``parse_options``), its record checker
(``check_record``) and date parser; subject evidence and its resolution; the pack loader;
the record-token decoder (``vault/tokens.py``); the access-token reader and bearer lookup
(``http/security.py``); and the sealed-blob decoder with the field cipher. Each gets
structured and random inputs from hypothesis, biased towards the shapes it expects, and may
only answer or raise a typed ``DomicileError``: never an IndexError, OverflowError,
struct.error, TypeError or the like. Bounded: a few hundred examples each, the whole file in
well under a minute."""

from __future__ import annotations

import base64
import contextlib
import string
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domicile.clients import ClientRegistry
from domicile.crypto.envelope import FieldCipher, new_data_key, record_context
from domicile.errors import DomicileError
from domicile.http.security import TokenIssuer, bearer_principal
from domicile.packs.loader import read_pack
from domicile.residency import SubjectEvidence, resolve
from domicile.stores.base import pack_fields, unpack_fields
from domicile.vault.incountry import WRITABLE, check_record
from domicile.vault.incountry_filters import (
    DATE_KEYS,
    INT_KEYS,
    STRING_KEYS,
    parse_filter,
    parse_options,
    parse_time,
)
from domicile.vault.tokens import TokenCodec

FUZZ = settings(
    max_examples=400, deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip

OPERATORS = ["$not", "$like", "$gt", "$gte", "$lt", "$lte", "$or", "search_keys"]
KEYS = st.sampled_from([*STRING_KEYS, *INT_KEYS, *DATE_KEYS, *WRITABLE, *OPERATORS]) | st.text(
    max_size=12
)
EDGE_TIMES = [
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59+00:00",
    "2030-02-30T00:00:00", "2030-01-01T24:00:00", "2030-01-01", "2030-01-01T00:00:00Z",
    "+002030-01-01", "", "T", "9999-12-31T23:59:59.999999-00:01",
]  # fmt: skip
TIMES = (
    st.sampled_from(EDGE_TIMES)
    | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | st.from_regex(r"\A\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:\d{2}|Z)?)?\Z")
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | TIMES
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=16,
)


def only_typed(call: Callable[[], Any]) -> None:
    """Run ``call``: an answer or a typed error is fine; anything else fails the test."""
    with contextlib.suppress(DomicileError):
        call()


@FUZZ
@given(JSON)
def test_the_filter_language(raw: Any) -> None:
    only_typed(lambda: parse_filter(raw))
    only_typed(lambda: parse_options(raw))


@FUZZ
@given(st.dictionaries(KEYS, JSON, max_size=6))
def test_filters_shaped_like_filters(raw: dict[str, Any]) -> None:
    only_typed(lambda: parse_filter(raw))
    only_typed(lambda: parse_filter({"$or": [raw, raw]}))
    only_typed(lambda: parse_options({"sort": [raw], "limit": raw.get("limit")}))


@FUZZ
@given(st.dictionaries(KEYS, SCALARS, max_size=8), JSON)
def test_records(raw: dict[str, Any], anything: Any) -> None:
    only_typed(lambda: check_record({"record_key": "k", **raw}))
    only_typed(lambda: check_record(anything))


@FUZZ
@given(TIMES | st.text(max_size=40) | JSON)
def test_dates(raw: Any) -> None:
    only_typed(lambda: parse_time(raw, "t"))


EVIDENCE_KEYS = st.sampled_from(
    ["citizenship", "residence", "located_at_collection", "phone", "ip", "document"]
)
EVIDENCE_VALUES = (
    st.text(max_size=30)
    | st.from_regex(r"\A\+\d{1,15}\Z")
    | st.sampled_from(["RU", "ru,de", "UK", "ru_inn:7707083893", "in_pan:", "::1", "1.2.3.4"])
    | st.lists(st.text(max_size=5), max_size=3)
)


@FUZZ
@given(st.dictionaries(EVIDENCE_KEYS | st.text(max_size=8), EVIDENCE_VALUES, max_size=5))
def test_subject_evidence(raw: dict[str, Any]) -> None:
    only_typed(lambda: resolve(SubjectEvidence.from_mapping(raw)))


RU_PACK = resources.files("domicile.packs").joinpath("data/ru.yaml").read_text(encoding="utf-8")
RU_LINES = RU_PACK.splitlines()


@settings(FUZZ, max_examples=60)
@given(
    st.lists(st.integers(0, len(RU_LINES) - 1), max_size=4),
    st.lists(st.tuples(st.integers(0, len(RU_PACK) - 1), st.sampled_from(":-[]{}'\"\n #&*!|>")), max_size=4),
)  # fmt: skip
def test_the_pack_loader_on_damaged_packs(drop: list[int], edits: list[tuple[int, str]]) -> None:
    text = "\n".join(line for i, line in enumerate(RU_LINES) if i not in set(drop))
    for at, char in edits:
        at = min(at, len(text))
        text = text[:at] + char + text[at + 1 :]
    only_typed(lambda: read_pack(text, "fuzzed.yaml"))


@settings(FUZZ, max_examples=100)
@given(st.text(max_size=200) | JSON.map(repr))
def test_the_pack_loader_on_anything(text: str) -> None:
    only_typed(lambda: read_pack(text, "fuzzed.yaml"))


CODEC = TokenCodec(b"k" * 32)
GOOD_TOKEN = CODEC.issue("ru", "0" * 32)


def mutate(token: str) -> st.SearchStrategy[str]:
    alphabet = string.ascii_letters + string.digits + "-_=.+/\x00é"
    return st.lists(
        st.tuples(st.integers(0, len(token)), st.sampled_from(alphabet)), max_size=4
    ).map(lambda edits: _apply(token, edits))


def _apply(token: str, edits: list[tuple[int, str]]) -> str:
    for at, char in edits:
        token = token[:at] + char + token[at + 1 :]
    return token


@FUZZ
@given(mutate(GOOD_TOKEN) | st.text(max_size=80).map(lambda t: "dom1_" + t) | st.text() | JSON)
def test_record_tokens(token: Any) -> None:
    only_typed(lambda: CODEC.read(token))


def test_a_short_token_body_that_decrypts_is_refused() -> None:
    """A token sealing fewer bytes than it claims (made with the real key)."""
    import secrets

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    for plain in (b"", b"\x05ru"):
        sealed = nonce + AESGCM(b"k" * 32).encrypt(nonce, plain, b"domicile/token/v1")
        token = "dom1_" + base64.urlsafe_b64encode(sealed).decode().rstrip("=")
        only_typed(lambda t=token: CODEC.read(t))  # type: ignore[misc]


ISSUER = TokenIssuer(b"m" * 32, "default")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ClientRegistry:
    path: Path = tmp_path_factory.mktemp("clients") / "clients.json"
    reg = ClientRegistry(path)
    reg.add("fuzz", ["sites:read"], api_key=True)
    return reg


def _access_tokens() -> st.SearchStrategy[str]:
    from domicile.clients import Client

    good, _ = ISSUER.issue(Client("dc_fuzz", "fuzz", frozenset({"admin"})))
    parts = st.text(string.ascii_letters + string.digits + "-_=", max_size=40)
    return (
        mutate(good)
        | st.tuples(parts, parts).map(lambda p: f"dat1.{p[0]}.{p[1]}")
        | st.text(max_size=100)
        | st.binary(max_size=60).map(lambda b: "dat1." + base64.urlsafe_b64encode(b).decode())
    )


@FUZZ
@given(_access_tokens())
def test_access_tokens_and_bearer_values(registry: ClientRegistry, token: str) -> None:
    assert ISSUER.read(token) is None or token.startswith("dat1.")
    bearer_principal(ISSUER, registry, token)  # never raises: None, or a client


CIPHER = FieldCipher(new_data_key())
PREFIX = record_context("ru", "profiles", "r1")
GOOD_BLOB = pack_fields(
    {n: CIPHER.seal(v, PREFIX + n.encode()) for n, v in {"a": b"x", "email": b"y" * 40}.items()}
)


@FUZZ
@given(
    st.binary(max_size=200)
    | st.lists(st.tuples(st.integers(0, len(GOOD_BLOB)), st.binary(min_size=1, max_size=3)), max_size=4)
    .map(lambda edits: _splice(GOOD_BLOB, edits))
)  # fmt: skip
def test_sealed_blobs(blob: bytes) -> None:
    def open_all() -> None:
        for name, sealed in unpack_fields(blob).items():
            CIPHER.open(sealed, PREFIX + name.encode())

    only_typed(open_all)


def _splice(blob: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    for at, piece in edits:
        blob = blob[:at] + piece + blob[at + len(piece) :]
    return blob
