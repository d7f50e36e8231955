"""The main job: open the embedded three-site vault, load a sample population, and show
where each record went and why, what a read from abroad does, and the evidence.

No real people: names, addresses and numbers are made up.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domicile.config import load_config
from domicile.deploy.starter import init
from domicile.errors import DomicileError
from domicile.files import write_private
from domicile.vault import Domicile, PolicyRefused

MARKER = ".domicile-demo"


@dataclass(frozen=True)
class Person:
    label: str
    evidence: dict[str, str]
    fields: dict[str, str]


PEOPLE = (
    Person("Russian citizen in Moscow", {"citizenship": "RU", "residence": "RU"},
           {"full_name": "Anna Sergeevna Volkova", "email": "anna.volkova@example.ru", "phone": "+7 912 345-67-89",
            "headline": "Data engineer", "city": "Moscow"}),
    Person("Dual citizen RU/DE, lives in Russia", {"citizenship": "RU,DE", "residence": "RU"},
           {"full_name": "Pavel Schneider", "email": "pavel.schneider@example.org", "city": "Kaliningrad"}),
    Person("Unknown citizenship, Russian mobile", {"phone": "+7 903 123-45-67"},
           {"full_name": "Ilya K.", "phone": "+7 903 123-45-67", "headline": "Recruiter"}),
    Person("French resident", {"citizenship": "FR", "residence": "FR"},
           {"full_name": "Camille Durand", "email": "camille.durand@example.fr", "city": "Lyon"}),
    Person("German resident", {"citizenship": "DE", "residence": "DE", "ip": "88.198.0.1"},
           {"full_name": "Jonas Becker", "email": "jonas.becker@example.de", "city": "Leipzig"}),
    Person("US citizen in Boston", {"citizenship": "US", "residence": "US"},
           {"full_name": "Emily Carter", "email": "emily.carter@example.com", "city": "Boston"}),
    Person("Brazilian in New York", {"citizenship": "BR", "residence": "US"},
           {"full_name": "Lucas Almeida", "email": "lucas.almeida@example.com.br", "city": "New York"}),
    Person("Russian citizen living in Berlin", {"citizenship": "RU", "residence": "DE"},
           {"full_name": "Olga Ivanova", "email": "olga.ivanova@example.de", "city": "Berlin"}),
)  # fmt: skip


def load_sample(vault: Domicile) -> int:
    """Write the sample population into ``vault`` (those the law lets it place)."""
    placed = 0
    for p in PEOPLE:
        try:
            vault.put("profiles", subject=p.evidence, fields=p.fields, purpose="account_signup")
            placed += 1
        except PolicyRefused:
            continue
    return placed


def prepare(folder: Path) -> Path:
    """A fresh demo folder (only ever one that this demo made) with the starter config."""
    if folder.exists():
        if not (folder / MARKER).exists():
            raise DomicileError(
                f"{folder} exists and was not made by the demo", hint="pass --dir to another folder"
            )
        shutil.rmtree(folder)
    init(folder)
    write_private(folder / MARKER, "made by `domicile demo`; safe to delete\n")
    config = folder / "domicile.yaml"
    text = config.read_text(encoding="utf-8")
    # The demo's company filed its Art. 12 notice in March 2025, listing the US.
    text = text.replace("#  ru.art12_notice: 2025-03-03", "  ru.art12_notice: 2025-03-03")
    config.write_text(text, encoding="utf-8")
    return config


def _why(decision: Any) -> str:
    for r in decision.rules:
        if r.kind == "localization" and r.outcome.value == "allow":
            return f"{r.id}: {r.reason}"
    if decision.jurisdictions and any(j.coverage != "none" for j in decision.jurisdictions):
        covering = [j.name for j in decision.jurisdictions if j.coverage != "none"]
        return f"covered by {', '.join(covering)}; this site satisfies every rule"
    return "no law pins this subject to a country: the default site"


def run(folder: Path) -> dict[str, Any]:
    config = load_config(prepare(folder))
    out: dict[str, Any] = {"config": str(config.source), "placements": [], "reads": [], "sites": []}
    with Domicile(config) as vault:
        tokens: dict[str, str] = {}
        for p in PEOPLE:
            try:
                r = vault.put(
                    "profiles", subject=p.evidence, fields=p.fields, purpose="account_signup"
                )
            except PolicyRefused as exc:
                out["placements"].append(
                    {"subject": p.label, "site": None, "country": None, "why": exc.message}
                )
                continue
            tokens[p.label] = r.token
            out["placements"].append(
                {"subject": p.label, "site": r.site, "country": r.country, "why": _why(r.decision)}
            )
        for label, site in (
            ("Russian citizen in Moscow", "us"),
            ("French resident", "us"),
            ("US citizen in Boston", "ru"),
        ):
            try:
                got = vault.get(tokens[label], purpose="recruiter_view", as_site=site)
                out["reads"].append(
                    {"subject": label, "requester_site": site, "outcome": "allowed",
                     "transfer": got.transfer, "rules": [r.id for r in got.decision.rules]}
                )  # fmt: skip
            except PolicyRefused as exc:
                out["reads"].append(
                    {
                        "subject": label,
                        "requester_site": site,
                        "outcome": "refused",
                        "why": exc.message,
                    }
                )
        out["sites"] = [s.to_dict() for s in vault.sites()]
        out["audit"] = [r.to_dict() for r in vault.verify_audit()]
    # Evidence: no plaintext value of anyone is in any file of the deployment.
    files = [f for f in (config.data_dir).rglob("*") if f.is_file()]
    blob = b"".join(f.read_bytes() for f in files)
    leaked = [p.label for p in PEOPLE for v in p.fields.values() if v.encode("utf-8") in blob]
    out["plaintext_check"] = {
        "files": len(files),
        "values": sum(len(p.fields) for p in PEOPLE),
        "found": leaked,
    }
    return out
