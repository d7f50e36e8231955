"""domicile: keeps each person's personal data where the law demands it, and proves it."""

from domicile._version import __version__
from domicile.errors import BadInput, DomicileError, PackError
from domicile.packs import Operation, Outcome, PackSet, load_packs
from domicile.policy import Decision, PolicyEngine, Request
from domicile.residency import Residency, SubjectEvidence, resolve

__all__ = [
    "BadInput",
    "Decision",
    "DomicileError",
    "Operation",
    "Outcome",
    "PackError",
    "PackSet",
    "PolicyEngine",
    "Request",
    "Residency",
    "SubjectEvidence",
    "__version__",
    "load_packs",
    "resolve",
]
