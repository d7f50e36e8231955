"""Subjects' requests (access, rectification, erasure, restriction, withdrawal of consent,
portability) with the deadlines the packs set, fulfilled at every site."""

from domicile.rights.blocks import lift
from domicile.rights.deadlines import KINDS, Deadline, deadlines
from domicile.rights.fulfil import fulfil
from domicile.rights.service import (
    CHANNELS,
    OUTCOMES,
    VERIFIED_HOW,
    close,
    extend,
    list_requests,
    open_request,
    show,
)

__all__ = [
    "CHANNELS",
    "KINDS",
    "OUTCOMES",
    "VERIFIED_HOW",
    "Deadline",
    "close",
    "deadlines",
    "extend",
    "fulfil",
    "lift",
    "list_requests",
    "open_request",
    "show",
]
