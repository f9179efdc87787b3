"""Every French label of the pilotage figures, in one place: indicators, breakdowns, breakdown values, table
titles; and the one code for a value not given (`non_precise`, "Non précisé"), whatever the breakdown.

A figure is stored with code names (`orientes_15j`, `organisme` = `FRANCE_TRAVAIL`); the JSON, the CSV, the
dashboard and the terminal show these labels (the official French ones), never the codes.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

ENSEMBLE = "ensemble"
NOT_GIVEN = "non_precise"  # a breakdown value the facts do not give (no organisme, no commune, no birth date...)
NOT_GIVEN_LABEL = "Non précisé"
NOT_ORIENTED = "non_oriente"  # the organisme or parcours of a person not (yet) oriented on as_of
DIMENSIONS = (
    "organisme",
    "structure",
    "type_parcours",
    "accompagnement_global",
    "caf_msa",
    "commune",
    "territoire",
    "tranche_age",
    "sexe",
    "role",
)

LABELS: dict[str, str] = {
    # indicators
    "nouveaux_entrants": "Nouveaux entrants",
    "orientes": "Orientés",
    "orientes_15j": "Orientés en 15 jours ou moins",
    "taux_15j": "Taux d'orientation en 15 jours",
    "orientes_1mois": "Orientés en un mois ou moins",
    "taux_1mois": "Taux d'orientation en un mois",
    "delai_moyen_jours": "Délai moyen d'orientation (jours)",
    "delai_median_jours": "Délai médian d'orientation (jours)",
    "orientes_par_delai": "Orientés, par délai en jours",
    "en_attente": "En attente d'orientation",
    "en_attente_par_anciennete": "En attente, par ancienneté",
    "sortis_avant_orientation": "Sortis avant orientation",
    "absents_rdv_orientation": "Orientés ne s'étant pas présentés à un rendez-vous d'orientation",
    "absents_non_revus_rdv_orientation": "Orientés absents puis jamais revus à un rendez-vous d'orientation",
    "excuses_rdv_orientation": "Orientés excusés à un rendez-vous d'orientation",
    "avec_rdv_orientation": "Orientés avec un rendez-vous d'orientation",
    "taux_absence_rdv": "Taux d'absence au rendez-vous d'orientation",
    "avec_rdv_accompagnement": "Orientés avec un rendez-vous d'accompagnement",
    "absents_rdv_accompagnement": "Orientés ne s'étant pas présentés à un rendez-vous d'accompagnement",
    "absents_non_revus_rdv_accompagnement": "Orientés absents puis jamais revus à un rendez-vous d'accompagnement",
    "excuses_rdv_accompagnement": "Orientés excusés à un rendez-vous d'accompagnement",
    "taux_absence_rdv_accompagnement": "Taux d'absence au rendez-vous d'accompagnement",
    "fichiers_recus": "Fichiers reçus",
    "jours_de_reception": "Jours de réception",
    "receptions_par_semaine": "Réceptions par semaine",
    "ecart_median_jours": "Écart médian entre deux réceptions (jours)",
    "ecart_max_jours": "Écart maximal entre deux réceptions (jours)",
    "dernier_fichier_recu": "Dernier fichier reçu le",
    "ecart_long_jours_ouvres": "Écart de plus de N jours ouvrés (jours ouvrés)",
    "soumis_droits_devoirs": "Soumis aux droits et devoirs",
    "orientes_stock": "Orientés (organisme référent unique)",
    "non_orientes_stock": "Non orientés",
    "part_orientes_stock": "Part des orientés",
    "part_renseignee": "Part renseignée",
    "renseignes": "Renseignés",
    "orientes_statut_ft": "Orientés, par statut France Travail",
    "orientes_periode": "Orientés dans la période",
    "contrats_signes": "Orientés ayant signé un contrat depuis l'orientation",
    "contrats_signes_1mois": "Contrats signés dans le mois suivant l'orientation",
    "taux_contrat_1mois": "Taux de contrats signés dans le mois",
    "delai_moyen_contrat_jours": "Délai moyen de signature du contrat (jours)",
    "delai_median_contrat_jours": "Délai médian de signature du contrat (jours)",
    "en_attente_contrat": "Orientés toujours sans contrat",
    "en_attente_contrat_hors_delai": "Orientés sans contrat, délai d'un mois dépassé",
    "transition_sans_ce": "Accompagnés avant 2025 sans contrat d'engagement (transition)",
    "nouveaux_entrants_delai_legal": "Nouveaux entrants soumis au délai légal (ouverture ou transfert du droit)",
    "nouveaux_entrants_hors_delai_legal": "Nouveaux entrants hors délai légal (ni ouverture ni transfert du droit)",
    "orientes_departement_6_semaines": "Orientés par le Département dans les six semaines",
    "taux_orientes_departement_6_semaines": "Part orientée par le Département dans les six semaines",
    "orientes_departement_apres_6_semaines": "Orientés par le Département après les six semaines",
    "orientes_france_travail": "Orientés par France Travail",
    "en_attente_dans_les_6_semaines": "En attente, six semaines non écoulées",
    "en_attente_au_dela_6_semaines": "En attente au-delà des six semaines (France Travail peut orienter)",
    "orientes_categorie_ft": "Orientés, par catégorie d'inscription France Travail",
    "orientes_par_france_travail": "Orientés par France Travail",
    "orientes_par_departement": "Orientés par le Département",
    # dimensions
    ENSEMBLE: "Ensemble",
    "organisme": "Organisme référent",
    "structure": "Structure référente",
    "type_parcours": "Type de parcours",
    "accompagnement_global": "Accompagnement global",
    "caf_msa": "Organisme payeur",
    "commune": "Commune",
    "territoire": "Territoire",
    "tranche_age": "Tranche d'âge",
    "sexe": "Sexe",
    "role": "Rôle",
    "delai_jours": "Délai (jours)",
    "anciennete": "Ancienneté de l'attente",
    "semaine": "Semaine",
    "ecart_du": "Écart commençant le",
    "donnee": "Donnée",
    "statut_ft": "Statut France Travail",
    "categorie_ft": "Catégorie d'inscription France Travail",
}
VALUE_LABELS: dict[str, dict[str, str]] = {
    "organisme": {
        "FRANCE_TRAVAIL": "France Travail",
        "DEPARTEMENT": "Département",
        "MISSION_LOCALE": "Mission locale",
        "CAP_EMPLOI": "Cap emploi",
        "CCAS": "CCAS",
        "SPIP": "SPIP",
        "AUTRE": "Autre",
        NOT_ORIENTED: "Pas (encore) orienté",
        NOT_GIVEN: NOT_GIVEN_LABEL,
    },
    "type_parcours": {
        "social": "Social",
        "socio-professionnel": "Socio-professionnel",
        "professionnel": "Professionnel",
        NOT_ORIENTED: "Pas (encore) orienté",
        NOT_GIVEN: NOT_GIVEN_LABEL,
    },
    "accompagnement_global": {"oui": "Oui", "non": "Non", NOT_GIVEN: NOT_GIVEN_LABEL},
    "caf_msa": {"CAF": "CAF", "MSA": "MSA", NOT_GIVEN: NOT_GIVEN_LABEL},
    "sexe": {"1": "Homme", "2": "Femme", NOT_GIVEN: NOT_GIVEN_LABEL},
    "role": {"DEM": "Demandeur", "CJT": "Conjoint", "ENF": "Enfant", "AUT": "Autre", NOT_GIVEN: NOT_GIVEN_LABEL},
    "donnee": {
        "identifiant_ft": "Identifiant France Travail",
        "identifiant_rsa": "Identifiant RSA (numéro de demande)",
        "date_ouverture_droit": "Date d'ouverture de droit",
        "date_notification": "Date de notification (fichier CAF/MSA)",
        "date_entree": "Date d'entrée (T0)",
        "date_rdv_orientation": "Date du rendez-vous d'orientation",
        "donnees_diagnostic": "Données du diagnostic",
        "type_parcours": "Type de parcours",
        "dates_rdv_accompagnement": "Date du premier rendez-vous d'accompagnement",
    },
    "statut_ft": {
        "Inscrit": "Inscrit",
        "Identifié": "Identifié",
        "Cessé": "Cessé",
        "Radié": "Radié",
        "inconnu": "Inconnu de France Travail",
        "non_interroge": "Pas encore interrogé",
    },
    # statut usager's categInscriptionCode: F and G since 1 January 2025 (loi pour le plein emploi; DREETS
    # Auvergne-Rhône-Alpes, "Ce qui change dans les statistiques sur les inscrits à France Travail", 2 April 2025)
    "categorie_ft": {
        "F": "Catégorie F : personnes en accompagnement social",
        "G": "Catégorie G (attente) : demandeurs et bénéficiaires du RSA en attente d'orientation",
        "autre": "Autres catégories (A à E, 1 à 8)",
        NOT_GIVEN: "Catégorie non donnée (ou pas de statut)",
    },
}
AGE_BANDS = (
    (0, 24, "moins de 25 ans"),
    (25, 29, "25-29 ans"),
    (30, 39, "30-39 ans"),
    (40, 49, "40-49 ans"),
    (50, 59, "50-59 ans"),
    (60, 200, "60 ans et plus"),
)
WAITING_BANDS = (
    (0, 7, "0-7 jours"),
    (8, 15, "8-15 jours"),
    (16, 30, "16-30 jours"),
    (31, 60, "31-60 jours"),
    (61, 10**6, "plus de 60 jours"),
)

TITLES = {
    "nouveaux-entrants": "Nouveaux entrants",
    "delais-orientation": "Délais d'orientation des nouveaux entrants",
    "absents-rdv": "Orientés ne s'étant pas présentés aux rendez-vous d'orientation et d'accompagnement",
    "transmission": "Fréquence de transmission des données CAF/MSA",
    "stock-oarsa": "Stock des personnes soumises aux droits et devoirs et orientées (type OARSA)",
    "completude-volet3": "Complétude des données du volet 3",
    "statut-france-travail": "Statut France Travail des personnes orientées",
    "contrats-engagement": "Contrats d'engagement des personnes orientées",
    "delai-legal": "Délai légal d'orientation de six semaines (art. D.262-65-2 du CASF)",
}


def value_label(dimension: str, key: str, names: dict[str, str] | None = None) -> str:
    """The French label of a breakdown value (`names`: the commune names, by INSEE code)."""
    if dimension == ENSEMBLE:
        return "Ensemble"
    if key == NOT_GIVEN:
        return NOT_GIVEN_LABEL
    if dimension == "commune" and names:
        return names.get(key, key)
    if dimension == "tranche_age" or dimension == "anciennete":
        return key
    return VALUE_LABELS.get(dimension, {}).get(key, key)


def french_cell(value: Any) -> str:
    """A figure as French Excel reads it: decimal comma, dates jj/mm/aaaa, oui/non."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "oui" if value else "non"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".").replace(".", ",") if value != int(value) else str(int(value))
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return date.fromisoformat(value).strftime("%d/%m/%Y")
    return str(value)
