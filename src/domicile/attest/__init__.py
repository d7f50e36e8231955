"""Attestation: provable statements of where a subject's data is, without showing it."""
