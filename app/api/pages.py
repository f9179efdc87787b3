"""Short French HTML pages for people in a browser (issue #26): the landing page, the way in without an
identity provider, and every error a browser can meet (401, 403, 404, 422, 503...) with a way back. API
clients (no `text/html` in Accept, or a path under `/api/`) keep the JSON errors."""

from __future__ import annotations

from html import escape

from fastapi import Request

LINK_COMMAND = '.venv/bin/passerelle dashboard link --departement 055 --name "Prénom Nom"'

TITLES = {
    400: "Demande incorrecte",
    401: "Connexion nécessaire",
    403: "Accès refusé",
    404: "Page introuvable",
    405: "Méthode non permise",
    409: "Conflit",
    413: "Demande trop volumineuse",
    422: "Paramètre incorrect",
    429: "Trop de demandes",
    502: "Service partenaire indisponible",
    503: "Service momentanément indisponible",
}
EXPLANATIONS = {
    401: "Cette page demande une connexion.",
    403: "Votre compte n'a pas accès à cette page (le tableau de bord demande le droit pilotage:read).",
    404: "Cette adresse ne correspond à aucune page, ou à rien que votre compte puisse voir.",
    405: "Cette adresse ne s'ouvre pas ainsi.",
    429: "Trop de demandes en peu de temps : réessayez dans un instant.",
    502: "Un service partenaire n'a pas répondu : réessayez dans un instant.",
    503: "Le service est momentanément indisponible : réessayez dans un instant.",
}


def wants_html(request: Request) -> bool:
    """A browser opening a page (not the API): its Accept names text/html."""
    return is_page_request(request.url.path, request.headers.get("accept", ""))


def is_page_request(path: str, accept: str) -> bool:
    return not path.startswith("/api/") and "text/html" in accept


def page(title: str, body: str, *, back: bool = True) -> str:
    """A page of this service: `body` is HTML already escaped."""
    links = '<p><a href="/">Accueil</a> · <a href="/tableau-de-bord">Tableau de bord</a></p>' if back else ""
    return (
        '<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} — Passerelle RSA</title>"
        '<link rel="stylesheet" href="/static/tableau-de-bord.css"></head><body><main id="contenu">'
        f"<h1>{escape(title)}</h1>{body}{links}</main></body></html>"
    )


def how_to_get_in(identity_provider: bool) -> str:
    """How a person gets into the dashboard: the identity provider if configured, else a link."""
    ways = (
        '<p><a href="/connexion">Se connecter</a> avec le fournisseur d\'identité du Département.</p>'
        if (identity_provider)
        else ""
    )
    return ways + (
        "<p>Un administrateur peut aussi vous donner un lien de connexion à usage unique, valable quelques "
        "minutes, qui ouvre le tableau de bord pour 8 heures, avec la commande :</p>"
        f"<pre><code>{escape(LINK_COMMAND)}</code></pre>"
        "<p>Les applications, elles, appellent l'API avec une clé (en-tête <code>X-API-Key</code>) : "
        '<a href="/docs">documentation de l\'API</a>.</p>'
    )


def error_page(status: int, message: str | None, identity_provider: bool) -> str:
    title = TITLES.get(status, "Erreur")
    body = f"<p>{escape(message or EXPLANATIONS.get(status, 'La demande n’a pas abouti.'))}</p>"
    if status == 401:
        body += how_to_get_in(identity_provider)
    return page(title, body)


def landing() -> str:
    return page(
        "Passerelle RSA",
        "<p>Le service du Département pour l'orientation des bénéficiaires du RSA : fichiers CAF/MSA, délais "
        "d'orientation, échanges avec France Travail.</p><ul>"
        '<li><a href="/tableau-de-bord">Tableau de bord</a> (connexion nécessaire)</li>'
        '<li><a href="/docs">Documentation de l\'API</a></li></ul>',
        back=False,
    )
