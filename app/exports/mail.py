"""The e-mail that announces the weekly files, in French, one link per file (PASSERELLE_SMTP_*)."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

from app.exports.publication import Publication
from app.settings import Settings

LABELS = {
    "flux": "Fichier flux (annexe 1) : personnes entrées et orientées",
    "pilotage": "Fichier de pilotage (annexe 4)",
}


def message(settings: Settings, publication: Publication, expires: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = (
        f"RSA - fichiers hebdomadaires pour France Travail - département {publication.departement} - "
        f"semaine {publication.week}"
    )
    msg["From"] = settings.mail_from or f"passerelle-rsa@{(settings.smtp_host or 'localhost')}"
    msg["To"] = ", ".join(settings.export_recipients)
    lines = [
        "Bonjour,",
        "",
        f"Les fichiers de la semaine {publication.week} du département {publication.departement} sont "
        "disponibles aux liens ci-dessous.",
        f"Chaque lien est personnel et expire le {expires:%d/%m/%Y à %H:%M} (UTC). Chaque téléchargement est "
        "enregistré. Ne transférez pas ce message.",
        "",
    ]
    for f in publication.files:
        lines += [
            f"- {LABELS.get(f.kind, f.kind)} : {f.filename} ({f.rows} lignes)",
            f"  {publication.links[f.kind]}",
            f"  empreinte SHA-256 : {f.sha256}",
            "",
        ]
    lines += [
        "Les fichiers sont au format CSV (séparateur « ; », UTF-8), lisibles dans Excel.",
        "",
        "Passerelle RSA - message automatique, merci de ne pas y répondre.",
    ]
    msg.set_content("\n".join(lines))
    return msg
