"""Plain-language explanations of decisions, for people who are not engineers."""

from __future__ import annotations

from domicile.countries import country_name
from domicile.packs.model import Outcome
from domicile.policy.decision import Decision, RuleResult

_VERDICT = {
    Outcome.allow: "ALLOW: the packs in force permit this",
    Outcome.escalate: "ESCALATE: a person must decide; the packs cannot settle it",
    Outcome.deny: "DENY: the packs in force forbid this",
}


def _cite(r: RuleResult) -> str:
    if not r.citations:
        return ""
    c = r.citations[0]
    return f" [{c.title}{', ' + c.pinpoint if c.pinpoint else ''}]"


def explain(d: Decision) -> str:
    req = d.request
    action = f"{req.operation.value} {', '.join(req.categories)} at a site in {req.site_country}"
    if req.to_country:
        action += f" for {req.to_country} ({country_name(req.to_country)})"
    lines = [f"{_VERDICT[d.outcome]} ({action}, on {req.date.isoformat()})."]

    covering = [j for j in d.jurisdictions if j.coverage != "none" or j.territory]
    if covering:
        lines.append("Laws involved:")
        for j in covering:
            how = j.coverage if j.coverage != "none" else "territory"
            lines.append(f"  - {j.name} ({j.pack}, {how}): {'; '.join(j.reasons)}")
    else:
        lines.append("No loaded pack covers this subject or this site.")

    deciding = [r for r in d.rules if r.outcome is d.outcome and r.outcome is not Outcome.allow]
    others = [r for r in d.rules if r not in deciding]
    if deciding:
        lines.append("Why:")
        for r in deciding:
            lines.append(f"  - {r.id}{_cite(r)}: {r.says}")
            lines.append(f"    Here: {r.reason}.")
            if r.interpretation == "contested" and r.interpretation_note:
                lines.append(f"    Contested reading: {r.interpretation_note.strip()}")
            if req.bases and r.kind in ("localization", "prohibition") and not r.waived_by:
                lines.append(
                    f"    The claimed basis ({', '.join(sorted(req.bases))}) does not lift this rule."
                )
    if others:
        lines.append("Also applied:" if deciding else "Rules applied:")
        for r in others:
            lines.append(f"  - {r.id} ({r.outcome.value}): {r.reason}.")
    todo = [o for o in d.obligations if o.status != "met"]
    if todo:
        lines.append("Obligations:")
        for o in todo:
            due = f" (due {o.due})" if o.due else ""
            lines.append(f"  - [{o.status}] {o.text}{due}")
    if d.disclosure == "masked":
        shown = ", ".join(f"{cat} as {method}" for cat, method in d.masks)
        lines.append(f"Masked disclosure permitted: {shown}; everything else is withheld.")
    if d.earliest_allowed:
        lines.append(f"Earliest date this could be allowed: {d.earliest_allowed.isoformat()}.")
    return "\n".join(lines)
