"""Property-based tests of the published OpenAPI document (schemathesis): every check, on
positive and negative data. The server must accept what the document allows (or answer
401, 403, 404 or 409: a record that does not exist, a policy that refuses), refuse what it
does not allow, require the credentials it declares, answer nothing undocumented, and never
fail with a server error.

The document names two formats no JSON schema can check, ``phone`` (a real number of some
country) and ``identity-document`` (a number that passes its checksum). Schemathesis is
told how to make valid ones, and a positive case that holds a string its generator made
from the pattern alone gets a valid one in its place (negative cases are sent as made).
Bounded: a few examples per operation and phase, the whole run well under two minutes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from domicile.config import ServiceSettings
from domicile.deploy.starter import init
from domicile.errors import DomicileError
from domicile.http.app import create_app
from domicile.residency import SubjectEvidence, resolve
from domicile.vault import Domicile

_FOLDER = Path(tempfile.mkdtemp(prefix="domicile-schemathesis-"))
_VAULT = Domicile(init(_FOLDER))
# Schemathesis sends many unauthenticated requests from one address on purpose.
APP = create_app(_VAULT, settings=ServiceSettings(auth_failures_per_source="1000000/minute"))
_, _KEY = APP.state.service.clients.add("schemathesis", ["admin"], api_key=True)
HEADERS = {"Authorization": f"Bearer {_KEY}"}

PHONES = ["+7 495 123-45-67", "+49 30 1234567", "+1 202 555 0143", "+33142685300"]
DOCUMENTS = [
    "ru_inn:7707083893", "ru_passport:4510123456", "ru_snils:112-233-445 95",
    "in_aadhaar:234123412346", "br_cpf:390.533.447-05", "tr_identity:10000000146",
    "cn_resident_id:11010519491231002X",
]  # fmt: skip
schemathesis.openapi.format("phone", st.sampled_from(PHONES))
schemathesis.openapi.format("identity-document", st.sampled_from(DOCUMENTS))


def _usable(kind: str, value: str) -> bool:
    try:
        resolve(SubjectEvidence.from_mapping({kind: value}))
    except DomicileError:
        return False
    return True


def conform(value: Any, key: str = "") -> Any:
    """``value`` with each phone number or identity document that is not a real one
    replaced by one that is."""
    if isinstance(value, dict):
        return {k: conform(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [conform(v, key) for v in value]
    if isinstance(value, str) and key in ("phone", "document") and not _usable(key, value):
        return (PHONES if key == "phone" else DOCUMENTS)[len(value) % 4]
    return value


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)  # fmt: skip
def test_api(case: schemathesis.Case) -> None:
    if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
        case.body = conform(case.body)
    case.call_and_validate(headers=HEADERS)
