"""The bodies the fake answers with, derived from the NIR and the seed (the same for a seed), in the
shapes of shared/formats/france-travail-api.md."""

from __future__ import annotations

import hashlib
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.responses import JSONResponse, Response

from app.france_travail.fake.jeton import make_jeton
from app.france_travail.fake.state import FakeState


def search_answer(state: FakeState, nir13: str) -> Response:
    """The answer to a search for `nir13`, by who the NIR is at the fake."""
    kind = state.kind(nir13)
    if kind == "unknown":
        return _no_jeton("S002", "Aucun usager trouvé")
    if kind == "ambiguous":
        return _no_jeton("S003", "Plusieurs usagers trouvés")
    if kind == "error":
        return JSONResponse({"codeRetour": "R998", "message": "Un service a répondu en erreur"}, status_code=500)
    if kind == "not_attached":
        return JSONResponse(
            {"codeRetour": "R002", "message": "Usager non rattaché à la structure de l'appelant"}, status_code=403
        )
    return JSONResponse(
        {
            "codeRetour": "S001",
            "message": "Usager trouvé",
            "topIdentiteCertifiee": "O" if kind == "certified" else "N",
            "jetonUsager": make_jeton(nir13, state.faults.jeton_ttl_seconds),
        }
    )


def _no_jeton(code: str, message: str) -> Response:
    """A search answered without a person: none found, or several."""
    return JSONResponse({"codeRetour": code, "message": message, "topIdentiteCertifiee": "null", "jetonUsager": None})


def _draw(what: str, state: FakeState, nir13: str) -> int:
    """A number fixed for `what`, the seed and the NIR."""
    return int(hashlib.sha256(f"{what}|{state.seed}|{nir13}".encode()).hexdigest(), 16)


def statut_answer(state: FakeState, nir13: str) -> Response:
    """A person's registration status at France Travail (204 for one in ten)."""
    n = _draw("statut", state, nir13)
    if n % 10 == 0:
        return Response(status_code=204)
    statut_de = ("Inscrit", "Identifié", "Cessé", "Radié")[n % 4]
    return JSONResponse(
        {
            "m_contrat": {
                "m_statut": statut_de,
                "m_date_effet_statut": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}",
                "m_duree_inscription_12": n % 13,
                "m_duree_inscription_24": n % 25,
                "m_duree_inscription_36": n % 37,
                "m_motif_inscription_code": "11",
                "m_motif_inscription_lib": "LICENCIEMENT ECONOMIQUE",
                **_categorie(n),
                "m_situation_reg_emp_code": "ADR",
                "m_situation_reg_emp_lib": "AIDE DIFFERENTIELLE AU RECLASSEMENT",
                "m_motif_cloture_code": None,
                "m_motif_cloture_lib": None,
            }
        }
    )


# France Travail's registration categories since 1 January 2025 (loi pour le plein emploi): F (social
# accompaniment) and G (waiting: RSA applicants and beneficiaries awaiting orientation), beside category 1.
CATEGORIES = (
    ("1", "PERSONNE SANS EMPLOI DISPONIBLE DUREE INDETERMINEE PLEIN TPS"),
    ("F", "PERSONNE EN ACCOMPAGNEMENT SOCIAL"),
    ("G", "DEMANDEUR OU BENEFICIAIRE DU RSA EN ATTENTE D'ORIENTATION"),
)


def _categorie(n: int) -> dict[str, str]:
    """One person in six in category F, one in six in G, the others in 1 (drawn from another part of n)."""
    code, lib = CATEGORIES[(0, 0, 0, 0, 1, 2)[(n // 7) % 6]]
    return {"m_categ_inscription_code": code, "m_categ_inscription_lib": lib}


def orientations_answer(state: FakeState, nir13: str) -> Response:
    """lectureOrientation: what a test or the demo set for the NIR (`known_orientations`), else the
    orientations the Département pushed, else one drawn: 204 for seven persons in ten, a PRECONISE for three.
    Never a DECIDE of its own: France Travail decides an orientation after the Département's six weeks (CASF
    art. D.262-65-2), which the fake cannot know; a drawn decision, dated at random, would end episodes the
    platform is still working on and restart contract clocks (the demo sets one such person explicitly)."""
    if nir13 in state.known_orientations:
        known = state.known_orientations[nir13]
        return JSONResponse(known) if known is not None else Response(status_code=204)
    pushed = state.orientations.get(nir13)
    if pushed:
        return JSONResponse(pushed)
    n = _draw("orientation", state, nir13)
    if n % 10 < 7:
        return Response(status_code=204)
    recommended = ft_today() - timedelta(days=10 + n % 30)
    return JSONResponse([ft_orientation("PRECONISE", ("PED", "PSP", "PSO")[n % 3], recommended, n)])


def ft_today(now: float | None = None) -> date:
    """France Travail's day: the date in Paris (its systems date a decision there), whatever the host's zone; a
    decision pushed between midnight in Paris and midnight UTC is dated the next day, as France Travail does."""
    return datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo("Europe/Paris")).date()


def ft_orientation(statut: str, parcours: str, day: date, n: int = 0, organisme: str = "FT") -> dict[str, Any]:
    """One orientation in lectureOrientation's shape (snake_case): a DECIDE has its decision dated `day`."""
    return {
        "parcours": parcours,
        "organisme": organisme,
        "structure": {
            "code_aurore": f"A{n % 1000:04d}",
            "code_safir": f"{55000 + n % 100}",
            "libelle_structure": "France Travail Bar-le-Duc",
        },
        "statut": statut,
        "etat": "OUVERT" if statut == "DECIDE" else "EN_ATTENTE",
        "date_entree_parcours": (day + timedelta(days=2 if statut == "DECIDE" else 0)).isoformat(),
        "criteres_orientation": {"origine": "INSCRIPTION_AUTO_CAF"},
        "decision": {"etat_decision": "VALIDEE", "date_decision": day.isoformat()} if statut == "DECIDE" else None,
    }


def dossier_answer(state: FakeState, nir13: str) -> Response:
    """A person's diagnostic (204 for one in five): needs by diagnostic, a constraint, the power to act."""
    n = _draw("diag", state, nir13)
    if n % 5 == 0:
        return Response(status_code=204)
    return JSONResponse(
        {
            "besoinsParDiagnostic": [
                {
                    "diagnostic": {"idDiagnostic": str(n % 10**6), "typologie": "RETOUR_EMPLOI", "statut": "VALIDE"},
                    "thematiquesBesoins": [_besoins(n)],
                }
            ],
            "thematiqueContrainte": _contrainte(n),
            "pouvoirAgir": {"confiance": "MOYENNE", "accompagnement": "OUI", "resultatAnalyse": "A_ACCOMPAGNER"},
        }
    )


def _besoins(n: int) -> dict[str, Any]:
    return {
        "code": "1",
        "libelle": "Savoirs",
        "besoins": [
            {
                "code": "11",
                "libelle": "Français",
                "valeur": ("BESOIN", "POINT_FORT", "NON_EXPLORE")[n % 3],
                "dateExploration": "2025-03-01",
            }
        ],
    }


def _contrainte(n: int) -> dict[str, Any]:
    return {
        "code": "23",
        "libelle": "Mobilité",
        "dateExploration": "2025-03-01",
        "contraintes": [
            {
                "code": "231",
                "libelle": "Pas de permis",
                "valeur": ("OUI", "NON_ABORDEE", "CLOTUREE")[n % 3],
                "estPrioritaire": n % 2 == 0,
                "impact": "FORT",
                "situations": [{"code": "2311", "libelle": "Permis B", "valeur": "OUI"}],
                "objectifs": [{"code": "2312", "libelle": "Passer le permis", "valeur": "EN_COURS"}],
            }
        ],
    }
