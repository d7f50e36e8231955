"""The audit ledger: append-only, hash-chained entries per site, with signed checkpoints."""

from domicile.audit.ledger import AuditEvent, AuditLedger, VerifyReport

__all__ = ["AuditEvent", "AuditLedger", "VerifyReport"]
