"""Jurisdiction packs: laws as data."""

from domicile.packs.loader import LoadedPack, PackSet, load_packs, read_pack, read_pack_file
from domicile.packs.model import FlowKind, Operation, Outcome, Pack

__all__ = [
    "FlowKind",
    "LoadedPack",
    "Operation",
    "Outcome",
    "Pack",
    "PackSet",
    "load_packs",
    "read_pack",
    "read_pack_file",
]
