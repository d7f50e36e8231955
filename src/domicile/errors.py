"""Every error domicile raises on purpose, in one place.

Each error says what went wrong and what to do next (``hint``). None of them may carry
plaintext personal data: messages name fields, keys and rule ids, never the values a
subject gave us. The CLI maps each family to an exit code (see ``exit_code``), from the
one table below.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Every exit code the ``domicile`` command uses, and what each means. The README's
    table is this one."""

    OK = 0  # done (``policy explain`` exits 0 for any decision, deny included)
    CHECK_FAILED = 1  # a check found a problem: audit verify, policy validate, integrity
    BAD_INPUT = 2  # bad input or usage; nothing was done
    REFUSED = 3  # refused by policy or by the client's authorization
    UNAVAILABLE = 4  # a site, database, server or service cannot be reached; nothing written
    ENVIRONMENT = 5  # this machine stands in the way: an address in use, a file that cannot
    # be read or written or has the wrong permissions, a data store newer than this code
    INTERNAL = 70  # a bug in domicile: the message says how to report it
    INTERRUPTED = 130  # stopped with Ctrl-C


class DomicileError(Exception):
    """Base class. ``code`` is a stable machine name; ``hint`` says what to do next."""

    code = "domicile_error"
    exit_code: int = ExitCode.CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class EnvironmentProblem(DomicileError):
    """This machine stands in the way: a file that cannot be read or written, a folder with
    the wrong permissions, an address in use. Nothing was done."""

    code = "environment"
    exit_code = ExitCode.ENVIRONMENT


class BadInput(DomicileError, ValueError):
    """The caller gave us something malformed; nothing was done."""

    code = "bad_input"
    exit_code = ExitCode.BAD_INPUT


class NotFound(BadInput):
    """What the request names does not exist (a record, a filing on record)."""

    code = "not_found"


class Conflict(BadInput):
    """The request cannot be done in the present state (e.g. it would change what the
    configuration file fixes)."""

    code = "conflict"


class TooLarge(BadInput):
    """A value over its size limit (an attachment, a request body)."""

    code = "body_too_large"


class UnknownCountry(BadInput):
    code = "unknown_country"


class UnknownCategory(BadInput):
    code = "unknown_category"


class InvalidEvidence(BadInput):
    """Evidence about a subject that cannot be used (bad phone number, failed checksum)."""

    code = "invalid_evidence"


class InvalidDate(BadInput):
    code = "invalid_date"


class UnknownName(BadInput):
    """A filing, basis, fact or operation name that no loaded pack knows."""

    code = "unknown_name"


class FileError(BadInput):
    """A file we read (a pack, a configuration) that cannot be used. Names the file, line
    and field."""

    code = "invalid_file"

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        if field:
            where = f"{where}: {field}"
        super().__init__(f"{where}: {message}", hint=hint, file=file, line=line, field=field)
        self.file = file
        self.line = line
        self.field = field


class PackError(FileError):
    """A jurisdiction pack that cannot be loaded."""

    code = "invalid_pack"


class ConfigError(FileError):
    """A deployment configuration that cannot be used."""

    code = "invalid_config"


class MissingExtra(DomicileError):
    """A command needs optional packages that are not installed (``hint`` names the
    extra to install)."""

    code = "missing_extra"
    exit_code = ExitCode.BAD_INPUT  # usage: install the extra, or use another command


class SourceError(BadInput):
    """A source to scan cannot be used as given (refused credentials, no such database, a
    file that cannot be read). Nothing was read or written. Names the backend, host and
    database or the file; never a user name, a password or a driver's message."""

    code = "bad_source"


class SourceUnavailable(DomicileError):
    """A source to scan does not answer. Nothing was read or written."""

    code = "source_unavailable"
    exit_code = ExitCode.UNAVAILABLE


class EngineUnavailable(DomicileError):
    """The engine a scan runs on (a Spark master) cannot be started or reached. Nothing was
    read or written."""

    code = "engine_unavailable"
    exit_code = ExitCode.UNAVAILABLE


class PeerRefused(DomicileError):
    """A node channel peer was refused at the TLS handshake: its certificate is not one
    of this deployment's node certificates, or not the node the caller meant to reach.
    ``reason`` is one of ``domicile.federation.tls.REASONS``; ``node`` is the node id the
    certificate claims, when it claims one (never proven: it is what was refused)."""

    code = "peer_refused"
    exit_code = ExitCode.REFUSED

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        node: str | None = None,
        serial: str | None = None,
        fingerprint: str | None = None,
        hint: str | None = None,
    ) -> None:
        details = {"reason": reason}
        details.update(
            {
                k: v
                for k, v in (("node", node), ("serial", serial), ("fingerprint", fingerprint))
                if v
            }
        )
        super().__init__(message, hint=hint, **details)
        self.reason = reason
        self.node = node
        self.serial = serial
        self.fingerprint = fingerprint


class BenchFailed(DomicileError):
    """A benchmark's operation did not answer as it should (an error status, or an answer
    that is not what the benchmark measures): no figures are reported for such a run. A
    503 (a site or node that cannot be reached) exits 4, anything else 1."""

    code = "bench_failed"
    exit_code = ExitCode.CHECK_FAILED

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint, **({"status": status} if status else {}))
        if status == 503:
            self.exit_code = ExitCode.UNAVAILABLE


class NodeUnavailable(DomicileError):
    """Another node did not answer (connection failures or 502/503/504 after bounded
    retries, or a timeout). Nothing was decided there; fail closed (HTTP 503)."""

    code = "node_unavailable"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, node: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, node=node)
        self.node = node


class OtherNode(DomicileError):
    """A request reached a federation node that does not hold the data it names: another
    node (``node``) holds that site, and only it may decrypt the site's data or decide
    about it. Nothing was done; send the request to that node (``endpoint``: its public
    address, where the configuration names one). HTTP 421 (Misdirected Request)."""

    code = "other_node"
    exit_code = ExitCode.BAD_INPUT  # usage: the same request, to the right node

    def __init__(
        self,
        node: str,
        message: str,
        *,
        country: str | None = None,
        endpoint: str | None = None,
        hint: str | None = None,
    ) -> None:
        details = {"node": node}
        details.update({k: v for k, v in (("country", country), ("endpoint", endpoint)) if v})
        super().__init__(message, hint=hint, **details)
        self.node = node
        self.country = country
        self.endpoint = endpoint
