"""France Travail's shapes -> the convention's vocabulary (seeds/001, Annexe 2 §10), in one place.

The client speaks what francetravail.io serves (contrat-usager v2 `m_*` fields, diagnostic argumenté v4
dossiers); our API and storage speak the convention's names (`statutDE`, `dateEffetStatut`,
`motifInscriptionCode`, `besoinsParDiagnostic`, `contraintes`…). Partner answers are validated here: a
value of the wrong type or form raises `MappingError` naming the field, and nothing is stored.

Where the convention and the API differ (docs/integrations.md, "France Travail"):
- the convention's `dateInscription12/24/36` are described as dates; contrat-usager v2 answers durations in
  months (`m_duree_inscription_12`...). Both are kept under honest names: `dateInscription12` when a date
  is given, `dureeInscription12` (months) when a duration is.
- the convention's `Top Identité certifiée` is "Oui"/"Non"; the API's `topIdentiteCertifiee` is "O"/"N"/
  "null" (read by the client).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

STATUTS = {"identifie": "Identifié", "inscrit": "Inscrit", "cesse": "Cessé", "radie": "Radié"}


class MappingError(ValueError):
    """France Travail answered something of the wrong form: the field and what was wrong."""


def _fold(value: str) -> str:
    return value.strip().lower().translate(str.maketrans("éèêëÉ", "eeeee"))


def _text(data: dict[str, Any], key: str, where: str, limit: int = 500) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MappingError(f"{where}.{key}: expected text, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > limit:
        raise MappingError(f"{where}.{key}: longer than {limit} characters")
    return text or None


def _day(data: dict[str, Any], key: str, where: str) -> str | None:
    value = _text(data, key, where, 40)
    if value is None:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        raise MappingError(f"{where}.{key}: not a date AAAA-MM-JJ") from None


def _months(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        months = int(value)
    except (TypeError, ValueError):
        raise MappingError(f"{where}.{key}: not a number of months") from None
    if not 0 <= months <= 36:
        raise MappingError(f"{where}.{key}: {months} months is outside 0-36")
    return months


def _bool(data: dict[str, Any], key: str, where: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in ("O", "OUI", "TRUE", "N", "NON", "FALSE"):
        return value.strip().upper() in ("O", "OUI", "TRUE")
    raise MappingError(f"{where}.{key}: not a boolean")


def _objects(data: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MappingError(f"{where}.{key}: expected a list of objects")
    return value


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MappingError(f"{where}.{key}: expected an object")
    return value


def statut(contrat: dict[str, Any]) -> dict[str, Any]:
    """contrat-usager v2 `m_contrat` -> the convention's Statut usager."""
    w = "m_contrat"
    raw = _text(contrat, "m_statut", w, 40)
    if raw is None or _fold(raw) not in STATUTS:
        raise MappingError(f"{w}.m_statut: expected Identifié, Inscrit, Cessé or Radié")
    out: dict[str, Any] = {"statutDE": STATUTS[_fold(raw)], "dateEffetStatut": _day(contrat, "m_date_effet_statut", w)}
    for n in (12, 24, 36):
        out[f"dateInscription{n}"] = _day(contrat, f"m_date_inscription_{n}", w)
        out[f"dureeInscription{n}"] = _months(contrat, f"m_duree_inscription_{n}", w)
    for ours, theirs in (
        ("motifInscription", "m_motif_inscription"),
        ("categInscription", "m_categ_inscription"),
        ("situationRegEmp", "m_situation_reg_emp"),
        ("motifCloture", "m_motif_cloture"),
    ):
        out[f"{ours}Code"] = _text(contrat, f"{theirs}_code", w, 20)
        out[f"{ours}Lib"] = _text(contrat, f"{theirs}_lib", w, 200)
    return out


def _conseiller(agent: dict[str, Any] | None, where: str) -> dict[str, Any] | None:
    if agent is None:
        return None
    return {k: _text(agent, k, where, 200) for k in ("nom", "prenom", "structure")}


def diagnostic(dossier: dict[str, Any]) -> dict[str, Any]:
    """diagnostic argumenté v4 dossier -> the convention's Dossier individu (besoins par diagnostic,
    contraintes with their situations and objectifs, pouvoir d'agir)."""
    besoins_par_diagnostic = [
        _besoins_par_diagnostic(item, f"besoinsParDiagnostic[{i}]")
        for i, item in enumerate(_objects(dossier, "besoinsParDiagnostic", "dossier"))
    ]
    ctheme = _object(dossier, "thematiqueContrainte", "dossier")
    contraintes = _contraintes(ctheme, "thematiqueContrainte") if ctheme is not None else None
    pouvoir = _object(dossier, "pouvoirAgir", "dossier")
    autonomie = _object(dossier, "autonomieNumerique", "dossier")
    return {
        "besoinsParDiagnostic": besoins_par_diagnostic,
        "contraintes": contraintes,
        "pouvoirAgir": {
            k: _text(pouvoir, k, "pouvoirAgir", 60) for k in ("confiance", "accompagnement", "resultatAnalyse")
        }
        if pouvoir is not None
        else None,
        "autonomieNumerique": {k: _text(autonomie, k, "autonomieNumerique", 200) for k in sorted(autonomie)}
        if autonomie is not None
        else None,
    }


def _besoins_par_diagnostic(item: dict[str, Any], w: str) -> dict[str, Any]:
    """One diagnostic (its métier, status, conseiller) and the besoins of its thematiques."""
    diag: dict[str, Any] = _object(item, "diagnostic", w) or {}
    dw = f"{w}.diagnostic"
    besoins = [
        besoin
        for j, theme in enumerate(_objects(item, "thematiquesBesoins", w))
        for besoin in _besoins(theme, f"{w}.thematiquesBesoins[{j}]")
    ]
    return {
        "idDiagnostic": _text(diag, "idDiagnostic", dw, 100),
        "idMetier": _text(diag, "idMetierChiffre", dw, 300),
        "nomMetier": _text(diag, "nomMetier", dw, 200),
        "typologie": _text(diag, "typologie", dw, 60),
        "codeRome": _text(diag, "codeRome", dw, 10),
        "statut": _text(diag, "statut", dw, 30),
        "estPrioritaire": _bool(diag, "estPrioritaire", dw),
        "dateMiseAJour": _day(diag, "dateMiseAJour", dw),
        "conseiller": _conseiller(_object(diag, "agent", dw), f"{dw}.agent"),
        "besoins": besoins,
    }


def _besoins(theme: dict[str, Any], tw: str) -> list[dict[str, Any]]:
    """The besoins of one thematique, each carrying its thematique's code and label."""
    besoins = []
    for k, besoin in enumerate(_objects(theme, "besoins", tw)):
        bw = f"{tw}.besoins[{k}]"
        besoins.append(
            {
                "thematiqueCode": _text(theme, "code", tw, 20),
                "thematiqueLibelle": _text(theme, "libelle", tw, 200),
                "code": _text(besoin, "code", bw, 20),
                "libelle": _text(besoin, "libelle", bw, 200),
                "valeur": _text(besoin, "valeur", bw, 20),
                "dateExploration": _day(besoin, "dateExploration", bw),
            }
        )
    return besoins


def _contraintes(ctheme: dict[str, Any], tw: str) -> dict[str, Any]:
    """The thematique contrainte and its contraintes."""
    items = [_contrainte(c, f"{tw}.contraintes[{i}]") for i, c in enumerate(_objects(ctheme, "contraintes", tw))]
    return {
        "code": _text(ctheme, "code", tw, 20),
        "libelle": _text(ctheme, "libelle", tw, 200),
        "dateDeModification": _day(ctheme, "dateExploration", tw),
        "contraintes": items,
    }


def _contrainte(c: dict[str, Any], cw: str) -> dict[str, Any]:
    """One contrainte with its situations and objectifs."""
    return {
        "id": _text(c, "code", cw, 20),
        "nom": _text(c, "libelle", cw, 200),
        "valeur": _text(c, "valeur", cw, 20),
        "estPrioritaire": _bool(c, "estPrioritaire", cw),
        "impact": _text(c, "impact", cw, 40),
        "situations": [_coded(s, f"{cw}.situations[{j}]") for j, s in enumerate(_objects(c, "situations", cw))],
        "objectifs": [_coded(o, f"{cw}.objectifs[{j}]") for j, o in enumerate(_objects(c, "objectifs", cw))],
    }


def _coded(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A situation or an objectif: code, label, value."""
    return {
        "code": _text(item, "code", where, 20),
        "libelle": _text(item, "libelle", where, 200),
        "valeur": _text(item, "valeur", where, 20),
    }


# Orientation usager v1 lectureOrientation (shared/formats/france-travail-api.md §4): France Travail's codes.
FT_PARCOURS = ("PED", "PSP", "PSO", "EO", "IND")
FT_ORGANISMES = ("FT", "CD", "ML", "CE", "IND")
FT_STATUTS = ("PRECONISE", "DECIDE")
FT_ETATS = ("EN_ATTENTE", "BROUILLON", "OUVERT", "CLOTURE")


def _pick(data: dict[str, Any], snake: str) -> str:
    """The key `snake` as France Travail's answer spells it: snake_case (les-emplois' mock), or camelCase
    (what other public clients read); the snake_case name when neither is there."""
    if snake in data:
        return snake
    head, *rest = snake.split("_")
    camel = head + "".join(part.title() for part in rest)
    return camel if camel in data else snake


def _code(data: dict[str, Any], snake: str, where: str, allowed: tuple[str, ...], required: bool = False) -> str | None:
    key = _pick(data, snake)
    value = _text(data, key, where, 20)
    if value is None:
        if required:
            raise MappingError(f"{where}.{key}: missing (expected one of {', '.join(allowed)})")
        return None
    if value.upper() not in allowed:
        raise MappingError(f"{where}.{key}: {value[:20]!r} is not one of {', '.join(allowed)}")
    return value.upper()


def orientation(data: dict[str, Any], where: str = "lectureOrientation") -> dict[str, Any]:
    """One orientation of lectureOrientation -> what France Travail knows of it, validated: the parcours,
    organisme, statut and etat must be France Travail's codes, the dates dates, the structure and the
    decision objects. `dateOrientation` is the date the service reads it by: the decision date, else the
    day the parcours started (docs/integrations.md, "France Travail's own orientations")."""
    w = where
    structure = _object(data, "structure", w)
    decision = _object(data, "decision", w)
    criteres = _object(data, _pick(data, "criteres_orientation"), w)
    sw, dw, cw = f"{w}.structure", f"{w}.decision", f"{w}.criteres_orientation"
    out: dict[str, Any] = {
        "parcours": _code(data, "parcours", w, FT_PARCOURS, required=True),
        "organisme": _code(data, "organisme", w, FT_ORGANISMES),
        "statut": _code(data, "statut", w, FT_STATUTS, required=True),
        "etat": _code(data, "etat", w, FT_ETATS),
        "origine": _text(data, "origine", w, 40)
        or (_text(criteres, "origine", cw, 40) if criteres is not None else None),
        "dateEntreeParcours": _day(data, _pick(data, "date_entree_parcours"), w),
        "dateSortieParcours": _day(data, _pick(data, "date_sortie_parcours"), w),
        "structure": {
            "codeAurore": _text(structure, _pick(structure, "code_aurore"), sw, 20),
            "codeSafir": _text(structure, _pick(structure, "code_safir"), sw, 20),
            "libelle": _text(structure, _pick(structure, "libelle_structure"), sw, 200),
        }
        if structure is not None
        else None,
        "etatDecision": _text(decision, _pick(decision, "etat_decision"), dw, 30) if decision is not None else None,
        "dateDecision": _day(decision, _pick(decision, "date_decision"), dw) if decision is not None else None,
    }
    out["dateOrientation"] = out["dateDecision"] or out["dateEntreeParcours"] or _day(data, "dateOrientation", w)
    return out


def orientations(items: list[dict[str, Any]]) -> dict[str, Any]:
    """lectureOrientation's list -> `{"orientations": [...]}` (each validated by `orientation`)."""
    return {"orientations": [orientation(item, f"lectureOrientation[{i}]") for i, item in enumerate(items)]}


def fingerprint(data: dict[str, Any] | None) -> str:
    """Equal content, equal fingerprint: a snapshot is stored only when it differs from the last one."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
