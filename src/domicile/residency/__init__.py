"""Residency: which countries a subject is connected to, and how sure we are."""

from domicile.residency.documents import DOCUMENTS, DocumentType
from domicile.residency.resolver import (
    EVIDENCE_KEYS,
    Finding,
    Residency,
    SubjectEvidence,
    TriSet,
    resolve,
)

__all__ = [
    "DOCUMENTS",
    "EVIDENCE_KEYS",
    "DocumentType",
    "Finding",
    "Residency",
    "SubjectEvidence",
    "TriSet",
    "resolve",
]
