"""Names every pack may use without declaring them: common legal bases and facts.

Packs declare their own (``ru.art6_1_3``, ``recipient.dpf_certified``) in ``bases:`` and
``facts:``; a request that names something no pack declares is refused as bad input.
"""

from __future__ import annotations

from domicile.packs.model import Basis, FactDecl

CORE_BASES: dict[str, Basis] = {
    "consent": Basis(title="the subject's consent"),
    "explicit_consent": Basis(title="the subject's explicit (separate, written) consent"),
    "contract": Basis(title="necessary to perform a contract with the subject"),
    "vital_interests": Basis(title="necessary to protect the life or health of the subject"),
    "legal_obligation": Basis(title="required by a law the controller is subject to"),
    "public_interest": Basis(title="important reasons of public interest"),
    "legal_claims": Basis(title="establishing, exercising or defending legal claims"),
    "rights_of_others": Basis(title="protecting the rights of another natural or legal person"),
}
# The bases that are the subject's consent: a purpose resting on one of them stops for a
# subject who withdrew consent.
CONSENT_BASES = frozenset({"consent", "explicit_consent"})

CORE_FACTS: dict[str, FactDecl] = {
    "replica": FactDecl(
        title="the site keeps a copy of a primary held in the subject's country", type="bool"
    ),
    "primary_country": FactDecl(
        title="the country of the primary a replica copies", type="country"
    ),
    "controller.ciio": FactDecl(
        title="the controller operates critical information infrastructure", type="bool"
    ),
    "controller.state_body": FactDecl(title="the controller is a state body", type="bool"),
    "ytd_export_subjects": FactDecl(
        title="subjects whose personal data was exported this calendar year", type="int"
    ),
    "ytd_export_sensitive_subjects": FactDecl(
        title="subjects whose sensitive personal data was exported this calendar year", type="int"
    ),
}
