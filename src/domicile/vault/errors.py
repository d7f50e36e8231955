"""Errors the vault raises beyond bad input and unavailable sites."""

from __future__ import annotations

from typing import Any

from domicile.errors import BadInput, DomicileError, ExitCode
from domicile.errors import NotFound as NotFound  # defined with the other errors


class PolicyRefused(DomicileError):
    """The decision engine did not allow the operation. Carries the decision."""

    code = "policy_refused"
    exit_code = ExitCode.REFUSED

    def __init__(
        self, message: str, *, decision: dict[str, Any] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, **({"decision": decision} if decision else {}))
        self.decision = decision


class SubjectBlocked(PolicyRefused):
    """The subject's data is under a block a subject's request placed (a restriction of
    processing, or a withdrawal of consent) and the operation is not one the block lets
    through. Names the block's kind, the request and the site, never the subject."""

    code = "subject_blocked"

    def __init__(self, message: str, *, block: dict[str, Any], hint: str | None = None) -> None:
        DomicileError.__init__(self, message, hint=hint, block=block)
        self.decision = None
        self.block = block


class InvalidToken(BadInput):
    code = "invalid_token"
