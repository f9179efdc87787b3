"""France Travail for one person: search (or reuse a valid jeton), status, diagnostic; store what was said,
dated and never overwritten; show the last known facts (issue #12).

Three steps, so that no database transaction is open while France Travail is called (it may take seconds):

1. `load_refs` reads what the calls need (the NIR decrypted, the birth date, a valid stored jeton);
2. `exchange` calls France Travail (no database), and returns an `Exchange`;
3. `store` writes the identity search, the snapshots that changed and every call's trace, in the caller's
   write transaction, and says what changed.

Outcomes (one per person and exchange): `found` (jeton usable: status and diagnostic fetched), `unknown`
(S002 or 404), `ambiguous` (S003), `not_certified` (found but not certified, and the policy refuses it),
`refused` (R001, R002), `no_nir` (nothing to search with) — all definite; and the errors: `rejected`
(R997: France Travail found our request invalid), `ft_error` (R998 and other answers), `malformed` (an answer
of the wrong form), `unavailable` (retries exhausted, circuit open, deadline passed), `token_refused` (the
token endpoint refused our client: a configuration matter, nobody's fault in particular).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.clients.france_travail import (
    Agent,
    Call,
    FranceTravailClient,
    FranceTravailError,
    FranceTravailUnavailable,
    MalformedAnswer,
    SearchResult,
    TokenRefused,
)
from app.db import one_of
from app.france_travail import mapping as ft_mapping
from app.france_travail.return_file import latest_for_person
from app.models import FtCall, FtIdentity, FtSnapshot, Person
from app.models.base import utcnow
from app.security.nir import NirProtector
from app.settings import Settings

DEFINITE = frozenset({"found", "unknown", "ambiguous", "not_certified", "refused", "no_nir"})
KINDS = ("statut", "diagnostic", "orientation")
SEARCH_OUTCOMES = {"S001": "found", "S002": "unknown", "S003": "ambiguous"}


@dataclass
class PersonRef:
    """What the calls for one person need (read before, used without the database)."""

    id: int
    departement: str
    nir13: str | None
    birth_date: str | None
    jeton: str | None  # a stored jeton still valid, decrypted
    identity_id: int | None  # the search that gave it
    certified: bool | None


@dataclass
class Exchange:
    person_id: int
    departement: str
    outcome: str = "unavailable"
    code: str | None = None
    message: str | None = None
    search: SearchResult | None = None  # a search made now (None: a stored jeton was reused, or none made)
    certified: bool | None = None
    jeton_reused: bool = False
    identity_outcome: str | None = None  # what the search made now said (found, unknown, ambiguous, not_certified)
    fetched: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # kind -> mapped data (None: 204)
    calls: list[Call] = field(default_factory=list)
    # the kinds read on their own (`exchange(separate=...)`) that failed, and why (an OAuth2 error such as
    # `invalid_scope`, `malformed`, an HTTP status): the person's outcome is the other kinds'
    kind_errors: dict[str, str] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)  # ... of which France Travail refuses the API itself (scope)


def load_refs(conn: Connection | Session, settings: Settings, person_ids: list[int]) -> dict[int, PersonRef]:
    """The persons' NIR (decrypted), birth date and latest jeton still valid for `ft_jeton_margin_seconds`."""
    if not person_ids:
        return {}
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    persons = conn.execute(
        select(Person.id, Person.departement_code, Person.nir_encrypted, Person.date_naissance).where(
            one_of(_conn(conn), Person.id, person_ids)
        )
    ).all()
    latest = (
        select(func.max(FtIdentity.id))
        .where(one_of(_conn(conn), FtIdentity.person_id, person_ids))
        .group_by(FtIdentity.person_id)
    )
    identities = {
        row.person_id: row
        for row in conn.execute(
            select(
                FtIdentity.id,
                FtIdentity.person_id,
                FtIdentity.jeton_encrypted,
                FtIdentity.jeton_expires_at,
                FtIdentity.certified,
            ).where(FtIdentity.id.in_(latest))
        )
    }
    valid_after = utcnow() + timedelta(seconds=settings.ft_jeton_margin_seconds)
    refs = {}
    for pid, dep, nir_encrypted, born in persons:
        identity = identities.get(pid)
        jeton = None
        if (
            identity is not None
            and identity.jeton_encrypted
            and identity.jeton_expires_at
            and identity.jeton_expires_at > valid_after
        ):
            jeton = protector.decrypt(identity.jeton_encrypted)
        refs[pid] = PersonRef(
            pid,
            dep,
            protector.decrypt(nir_encrypted) if nir_encrypted else None,
            born.isoformat() if born else None,
            jeton,
            identity.id if jeton and identity is not None else None,
            identity.certified if jeton and identity is not None else None,
        )
    return refs


def _conn(conn: Connection | Session) -> Connection:
    return conn.connection() if isinstance(conn, Session) else conn


def _search(
    client: FranceTravailClient, settings: Settings, ref: PersonRef, agent: Agent, ex: Exchange, deadline: float | None
) -> str | None:
    """Search the person; set the exchange's outcome; return the jeton to use, if any."""
    assert ref.nir13 and ref.birth_date
    found = client.search_by_nir(ref.nir13, ref.birth_date, agent, deadline=deadline, trace=ex.calls)
    ex.search, ex.code, ex.certified, ex.jeton_reused = found, found.code, found.certified, False
    ex.outcome = SEARCH_OUTCOMES[found.code]
    if found.code == "S001" and found.certified is not True and settings.ft_uncertified == "refuse":
        ex.outcome = "not_certified"
    ex.identity_outcome = ex.outcome
    return found.jeton if ex.outcome == "found" else None


def with_identity(
    client: FranceTravailClient,
    settings: Settings,
    ref: PersonRef,
    agent: Agent,
    deadline: float | None,
    steps: Callable[[str, Exchange], None],
) -> Exchange:
    """Find the person's jeton (a stored valid one is reused, otherwise a search), run `steps` with it; a
    jeton refused on the way (expired between search and statut) is searched again, once. France Travail's
    errors become the exchange's outcome; nothing raises."""
    ex = Exchange(ref.id, ref.departement)
    if not (ref.nir13 and ref.birth_date):
        ex.outcome, ex.message = "no_nir", "no NIR or birth date known: nothing to search France Travail with"
        return ex
    try:
        if ref.jeton:
            jeton: str | None = ref.jeton
            ex.outcome, ex.code, ex.certified, ex.jeton_reused = "found", "S001", ref.certified, True
        else:
            jeton = _search(client, settings, ref, agent, ex, deadline)
        if jeton is None:
            return ex
        try:
            steps(jeton, ex)
        except FranceTravailError as exc:
            if exc.status != 401 or isinstance(exc, FranceTravailUnavailable):
                raise
            jeton = _search(client, settings, ref, agent, ex, deadline)  # the jeton expired or was revoked
            if jeton is None:
                return ex
            steps(jeton, ex)
    except FranceTravailUnavailable as exc:
        ex.outcome, ex.code, ex.message = "unavailable", exc.code, str(exc)
    except ft_mapping.MappingError as exc:
        ex.outcome, ex.code, ex.message = "malformed", "malformed", str(exc)
    except FranceTravailError as exc:
        ex.code = exc.code or (f"HTTP{exc.status}" if exc.status else None)
        ex.message = str(exc)
        if isinstance(exc, TokenRefused):
            ex.outcome = "token_refused"
        elif exc.code in ("R001", "R002"):
            ex.outcome = "refused"
        elif exc.code == "R997":
            ex.outcome = "rejected"
        elif isinstance(exc, MalformedAnswer):
            ex.outcome, ex.code = "malformed", "malformed"
        else:
            ex.outcome = "ft_error"
    return ex


def exchange(
    client: FranceTravailClient,
    settings: Settings,
    ref: PersonRef,
    agent: Agent,
    *,
    deadline: float | None = None,
    kinds: Iterable[str] = ("statut", "diagnostic"),
    separate: Iterable[str] = (),
) -> Exchange:
    """Call France Travail for one person (no database): the identity, then each of `kinds`. A kind of
    `separate` fails on its own: France Travail refusing its token (a scope it has not provisioned answers
    `invalid_scope`) or the API (403), or an answer of the wrong form, is noted in `kind_errors` (and
    `blocked`) and the other kinds' answers stand; only France Travail unavailable fails the person."""
    alone = frozenset(separate)

    def steps(jeton: str, ex: Exchange) -> None:
        for kind in kinds:
            if kind in ex.fetched or kind in ex.kind_errors:
                continue
            if kind not in alone:
                ex.fetched[kind] = _fetch(client, kind, jeton, agent, ex.calls, deadline)
                continue
            before = len(ex.calls)
            try:
                ex.fetched[kind] = _fetch(client, kind, jeton, agent, ex.calls, deadline)
            except FranceTravailUnavailable:
                raise
            except (ft_mapping.MappingError, MalformedAnswer) as exc:
                _kind_failed(ex, kind, "malformed", str(exc), before)
            except TokenRefused as exc:
                _kind_failed(ex, kind, exc.error or "token_refused", str(exc), before, blocked=True)
            except FranceTravailError as exc:
                if exc.status == 401:
                    raise  # the jeton expired: searched again (with_identity), this kind asked again
                code = exc.code or (f"HTTP{exc.status}" if exc.status else "error")
                _kind_failed(ex, kind, code, str(exc), before, blocked=exc.status == 403)

    return with_identity(client, settings, ref, agent, deadline, steps)


def _kind_failed(ex: Exchange, kind: str, code: str, message: str, first_call: int, blocked: bool = False) -> None:
    """A separate kind failed: noted on the exchange and on its call's trace (stored in `ft_calls`)."""
    ex.kind_errors[kind] = code[:40]
    if blocked:
        ex.blocked.add(kind)
    for call in ex.calls[first_call:]:
        call.outcome, call.code = "error", code[:40]
    if not ex.message:
        ex.message = f"{kind}: {message}"[:300]


def save_diagnostic(
    client: FranceTravailClient,
    settings: Settings,
    ref: PersonRef,
    agent: Agent,
    body: dict[str, str],
    *,
    deadline: float | None = None,
) -> Exchange:
    """The "enregistrement" of a diagnostic for one person (no database)."""

    def steps(jeton: str, ex: Exchange) -> None:
        answer = client.save_diagnostic(jeton, body, agent, deadline=deadline, trace=ex.calls)
        ex.code = str(answer.get("codeRetour") or "200")[:8]

    return with_identity(client, settings, ref, agent, deadline, steps)


def _fetch(
    client: FranceTravailClient, kind: str, jeton: str, agent: Agent, trace: list[Call], deadline: float | None
) -> dict[str, Any] | None:
    if kind == "statut":
        contrat = client.statut(jeton, agent, deadline=deadline, trace=trace)
        return ft_mapping.statut(contrat) if contrat is not None else None
    if kind == "diagnostic":
        dossier = client.dossier(jeton, agent, deadline=deadline, trace=trace)
        return ft_mapping.diagnostic(dossier) if dossier is not None else None
    read = client.read_orientation(jeton, agent, deadline=deadline, trace=trace)
    return ft_mapping.orientations(read) if read is not None else None


# -- storing -----------------------------------------------------------------------------------------------


def _latest_snapshots(session: Session, person_ids: list[int]) -> dict[tuple[int, str], FtSnapshot]:
    if not person_ids:
        return {}
    latest = (
        select(func.max(FtSnapshot.id))
        .where(one_of(session.connection(), FtSnapshot.person_id, person_ids))
        .group_by(FtSnapshot.person_id, FtSnapshot.kind)
    )
    return {(s.person_id, s.kind): s for s in session.scalars(select(FtSnapshot).where(FtSnapshot.id.in_(latest)))}


def store(
    session: Session, settings: Settings, exchanges: list[Exchange], source: str, agent: Agent
) -> dict[int, dict[str, Any]]:
    """Write what the exchanges brought (in the caller's write transaction). Returns, per person, what
    changed: `{kind: {"avant": ..., "apres": ...}}` for each snapshot that differs from the last one."""
    writer = _Writer(session, NirProtector(settings.encryption_keys, settings.hmac_key), utcnow(), source, agent)
    previous = _latest_snapshots(session, [ex.person_id for ex in exchanges if ex.fetched])
    changes: dict[int, dict[str, Any]] = {}
    calls = []
    for ex in exchanges:
        changed: dict[str, Any] = {}
        identity_id = writer.identity(ex, changed)
        writer.snapshots(ex, identity_id, previous, changed)
        calls.extend(writer.calls(ex))
        changes[ex.person_id] = changed
    session.add_all(calls)
    session.flush()
    return changes


@dataclass
class _Writer:
    """What `store` writes for one exchange, all dated `now` and signed by `source` and `agent`."""

    session: Session
    protector: NirProtector
    now: datetime
    source: str
    agent: Agent

    def identity(self, ex: Exchange, changed: dict[str, Any]) -> int | None:
        """The identity search, with its jeton when kept (its id returned, and noted in `changed`); or
        the error code the search itself was answered with, a fact about the person too."""
        if ex.search is not None:
            identity = self._searched(ex, ex.search)
            self.session.add(identity)
            self.session.flush()
            changed["identite"] = {"code": ex.search.code, "certifiee": ex.search.certified}
            return identity.id
        if ex.outcome in ("refused", "rejected", "ft_error") and ex.code and not ex.jeton_reused:
            self.session.add(
                FtIdentity(
                    person_id=ex.person_id,
                    departement_code=ex.departement,
                    searched_at=self.now,
                    code=ex.code[:8],
                    outcome="refused" if ex.outcome == "refused" else "error",
                    certified=None,
                    source=self.source,
                    agent=self.agent.identifiant,
                )
            )
        return None

    def _searched(self, ex: Exchange, search: SearchResult) -> FtIdentity:
        jeton_kept = ex.identity_outcome == "found" and search.jeton is not None
        return FtIdentity(
            person_id=ex.person_id,
            departement_code=ex.departement,
            searched_at=self.now,
            code=search.code,
            outcome=ex.identity_outcome or "found",
            certified=search.certified,
            jeton_encrypted=self.protector.encrypt(search.jeton) if jeton_kept and search.jeton else None,
            jeton_expires_at=datetime.fromtimestamp(search.jeton_expires_ms / 1000, UTC)
            if jeton_kept and search.jeton_expires_ms
            else None,
            source=self.source,
            agent=self.agent.identifiant,
        )

    def snapshots(
        self,
        ex: Exchange,
        identity_id: int | None,
        previous: dict[tuple[int, str], FtSnapshot],
        changed: dict[str, Any],
    ) -> None:
        """A snapshot of each kind fetched whose content differs from the last one (noted in `changed`)."""
        for kind, data in ex.fetched.items():
            fp = ft_mapping.fingerprint(data)
            before = previous.get((ex.person_id, kind))
            if before is not None and before.fingerprint == fp:
                continue
            self.session.add(
                FtSnapshot(
                    person_id=ex.person_id,
                    departement_code=ex.departement,
                    kind=kind,
                    fetched_at=self.now,
                    no_data=data is None,
                    data=data,
                    fingerprint=fp,
                    identity_id=identity_id,
                )
            )
            changed[kind] = {"avant": before.data if before is not None else None, "apres": data}

    def calls(self, ex: Exchange) -> list[FtCall]:
        """The trace of every call of the exchange."""
        return [
            FtCall(
                at=self.now,
                person_id=ex.person_id,
                departement_code=ex.departement,
                api=call.api,
                operation=call.operation[:40],
                http_status=call.status,
                code=(call.code or "")[:40] or None,
                attempts=call.attempts,
                duration_ms=call.duration_ms,
                outcome=call.outcome,
                source=self.source,
                agent=self.agent.identifiant[:100],
            )
            for call in ex.calls
        ]


# -- reading -----------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def view(session: Session, person_id: int) -> dict[str, Any]:
    """The last known identity, status, diagnostic (and France Travail's orientation) with their dates, and
    the last exchange; nothing is asked of France Travail."""
    identity = session.scalar(
        select(FtIdentity).where(FtIdentity.person_id == person_id).order_by(FtIdentity.id.desc()).limit(1)
    )
    snapshots = _latest_snapshots(session, [person_id])
    last_call = session.scalar(select(FtCall).where(FtCall.person_id == person_id).order_by(FtCall.id.desc()).limit(1))
    confirmed = dict(
        session.execute(
            select(FtCall.api, func.max(FtCall.at))
            .where(FtCall.person_id == person_id, FtCall.outcome == "ok")
            .group_by(FtCall.api)
        ).all()
    )
    apis = {"statut": "contrat-usager", "diagnostic": "diagnosticargumente", "orientation": "orientationusager"}
    out: dict[str, Any] = {
        "identite": {
            "resultat": identity.outcome,
            "codeRetour": identity.code,
            "identiteCertifiee": {True: "Oui", False: "Non"}.get(identity.certified)
            if identity.certified is not None
            else None,
            "rechercheLe": _iso(identity.searched_at),
            "jetonValideJusquau": _iso(identity.jeton_expires_at),
        }
        if identity is not None
        else None,
    }
    for kind in KINDS:
        snap = snapshots.get((person_id, kind))
        out[kind] = (
            {
                "donnees": snap.data,
                "aucuneDonnee": snap.no_data,
                "depuisLe": _iso(snap.fetched_at),
                "verifieLe": _iso(confirmed.get(apis[kind])),
            }
            if snap is not None
            else None
        )

    out["retourFichier"] = latest_for_person(session, person_id)  # France Travail's weekly return file
    out["dernierAppel"] = (
        {
            "le": _iso(last_call.at),
            "api": last_call.api,
            "resultat": last_call.outcome,
            "httpStatus": last_call.http_status,
            "code": last_call.code,
        }
        if last_call is not None
        else None
    )
    return out
