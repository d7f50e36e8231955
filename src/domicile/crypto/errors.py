"""Crypto errors. None of them carries key material or plaintext."""

from __future__ import annotations

from domicile.errors import DomicileError, ExitCode


class KeyringError(DomicileError):
    """The keyring cannot be used (missing, unreadable, too open, corrupt)."""

    code = "keyring_error"
    exit_code = ExitCode.ENVIRONMENT


class DecryptionFailed(DomicileError):
    """A ciphertext did not authenticate: wrong key, or moved from its place."""

    code = "decryption_failed"
    exit_code = ExitCode.CHECK_FAILED


class KeyDestroyed(DomicileError):
    """The subject's data key no longer exists: the subject was erased."""

    code = "key_destroyed"
    exit_code = ExitCode.CHECK_FAILED
