"""Loading packs: YAML to validated ``Pack`` models, with errors that name file, line, field.

Built-in packs ship in ``domicile/packs/data``. A user adds or overrides packs with files
(``--pack FILE`` on the CLI, ``DOMICILE_PACKS`` in the environment, or the SDK): a user
pack whose ``pack.id`` equals a built-in one replaces it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from domicile.categories import Taxonomy, default_taxonomy
from domicile.errors import DomicileError, FileError, PackError
from domicile.packs.model import (
    FILING_PATTERN,
    Cite,
    FactDecl,
    Pack,
    Predicate,
    Route,
)
from domicile.packs.vocabulary import CORE_BASES, CORE_FACTS
from domicile.yamlfile import Loc, YamlSource


def _validate(source: YamlSource, data: Any) -> Pack:
    if not isinstance(data, dict):
        raise PackError(
            "a pack is a YAML mapping with `format`, `pack`, `sources`, `coverage` and `rules`",
            file=source.name,
            line=1,
        )
    if data.get("format") != 1:
        raise source.error(
            ("format",),
            f"unsupported pack format {data.get('format')!r}",
            hint="this version of domicile reads `format: 1`",
        )
    return source.validate(Pack, data)


# --- references inside a pack ---------------------------------------------------------------


def _walk_predicates(pred: Predicate, loc: Loc) -> Iterator[tuple[Predicate, Loc]]:
    yield pred, loc
    if pred.all is not None:
        for i, p in enumerate(pred.all):
            yield from _walk_predicates(p, (*loc, "all", i))
    if pred.any is not None:
        for i, p in enumerate(pred.any):
            yield from _walk_predicates(p, (*loc, "any", i))
    if pred.not_ is not None:
        yield from _walk_predicates(pred.not_, (*loc, "not"))


def _predicates(pack: Pack) -> Iterator[tuple[Predicate, Loc]]:
    for name, cov in pack.coverage.items():
        yield from _walk_predicates(cov.when, ("coverage", name, "when"))
    for i, ex in enumerate(pack.exemptions):
        yield from _walk_predicates(ex.when, ("exemptions", i, "when"))
    for i, rule in enumerate(pack.rules):
        yield from _walk_predicates(rule.applies, ("rules", i, "applies"))
        if rule.kind == "transfer":
            for j, route in enumerate(rule.routes):
                yield from _walk_predicates(route.when, ("rules", i, "routes", j, "when"))
                yield from _walk_predicates(route.requires, ("rules", i, "routes", j, "requires"))
        if rule.kind == "obligation" and rule.met_when is not None:
            yield from _walk_predicates(rule.met_when, ("rules", i, "met_when"))


def _cites(pack: Pack) -> Iterator[tuple[Cite, Loc]]:
    def each(cites: list[Cite], loc: Loc) -> Iterator[tuple[Cite, Loc]]:
        for i, c in enumerate(cites):
            yield c, (*loc, "cite", i, "source")

    for name, cov in pack.coverage.items():
        yield from each(cov.cite, ("coverage", name))
    for i, ex in enumerate(pack.exemptions):
        yield from each(ex.cite, ("exemptions", i))
    for i, rule in enumerate(pack.rules):
        yield from each(rule.cite, ("rules", i))
        if rule.kind == "transfer":
            routes: list[Route] = rule.routes
            for j, route in enumerate(routes):
                yield from each(route.cite, ("rules", i, "routes", j))
    for name, filing in pack.filings.items():
        yield from each(filing.cite, ("filings", name))
    for name, basis in pack.bases.items():
        yield from each(basis.cite, ("bases", name))
    for i, pen in enumerate(pack.penalties):
        yield from each(pen.cite, ("penalties", i))
    for i, deadline in enumerate(pack.rights):
        yield from each(deadline.cite, ("rights", i))
    for i, restricts in enumerate(pack.restriction):
        yield from each(restricts.cite, ("restriction", i))


def filing_matches(pattern: str, name: str) -> bool:
    if pattern.endswith(".{country}"):
        head = pattern.removesuffix("{country}")
        return name.startswith(head) and len(name) == len(head) + 2 and name[-2:].isupper()
    return pattern == name


def _check_references(source: YamlSource, pack: Pack, base: Taxonomy) -> Taxonomy:
    def fail(loc: Loc, msg: str, hint: str | None = None) -> FileError:
        return source.error(loc, msg, hint)

    try:
        taxonomy = base.extended(pack.categories)
    except DomicileError as exc:
        raise fail(("categories",), exc.message, exc.hint) from None

    source_ids = [s.id for s in pack.sources]
    for i, sid in enumerate(source_ids):
        if sid in source_ids[:i]:
            raise fail(("sources", i, "id"), f"source id {sid!r} is used twice")
    for cite, loc in _cites(pack):
        if cite.source not in source_ids:
            raise fail(loc, f"cites unknown source {cite.source!r}", "add it under `sources`")
    for name, lst in pack.lists.items():
        if lst.source not in source_ids:
            raise fail(("lists", name, "source"), f"cites unknown source {lst.source!r}")

    if pack.pack.covers not in pack.coverage:
        raise fail(("pack", "covers"), f"no coverage named {pack.pack.covers!r}")

    for name in pack.filings:
        if not FILING_PATTERN.match(name):
            raise fail(
                ("filings", name),
                f"filing name {name!r} is malformed",
                "use dotted lower-case words, optionally ending in .{country}",
            )

    def known_category(key: str) -> bool:
        return key in taxonomy or key in pack.groups

    for gname, keys in pack.groups.items():
        for j, key in enumerate(keys):
            if key not in taxonomy:
                raise fail(("groups", gname, j), f"unknown data category {key!r}")

    for key in pack.masks:
        if not known_category(key):
            raise fail(("masks", key), f"unknown data category {key!r}")
    for i, rule in enumerate(pack.rules):
        if rule.masked_when_refused and not pack.masks:
            raise fail(
                ("rules", i, "masked_when_refused"),
                "the rule allows masked disclosures but the pack defines no `masks`",
            )

    rule_ids = [r.id for r in pack.rules]
    evidence_ids = {e.id for e in pack.evidence}
    penalty_ids = {p.id for p in pack.penalties}
    for i, rule in enumerate(pack.rules):
        if rule.id in rule_ids[:i]:
            raise fail(("rules", i, "id"), f"rule id {rule.id!r} is used twice")
        for j, key in enumerate(rule.categories):
            if not known_category(key):
                raise fail(("rules", i, "categories", j), f"unknown data category {key!r}")
        for j, ev in enumerate(rule.evidence):
            if ev not in evidence_ids:
                raise fail(("rules", i, "evidence", j), f"unknown evidence id {ev!r}")
        for j, pen in enumerate(rule.penalties):
            if pen not in penalty_ids:
                raise fail(("rules", i, "penalties", j), f"unknown penalty id {pen!r}")
    for i, ex in enumerate(pack.exemptions):
        for j, rid in enumerate(ex.waives):
            if rid not in rule_ids:
                raise fail(("exemptions", i, "waives", j), f"waives unknown rule {rid!r}")

    bases = set(CORE_BASES) | set(pack.bases)
    facts = set(CORE_FACTS) | set(pack.facts)
    for i, restriction in enumerate(pack.restriction):
        for j, basis in enumerate(restriction.allows):
            if basis not in bases:
                raise fail(
                    ("restriction", i, "allows", j), f"unknown basis {basis!r}",
                    "declare it under `bases`",
                )  # fmt: skip
    for pred, loc in _predicates(pack):
        atom = pred.atom
        if atom == "coverage" and pred.coverage not in pack.coverage:
            raise fail((*loc, "coverage"), f"no coverage named {pred.coverage!r}")
        if atom == "destination_in_list" and pred.destination_in_list not in pack.lists:
            raise fail((*loc, "destination_in_list"), f"no list named {pred.destination_in_list!r}")
        if atom == "basis" and pred.basis not in bases:
            raise fail((*loc, "basis"), f"unknown basis {pred.basis!r}", "declare it under `bases`")
        if atom == "fact" and pred.fact is not None and pred.fact.name not in facts:
            raise fail(
                (*loc, "fact", "name"),
                f"unknown fact {pred.fact.name!r}",
                "declare it under `facts`",
            )
        if atom in ("filed", "waited"):
            ref = pred.filed if atom == "filed" else pred.waited.after if pred.waited else None
            template = (ref or "").replace("{destination}", "{country}")
            if template not in pack.filings:
                raise fail((*loc, atom), f"unknown filing {ref!r}", "declare it under `filings`")
        if atom == "categories" and pred.categories is not None:
            for key in pred.categories:
                if not known_category(key):
                    raise fail((*loc, "categories"), f"unknown data category {key!r}")
    return taxonomy


# --- pack sets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPack:
    pack: Pack
    origin: str  # "builtin" or the file it came from
    overrides: str | None = None  # the origin of the pack it replaced

    @property
    def id(self) -> str:
        return self.pack.pack.id


@dataclass
class PackSet:
    """The packs in force, and the vocabulary they declare together."""

    packs: dict[str, LoadedPack] = field(default_factory=dict)
    taxonomy: Taxonomy = field(default_factory=default_taxonomy)

    def __iter__(self) -> Iterator[LoadedPack]:
        return iter(self.packs.values())

    def __len__(self) -> int:
        return len(self.packs)

    def get(self, pack_id: str) -> Pack:
        return self.packs[pack_id].pack

    def filing_names(self) -> list[str]:
        return sorted({n for lp in self for n in lp.pack.filings})

    def bases(self) -> dict[str, str]:
        out = {k: v.title for k, v in CORE_BASES.items()}
        for lp in self:
            out.update({k: v.title for k, v in lp.pack.bases.items()})
        return out

    def facts(self) -> dict[str, FactDecl]:
        out = dict(CORE_FACTS)
        for lp in self:
            out.update(lp.pack.facts)
        return out


def read_pack(text: str, name: str, taxonomy: Taxonomy | None = None) -> tuple[Pack, Taxonomy]:
    """Validate one pack's text. Returns the pack and the taxonomy with its categories."""
    source = YamlSource(name, text, PackError)
    pack = _validate(source, source.parse())
    return pack, _check_references(source, pack, taxonomy or default_taxonomy())


def read_pack_file(path: str | os.PathLike[str]) -> Pack:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackError("no such file", file=str(p), hint="check the path") from None
    except UnicodeDecodeError:
        raise PackError("not UTF-8 text", file=str(p), hint="save the pack as UTF-8") from None
    except OSError as exc:
        raise PackError(f"cannot read: {exc.strerror}", file=str(p)) from None
    return read_pack(text, str(p))[0]


def builtin_pack_texts() -> list[tuple[str, str]]:
    folder = resources.files("domicile.packs") / "data"
    return sorted(
        (f"builtin:{entry.name}", entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(p.glob("*.yaml")))
        else:
            out.append(p)
    return out


def env_pack_paths() -> list[str]:
    raw = os.environ.get("DOMICILE_PACKS", "")
    return [p for p in raw.split(os.pathsep) if p]


# Packs already validated in this process, by origin and the digest of their text: a
# process that opens several deployments or vaults (serve's workers, federation nodes, the
# test suite) parses each text once. A changed text is a new key, so it is read afresh;
# validation errors are never kept. The packs are read-only once loaded.
_PARSED: dict[tuple[str, bytes], Pack] = {}
_PARSED_MOST = 256


def load_packs(
    extra: Sequence[str | os.PathLike[str]] = (), *, builtin: bool = True, env: bool = True
) -> PackSet:
    """The built-in packs, then ``DOMICILE_PACKS``, then ``extra`` files or folders; a later
    pack with an id already loaded replaces the earlier one."""
    entries: list[tuple[str, str]] = builtin_pack_texts() if builtin else []
    for path in _expand([*(env_pack_paths() if env else []), *extra]):
        try:
            entries.append((str(path), path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise PackError("no such file", file=str(path), hint="check the path") from None
        except UnicodeDecodeError:
            raise PackError("not UTF-8 text", file=str(path), hint="save it as UTF-8") from None
    taxonomy = default_taxonomy()
    packs: dict[str, LoadedPack] = {}
    parsed: list[tuple[str, Pack]] = []
    for origin, text in entries:
        key = (origin, hashlib.sha256(text.encode()).digest())
        pack = _PARSED.get(key)
        if pack is None:
            pack, _ = read_pack(text, origin, taxonomy)
            if len(_PARSED) >= _PARSED_MOST:
                _PARSED.clear()
            _PARSED[key] = pack
        parsed.append((origin, pack))
    for origin, pack in parsed:
        previous = packs.get(pack.pack.id)
        packs[pack.pack.id] = LoadedPack(pack, origin, previous.origin if previous else None)
    for lp in packs.values():
        taxonomy = taxonomy.extended(
            {k: v for k, v in lp.pack.categories.items() if k not in taxonomy}
        )
    return PackSet(packs, taxonomy)
