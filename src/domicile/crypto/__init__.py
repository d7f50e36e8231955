"""Cryptography for the vault, built only on pyca/cryptography.

- ``keys``: key providers (a local keyring file by default; the protocol admits a KMS);
- ``envelope``: per-subject data keys, wrapped by per-site key-encryption keys, and
  AES-256-GCM field encryption bound to its place by associated data;
- ``blind``: keyed blind indexes (HMAC-SHA256) for equality search;
- ``signing``: Ed25519 signatures for audit checkpoints.
"""
