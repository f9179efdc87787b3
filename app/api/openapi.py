"""The OpenAPI document, made to tell the truth (issue #14) and rendered deterministically so that the
committed copy (openapi/openapi.json) can be compared.

FastAPI documents each route's 200 and a 422 body (`{"detail": [...]}`) the service never sends. `contract`
rewrites the document from what the service does: the error body `Error` (`{"error","message","details"}`)
for every error status where it happens (400 malformed JSON or an unreadable request, 401/403 on
authenticated routes, 404 where a path names a resource or a query names a département, 413/415 on routes
with a body, 422 on invalid input, 429 per-client rate limit, 503 database busy, each with its headers),
`text/csv` where a route answers CSV, a description for every operation and an example for every body.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "message", "details"],
    "properties": {
        "error": {
            "type": "string",
            "description": "A stable code: invalid_input, not_found, forbidden...",
            "example": "not_found",
        },
        "message": {
            "type": "string",
            "description": "What went wrong and where, for a person to read",
            "example": "No such resource.",
        },
        "details": {"description": "Where: a list of {loc, msg, type} for invalid input, else an object or null"},
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}

STANDARD: dict[str, str] = {
    "400": "The request could not be read: malformed JSON, an invalid Content-Length",
    "401": "No API key or token, or a wrong one (`WWW-Authenticate: Bearer`)",
    "403": "The caller lacks the scope the operation needs (named in the message and `details.scope`)",
    "404": "No such resource for this caller (a département it is not granted answers 404 too)",
    "413": "The body is over the size limit",
    "415": "The body's Content-Type is not the one the operation takes",
    "422": "Invalid input: `details` lists each field (`loc`), what is wrong (`msg`) and its type",
    "429": "Too many requests from this client, or too many refused attempts from its address (`Retry-After`)",
    "503": "The database is busy or unreachable: nothing was recorded (`Retry-After`)",
}

# What each operation does, for the people who integrate it (French where the users are Département staff).
DESCRIPTIONS: dict[str, str] = {
    "GET /health": "Liveness: the process answers. Never touches the database.",
    "GET /ready": "Readiness: the database answers within `PASSERELLE_READY_TIMEOUT_SECONDS` (1.5 s by default), "
    'is at the latest migration and its audit journal is there: 200 `{"status": "ready"}`, else 503 with '
    "the reason in `database`. No authentication; never more than the reason.",
    "GET /api/v1/me": "Who the caller is: client or person, scopes, départements, agent headers understood.",
    "GET /api/v1/admin/clients": "API clients of the caller's départements (scope `admin`): names, scopes, "
    "creation and revocation dates; never a key.",
    "POST /api/v1/flux": "Ingest one CAF/MSA flux file (multipart `file`, XML or gzip), as the CNAF writes it. "
    "The whole file is applied in one transaction or rejected whole (quarantined, with its report). "
    "A file already received answers 200 `duplicate`. Every file is an audit event.",
    "GET /api/v1/flux": "Flux files received for the caller's départements, newest first, with their status.",
    "GET /api/v1/flux/{file_id}": "One flux file's report: counts, warnings, rejection reason and position.",
    "GET /api/v1/persons/{person_id}": "A person's identity, current state and dated history (each fact with "
    "the file that brought it). Recorded in the audit trail with the caller, agent and purpose.",
    "POST /api/v1/persons/search": "Find persons by NIR (13 or 15 characters) and birth date, or by "
    "organisme, matricule and role. A search that finds nobody is recorded too.",
    "POST /api/v1/persons/{person_id}/events": "Record an orientation-platform event (invitation, RDV, "
    "orientation, contract...). Idempotent on `external_id`; `supersedes` corrects an earlier event. On SQLite, "
    "while a CAF/MSA file is being applied (it holds the one writer for its whole transaction), the event is "
    "checked (422 and 404 at once), kept aside durably and answered 202 with a `Location` "
    "(`GET /api/v1/events/queued/{id}`); it is applied right after the file, in arrival order, through this same "
    'path (docs/decisions.md, "Events during a file on SQLite"). PostgreSQL always applies at once.',
    "GET /api/v1/events/queued/{queued_id}": "The state of an event answered 202 while a file was applied: "
    "`queued`, then `applied` (`status_code` 201, or 200 when it was known already, and the event as the 201 "
    "answer gives it) or `refused` (`status_code` and the `error` body the 201 path would have answered, e.g. 409 "
    "for an external_id used by another event, 404 for a person gone). Same scope as the post.",
    "GET /api/v1/persons/{person_id}/episodes": "The person's entry episodes (nouvel entrant) with T0, the "
    "15-day deadline and the outcome, as of a date (annex 4 of the convention); the legal deadline of CASF art. "
    "D.262-65-2 (`legal_clock`: ouverture_droit, transfert_droit or null; `legal_clock_reason`, why, either way; "
    "`legal_deadline`: reception + 42 days, the first day France Travail may orient; "
    "`oriented_within_six_weeks`); for an oriented episode, its orientations and the contrat d'engagement's "
    "deadline (`contract_deadline`, `contract_signed_on`).",
    "GET /api/v1/worklist": "Persons waiting for an orientation, oldest T0 first (or `sort=legal_deadline`), with "
    "the days left before the 15-day deadline and the legal deadline's flag (proche, depassee); filters by "
    "département, commune, organisme, overdue only and legal deadline past or near.",
    "GET /api/v1/worklist/contrats": "Persons oriented (since 2025) without a contrat d'engagement answering "
    "their latest orientation, by contract deadline (the orientation + 1 month, Code du travail art. D.5411-14-1; "
    "a re-orientation restarts it), flagged near (PASSERELLE_CONTRACT_DEADLINE_WARNING_DAYS) or past; as of a "
    "date; `format=csv` for a spreadsheet. Every person listed is recorded in the audit trail.",
    "GET /api/v1/worklist/transition-ce": "Persons accompanied before 1 January 2025 (initial stock, orientation "
    "or référent) still in droits et devoirs and followed, without a contrat d'engagement on as_of, with the "
    "transition deadline (PASSERELLE_CE_TRANSITION_DEADLINE); `format=csv`. Audited.",
    "GET /api/v1/persons/{person_id}/france-travail": "What France Travail said of the person (identity, statut, "
    "diagnostic, orientation), from the stored snapshots; no call is made.",
    "POST /api/v1/persons/{person_id}/france-travail/refresh": "Call France Travail now (recherche usager, "
    "statut, diagnostic) for the person and store the answers.",
    "POST /api/v1/persons/{person_id}/france-travail/diagnostics": "Record a diagnostic at France Travail "
    "for the person (diagnostic argumenté, enregistrement).",
    "GET /api/v1/exports/download/{token}": "The weekly file a download link (e-mailed to France Travail) "
    "points at: CSV `;`, UTF-8 with BOM. The link is the credential: it expires, may be single-use, and "
    "every download is recorded.",
    "GET /api/v1/exports": "Weekly files published for France Travail, with their links and downloads.",
    "POST /api/v1/exports/weekly": "Build and publish a département's weekly files (flux and pilotage) for a "
    "week, e-mailing the links; unchanged files are not sent twice unless `resend`.",
    "POST /api/v1/exports/{export_id}/revoke": "Revoke every link of a weekly file: it can no longer be downloaded.",
    "POST /api/v1/ft-return-files": "Load France Travail's weekly return file (CSV as France Travail writes "
    "it) and match its rows to our persons.",
    "GET /api/v1/audit/accesses": "Auditors (scope `audit:read`): search the accesses to personal data by "
    "person, client, agent, period (days in Europe/Paris), action and outcome, with each event's outcome and "
    "detail; refused and missing accesses (401, 403, 404, 429, refused links and signatures) are counted per "
    "caller or address and minute (`detail.count`); `departement=*` for the events of no one département "
    "(a file rejected before its département was read, anonymous callers). Times in Europe/Paris with their "
    "offset; `format=csv` for a spreadsheet (oui/non). Audited itself.",
    "GET /api/v1/audit/persons/{person_id}": "Who accessed this person's data: each client and agent, how often, "
    "first and last time, what they did. Audited itself.",
    "GET /api/v1/pilotage/orientation": "The orientation indicator of annex 4: nouveaux entrants of the period "
    "by T0, oriented within 15 days and one month, delays; as of a date, reproducible.",
    "GET /api/v1/pilotage/tables": "Les tables de pilotage : leur nom (pour l'URL) et leur titre.",
    "GET /api/v1/pilotage/tables/{table}": "Une table de pilotage pour une période (`periode` : 2024-03, 2024-W10, "
    "2024-T1, 2024 ; ou `from` et `to`) et une date `as_of` (seuls les faits datés de ce jour ou avant comptent : la "
    "même table redemandée plus tard est identique), avec ses ventilations (`par`, toutes par défaut : organisme, "
    "structure, type de parcours, accompagnement global, CAF/MSA, commune, territoire, tranche d'âge, sexe, rôle). "
    "JSON, ou CSV en format long (une ligne par chiffre et valeur de ventilation ; `;`, UTF-8 avec BOM, virgule "
    "décimale et dates jj/mm/aaaa en `locale=fr`, point et ISO en `locale=c`), nommé par la table, la période "
    "et la date.",
    "GET /api/v1/pilotage/extract": "The pseudonymised extract for analysis, streamed: one line per entry episode "
    "(CSV `;` with BOM, or JSON lines), with a pseudonymous id stable for one `PASSERELLE_EXTRACT_KEY` (extracts "
    "made with the same key join on it, not with another key), birth month, sex, commune, role, CAF/MSA, each "
    "step's date, organisme référent, parcours and France Travail status; no name, NIR, address, exact birth "
    "date or contact. Recorded in the audit trail.",
    "GET /api/v1/pilotage/absents-rdv/personnes": "Les rendez-vous d'orientation et d'accompagnement manqués "
    "(absent) ou excusés datés dans la période (`periode`, ou `from` et `to`), connus au `as_of` (seuls les "
    "événements datés de ce jour ou avant ; un événement corrigé ne compte plus), par personne : type de "
    "rendez-vous, date, structure, excusé ou non, revu depuis (date du premier rendez-vous honoré ensuite). Pour "
    "vérifier un dossier de sanction (décret du 30 mai 2025, après que la personne a été entendue) : rien "
    "d'automatique, rien n'est envoyé. Données nominatives : scope persons:read, chaque personne listée est "
    "inscrite au journal des accès. JSON ou CSV (`;`, UTF-8 avec BOM, dates jj/mm/aaaa).",
    "GET /tableau-de-bord": "Le tableau de bord du Département, en français (HTML rendu par le serveur, sans "
    "script) : nouveaux entrants du mois, taux d'orientation en 15 jours et en un mois face à l'objectif, délais, "
    "personnes en attente par ancienneté, absents au rendez-vous, calendrier des fichiers CAF/MSA, statuts France "
    "Travail ; chaque graphique suivi de son tableau. `mois=AAAA-MM` (défaut : ce mois), `as_of=AAAA-MM-JJ`.",
    "POST /api/v1/events": "Record an orientation-platform event for a person named as the CAF/MSA files name "
    "them: `nir` (13 or 15 characters, and `date_naissance` if known) or `matricule` and `role`. A known "
    "person: 201 (or 200 when the same external_id, or the same content, is recorded already), as "
    "`POST /persons/{id}/events` answers. A person no flux has brought yet: 202, the event is kept aside "
    "(encrypted) and applied with its own date when a flux brings them; `Location` gives its state.",
    "GET /api/v1/events/pending": "Events kept aside while their person is not known, for the caller's "
    "départements (`status`: pending, applied, dropped); never the person reference.",
    "GET /api/v1/events/pending/{pending_id}": "The state of an event kept aside: pending (and why), applied "
    "(with the person and event ids) or dropped (with the reason).",
    "GET /api/v1/webhooks/rdv-insertion/unmatched": "RDV-Insertion webhook items whose person is not (yet) "
    "known here, for the caller's départements.",
    "POST /api/v1/webhooks/rdv-insertion/{departement}": "RDV-Insertion's webhooks, as it signs them "
    "(`X-Rdvi-Signature`, HMAC-SHA256 of the raw body with the département's secret). Deliveries are kept "
    "encrypted and applied idempotently.",
}

BODY_EXAMPLES: dict[str, Any] = {
    "POST /api/v1/persons/search": {"nir": "1850799123456", "date_naissance": "1985-07-01"},
    "POST /api/v1/persons/{person_id}/events": {
        "type": "orientation",
        "date": "2024-03-12",
        "organisme": "FRANCE_TRAVAIL",
        "type_parcours": "professionnel",
        "external_id": "plateforme:orientation:8812",
    },
    "POST /api/v1/events": {
        "person": {"nir": "1850799123456", "date_naissance": "1985-07-01"},
        "event": {
            "type": "orientation",
            "date": "2024-03-12",
            "organisme": "FRANCE_TRAVAIL",
            "type_parcours": "professionnel",
            "external_id": "plateforme:orientation:8813",
        },
    },
    "POST /api/v1/persons/{person_id}/france-travail/diagnostics": {
        "codeAppellation": "12345",
        "codeRome": "K2204",
        "codeTypologie": "PRO",
        "codeSousTypologie": "PRO-1",
        "idMetierChiffre": "e3b0c44298fc1c149afbf4c8996fb924",
    },
    "POST /api/v1/exports/weekly": {"departement": "055", "week": "2024-W10", "resend": False},
    "POST /api/v1/webhooks/rdv-insertion/{departement}": {
        "data": {"id": 42, "status": "seen", "users": []},
        "meta": {"model": "Rdv", "event": "updated", "timestamp": "2024-03-12T10:00:00+01:00"},
    },
}
MULTIPART_EXAMPLE = {"file": "(the file's bytes)"}


# What the service checks in its headers (app.api.deps.authenticate, app.security.auth.parse_agent): at least
# one character that is not a space (HTTP drops the spaces around a header's value, and the service reads
# what is left, trimmed of any white space, a no-break space too: a value of spaces only is refused), no control
# character; no '|' for agents.
_PURPOSE = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f\x85\xa0][^\x00-\x1f\x7f]*$"
_AGENT = r"^[^\x00-\x1f\x7f|]*[^\x00-\x20\x7f\x85\xa0|][^\x00-\x1f\x7f|]*$"
HEADER_RULES = {
    "x-purpose": {"type": "string", "pattern": _PURPOSE, "minLength": 1, "maxLength": 200},
    "x-agent-identifiant": {"type": "string", "pattern": _AGENT, "minLength": 1, "maxLength": 100},
    "x-agent-nom": {"type": "string", "pattern": _AGENT, "minLength": 1, "maxLength": 100},
    "x-agent-prenom": {"type": "string", "pattern": _AGENT, "minLength": 1, "maxLength": 100},
}
# The three agent headers go together (app.security.auth.parse_agent): all three or none. OpenAPI 3 has no way
# to say that of parameters (OAI/OpenAPI-Specification#256, moved to "Moonwalk"; docs/decisions.md, "The
# agent headers"), so each one says it in words, names the other two and carries an example: a generated
# client's documentation shows the rule, and a tool that sends the examples sends the three together.
AGENT_EXAMPLES = {"x-agent-identifiant": "A123456", "x-agent-nom": "Martin", "x-agent-prenom": "Lea"}
AGENT_NOTE = (
    " Send X-Agent-Identifiant, X-Agent-Nom and X-Agent-Prenom together, all three or none: one or two alone "
    "answer 422 `invalid_agent_header`. Values: UTF-8 bytes, 1-100 "
    "characters, no control character, no '|'. The routes that call France Travail need all three "
    "(422 `agent_required` without them)."
)
AGENT_422 = (
    " Also when only one or two of X-Agent-Identifiant, X-Agent-Nom and X-Agent-Prenom are sent "
    "(`invalid_agent_header`: all three or none)."
)


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}
    if headers:
        response["headers"] = headers
    return response


def _body_schemas(op: dict[str, Any], components: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(media type, component schema) of each of the operation's bodies."""
    out = []
    for media, body in op.get("requestBody", {}).get("content", {}).items():
        ref = body.get("schema", {}).get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            out.append((media, components[ref.rsplit("/", 1)[1]]))
    return out


def _statuses(path: str, op: dict[str, Any], components: dict[str, Any]) -> list[str]:
    secured = bool(op.get("security"))
    params = op.get("parameters", [])
    body = op.get("requestBody", {}).get("content", {})
    names_departement = any(p.get("name") == "departement" and p.get("in") == "query" for p in params) or any(
        "departement" in schema.get("properties", {}) for _media, schema in _body_schemas(op, components)
    )
    out = []
    if body:
        out += ["400", "413", "415"]
    if secured:
        out += ["401", "403", "429", "503"]
    if "{" in path or names_departement:
        out.append("404")
    if params or body:
        out.append("422")
    return out


# The probes answer their own bodies, their 503 included (`{"status": "unavailable", "database": ...}`).
PROBES = frozenset({"GET /health", "GET /ready"})

BIGINT_MAX = 2**63 - 1  # the largest id a bigint holds: the bound of every id the API takes


def _integer_bounds(node: Any) -> None:
    """FastAPI writes an integer's bounds as floats (`le=2**63 - 1` became 9.223372036854776e+18, that is
    2**63: a client or a fuzzer sending 2**63 was told it valid and answered 422). Written back as integers."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(bound)
                if isinstance(value, float) and value.is_integer():
                    node[bound] = BIGINT_MAX if int(value) == BIGINT_MAX + 1 else int(value)
        for child in node.values():
            _integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _integer_bounds(child)


def contract(schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    _integer_bounds(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR_SCHEMA
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            key = f"{method.upper()} {path}"
            if key in DESCRIPTIONS:
                op["description"] = DESCRIPTIONS[key]
            for param in op.get("parameters", []):
                rule = HEADER_RULES.get(param.get("name", "").lower()) if param.get("in") == "header" else None
                if rule:
                    param["schema"] = {"anyOf": [rule, {"type": "null"}], "title": param["schema"].get("title")}
                    if param["name"].lower() in AGENT_EXAMPLES:
                        param["description"] = param.get("description", "").rstrip(".") + "." + AGENT_NOTE
                        param["example"] = AGENT_EXAMPLES[param["name"].lower()]
            responses = op.setdefault("responses", {})
            for media, body_schema in _body_schemas(op, components):
                if media == "multipart/form-data":  # a form field is absent or a string: never null
                    for prop in body_schema.get("properties", {}).values():
                        variants = [v for v in prop.pop("anyOf", []) if v.get("type") != "null"]
                        if variants:
                            prop.update(variants[0])
            for status in _statuses(path, op, components):
                given = responses.get(status, {})
                headers = RETRY_AFTER if status in ("429", "503") else None
                if status == "401":
                    headers = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
                responses[status] = _error(given.get("description") or STANDARD[status], headers)
            agent_headers = any(p.get("name", "").lower() in AGENT_EXAMPLES for p in op.get("parameters", []))
            if agent_headers and "422" in responses and "invalid_agent_header" not in responses["422"]["description"]:
                responses["422"]["description"] = responses["422"]["description"].rstrip(".") + "." + AGENT_422
            for status, response in responses.items():
                if key in PROBES:  # their own bodies, 503 included (app/api/health.py)
                    continue
                if int(status) >= 400 and "Error" not in json.dumps(response.get("content", {})):
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                    if status in ("429", "503"):
                        response.setdefault("headers", RETRY_AFTER)
            if any(p.get("name") == "format" for p in op.get("parameters", [])) and "200" in responses:
                responses["200"].setdefault("content", {})["text/csv"] = {
                    "schema": {"type": "string", "description": "`;`, UTF-8 with BOM, CRLF (French Excel)"}
                }
            content = op.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                if media == "application/json" and key in BODY_EXAMPLES:
                    body["example"] = BODY_EXAMPLES[key]
                elif media == "multipart/form-data":
                    body.setdefault("example", MULTIPART_EXAMPLE)
    return schema


def install(app: FastAPI) -> None:
    """Serve the rewritten document at /openapi.json (and to /docs)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(
                get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
