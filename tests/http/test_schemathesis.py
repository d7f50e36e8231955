"""Property-based tests of the published OpenAPI document (schemathesis, bounded examples):
no server errors, and every answer as documented."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from domicile.http.app import create_app
from domicile.starter import init
from domicile.vault import Domicile

_FOLDER = Path(tempfile.mkdtemp(prefix="domicile-schemathesis-"))
_VAULT = Domicile(init(_FOLDER))
APP = create_app(_VAULT)
_, _KEY = APP.state.service.clients.add("schemathesis", ["admin"], api_key=True)
HEADERS = {"Authorization": f"Bearer {_KEY}", "x-env-id": "default"}  # x-env-id: InCountry API

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)  # fmt: skip
def test_api(case: schemathesis.Case) -> None:
    # No server errors and answers as documented. Schema-valid requests that name records
    # or tokens that do not exist are rightly refused, so "positive data acceptance" is off.
    case.call_and_validate(headers=HEADERS, excluded_checks=[positive_data_acceptance])
