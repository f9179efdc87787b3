"""Issue #25, item 2 and item 5: `ft sync` reads France Travail's own orientations (lectureOrientation, its own
token) and records them as dated facts; a DECIDE orients the episode ("orienté par France Travail"), a
PRECONISE is shown only; 204; a scope France Travail has not provisioned blocks only this API; re-reading
records nothing new; the order of arrival changes no episode; the categories F and G in the statut table.
Real HTTP to the fake France Travail (a separate process), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.api.orientation import _episode_out, _event_out
from app.clients.france_travail import FranceTravailClient
from app.clock import today
from app.db import get_engine, session_scope
from app.exports.weekly import PILOTAGE_COLUMNS, pilotage_rows
from app.france_travail import mapping
from app.france_travail.fake import FakeState
from app.france_travail.fake.answers import ft_orientation, statut_answer
from app.france_travail.outbox import enqueue_orientation
from app.france_travail.sync import SyncOptions, run_sync
from app.models import EntryEpisode, FtCall, FtOutboxItem, FtSnapshot, OrientationEvent, Person
from app.orientation.episodes import refresh_pending
from app.orientation.service import EventIn, record_event
from app.orientation.worklist import worklist_page
from app.pilotage.period import Period
from app.pilotage.tables import compute
from app.security.nir import NirProtector
from app.settings import Settings
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, person, write_flux
from tests.support.ftsupport import FAKE_SEED, cli_env, faults, ft_settings, passerelle


def _nir13(settings: Settings, person_id: int) -> str:
    with session_scope(settings) as s:
        p = s.get(Person, person_id)
        assert p is not None and p.nir_encrypted
        return NirProtector(settings.encryption_keys, settings.hmac_key).decrypt(p.nir_encrypted)[:13]


def _says(fake: str, settings: Settings, person_id: int, orientations: list[dict[str, Any]] | None) -> None:
    """What the fake's lectureOrientation answers for the person (None: 204)."""
    body = {"nir13": _nir13(settings, person_id), "orientations": orientations}
    httpx.post(f"{fake}/_fake/orientations", json=body, timeout=5).raise_for_status()


def _certified_nirs(n: int, want: tuple[str, ...] = ()) -> list[str]:
    """n fictitious NIRs the fake (seed 3) knows and certifies; with `want`, the first ones in these categories
    (in that order) and the others in category 1, each with a statut answered."""
    state, found, wanted = FakeState(seed=FAKE_SEED), [], list(want)
    for k in range(100000):
        nir = f"1900555{k:06d}"
        if state.kind(nir) != "certified" or nir in found:
            continue
        answer = statut_answer(state, nir)
        categ = json.loads(answer.body)["m_contrat"]["m_categ_inscription_code"] if answer.status_code == 200 else None
        if wanted:
            if categ == wanted[0]:
                found.append(nir)
                wanted.pop(0)
            continue
        if want and categ != "1":
            continue  # with categories asked for, the others are in category 1
        found.append(nir)
        if len(found) == n:
            return found
    raise AssertionError("not enough NIRs")


def _entrants(settings: Settings, tmp_path: Any, n: int, days_ago: int = 60, want: tuple[str, ...] = ()) -> list[
    tuple[int, date]
]:  # fmt: skip
    """n nouveaux entrants received `days_ago` days ago in one daily file, each certified at the fake France
    Travail: (person, T0), in the order of their NIRs."""
    t0 = today(settings) - timedelta(days=days_ago)
    nirs = _certified_nirs(n, want)
    foyers = [
        foyer(person(nir, nom=f"NOM{k}", dtnai=date(1980 + k % 20, 1 + k % 12, 10)), matricule=f"{1000 + k:07d}")
        for k, nir in enumerate(nirs)
    ]
    ingest(settings, write_flux(tmp_path, foyers, day=t0), received_on=t0)
    refresh_pending(get_engine(settings))
    protector = NirProtector(settings.encryption_keys, settings.hmac_key)
    with session_scope(settings) as s:
        rows = s.execute(select(EntryEpisode.person_id, EntryEpisode.t0, Person.nir_encrypted).join(
            Person, Person.id == EntryEpisode.person_id)).all()  # fmt: skip
    by_nir = {protector.decrypt(enc)[:13]: (pid, when) for pid, when, enc in rows}
    assert len(by_nir) == n and all(when == t0 for _p, when in by_nir.values())
    return [by_nir[nir] for nir in nirs]


def _sync(settings: Settings) -> Any:
    client = FranceTravailClient(settings)
    try:
        summary = run_sync(get_engine(settings), settings, client, SyncOptions("055"))
    finally:
        client.close()
    refresh_pending(get_engine(settings))
    return summary


def _episode(settings: Settings, pid: int) -> EntryEpisode:
    with session_scope(settings) as s:
        ep = s.scalars(select(EntryEpisode).where(EntryEpisode.person_id == pid).order_by(EntryEpisode.rank)).one()
        s.expunge(ep)
        return ep


def _ft_rows(settings: Settings, pid: int | None = None) -> list[OrientationEvent]:
    with session_scope(settings) as s:
        q = select(OrientationEvent).where(OrientationEvent.source == "france_travail")
        if pid is not None:
            q = q.where(OrientationEvent.person_id == pid)
        rows = list(s.scalars(q.order_by(OrientationEvent.id)))
        for r in rows:
            s.expunge(r)
        return rows


@pytest.mark.slow
def test_france_travail_orientations_decided_preconised_none_and_read_again(db, tmp_path, fake):
    faults(fake)
    (a, ta), (b, tb), (c, _tc), (d, td) = _entrants(db, tmp_path, 4)
    later = ft_settings(db, fake)
    # A: France Travail decided a social parcours 45 days after T0 (past the decree's six weeks)
    _says(fake, db, a, [ft_orientation("DECIDE", "PSO", ta + timedelta(days=45), 7)])
    # B: only a préconisation (socio-professionnel), ten days after T0; C: France Travail knows nothing (204)
    _says(fake, db, b, [ft_orientation("PRECONISE", "PSP", tb + timedelta(days=10), 8)])
    _says(fake, db, c, None)
    # D: a decision with a parcours that is none (EO, entretien d'orientation): shown, never orienting
    _says(fake, db, d, [ft_orientation("DECIDE", "EO", td + timedelta(days=20), 9)])

    summary = _sync(later)
    assert summary.orientation_blocked is None and not summary.orientation_errors
    assert summary.definite

    [ra] = _ft_rows(db, a)
    assert (ra.type, ra.ft_statut, ra.ft_parcours, ra.ft_organisme) == ("orientation", "DECIDE", "PSO", "FT")
    assert (ra.type_parcours, ra.organisme) == ("social", "FRANCE_TRAVAIL")  # PSO is social, not socio-pro
    assert ra.event_date == ra.ft_decision_on == ta + timedelta(days=45)
    assert ra.ft_entree_parcours_on == ta + timedelta(days=47)
    assert (ra.ft_code_safir, ra.ft_code_aurore, ra.structure) == ("55007", "A0007", "France Travail Bar-le-Duc")
    ep = _episode(db, a)
    assert (ep.outcome, ep.oriented_by, ep.end_on, ep.delay_days) == ("oriente", "france_travail", ra.event_date, 45)
    assert ep.within_15_days is False and ep.within_one_month is False
    assert ep.type_parcours == "social" and ep.organisme == "FRANCE_TRAVAIL"

    shown = _event_out(ra)  # the person's events (GET /api/v1/persons/{id}/episodes)
    assert shown["source"] == "france_travail" and shown["france_travail"]["libelle"] == "orienté par France Travail"
    assert (shown["france_travail"]["statut"], shown["france_travail"]["date_decision"]) == (
        "DECIDE", ra.event_date.isoformat()
    )  # fmt: skip
    assert _episode_out(ep, today(later))["oriented_by"] == "france_travail"

    [rb] = _ft_rows(db, b)
    assert (rb.ft_statut, rb.ft_parcours, rb.type_parcours, rb.event_date) == (
        "PRECONISE", "PSP", "socio-professionnel", tb + timedelta(days=10)
    )  # fmt: skip
    assert _episode(db, b).outcome == "en_attente"  # a préconisation ends nothing
    assert _event_out(rb)["france_travail"]["libelle"] == (
        f"préconisation France Travail du {rb.event_date:%d/%m/%Y} (parcours socio-professionnel)"
    )
    [rd] = _ft_rows(db, d)
    assert (rd.ft_statut, rd.ft_parcours, rd.type_parcours) == ("DECIDE", "EO", None)
    assert _episode(db, d).outcome == "en_attente"
    assert _ft_rows(db, c) == [] and _episode(db, c).outcome == "en_attente"
    with session_scope(later) as s:  # C's 204 is kept as "no data"
        snap = s.scalars(select(FtSnapshot).where(FtSnapshot.person_id == c, FtSnapshot.kind == "orientation")).one()
        assert snap.no_data is True
        page = worklist_page(s, ["055"], today(later), limit=200)
        texts = {e.person.id: e for e in page.entries}
        from app.orientation.worklist import preconisation_text

        assert preconisation_text(texts[b].ft_preconisation) == (
            f"préconisation France Travail du {rb.event_date:%d/%m/%Y} (parcours socio-professionnel)"
        )
        assert a not in texts and texts[c].ft_preconisation is None
        # France Travail's own orientation is never pushed back to it
        push = later.model_copy(update={"ft_orientation_push": True})
        row = s.get(OrientationEvent, ra.id)
        assert enqueue_orientation(s, push, row) is None
        assert s.scalar(select(func.count()).select_from(FtOutboxItem)) == 0

    # shown as such in the pilotage: A counted among the oriented, and apart as oriented by France Travail
    assert ta == tb == _tc == td
    with get_engine(later).connect() as conn:
        table = compute(conn, "delais-orientation", ["055"], Period(ta, ta, "test"), today(later), ())
    assert (table.value("nouveaux_entrants"), table.value("orientes"), table.value("en_attente")) == (4, 1, 3)
    assert (table.value("orientes_par_france_travail"), table.value("orientes_par_departement")) == (1, 0)
    assert (table.value("orientes_15j"), table.value("orientes_1mois")) == (0, 0)
    # ... and in the weekly pilotage file: ORIENTE_PAR, with France Travail's date and parcours code
    with get_engine(later).connect() as conn:
        rows = [dict(zip(PILOTAGE_COLUMNS, r, strict=True)) for r in pilotage_rows(conn, later, "055", today(later))]
    by_matricule = {r["ID_CAF"]: r for r in rows}
    row_a = by_matricule["0001000"]  # A, the first entrant
    assert (row_a["ORIENTE_PAR"], row_a["DATE_ORIENTATION"], row_a["C_TYPEPARCOURS"]) == (
        "FRANCE_TRAVAIL", f"{ra.event_date:%d/%m/%Y}", "PSO"
    )  # fmt: skip
    assert [by_matricule[f"{1000 + k:07d}"]["ORIENTE_PAR"] for k in (1, 2, 3)] == ["", "", ""]

    # read again: nothing new
    before = len(_ft_rows(db))
    again = _sync(later)
    assert len(_ft_rows(db)) == before and again.orientations == {"unchanged": 3, "none": 1}
    assert "decide" not in again.orientations and "preconise" not in again.orientations

    # B's préconisation becomes a decision 50 days after T0: the DECIDE is recorded beside it and orients B
    _says(
        fake,
        db,
        b,
        [
            ft_orientation("PRECONISE", "PSP", tb + timedelta(days=10), 8),
            ft_orientation("DECIDE", "PSP", tb + timedelta(days=50), 8),
        ],
    )
    third = _sync(later)
    assert third.orientations == {"decide": 1, "unchanged": 3, "none": 1}
    assert [r.ft_statut for r in _ft_rows(db, b)] == ["PRECONISE", "DECIDE"]
    ep = _episode(db, b)
    assert (ep.outcome, ep.oriented_by, ep.delay_days, ep.type_parcours) == (
        "oriente", "france_travail", 50, "socio-professionnel"
    )  # fmt: skip


def _episode_shape(ep: EntryEpisode) -> tuple[Any, ...]:
    return (ep.outcome, ep.oriented_by, ep.end_on - ep.t0, ep.organisme, ep.type_parcours, ep.delay_days)


@pytest.mark.slow
def test_the_same_episodes_whether_france_travail_or_the_platform_came_first(db, tmp_path, fake):
    """D: the platform's orientation first, then France Travail's equal one (not recorded); E: France Travail's
    first (recorded), then the platform's (the rules drop France Travail's copy). F: France Travail decided
    before the platform: France Travail's orients, whichever arrived first (G: the other order)."""
    faults(fake)
    (pd, td), (pe, te), (pf, tf), (pg, tg) = _entrants(db, tmp_path, 4)
    later = ft_settings(db, fake)

    def platform(pid: int, on: date, key: str) -> None:
        event = {"type": "orientation", "organisme": "DEPARTEMENT", "type_parcours": "social", "date": on}
        with session_scope(later, write=True) as s:
            record_event(s, later, s.get(Person, pid), EventIn.model_validate({**event, "external_id": key}),
                         recorded_by="test")  # fmt: skip

    def france_travail(pid: int, t0: date, days: int) -> None:
        _says(fake, db, pid, [ft_orientation("DECIDE", "PSO", t0 + timedelta(days=days), 1, organisme="CD")])

    platform(pd, td + timedelta(days=20), "o-d")
    france_travail(pd, td, 20)
    france_travail(pe, te, 20)
    france_travail(pf, tf, 12)
    platform(pg, tg + timedelta(days=30), "o-g")
    france_travail(pg, tg, 12)
    summary = _sync(later)
    assert summary.orientations["same_as_platform"] == 1
    platform(pe, te + timedelta(days=20), "o-e")
    platform(pf, tf + timedelta(days=30), "o-f")
    refresh_pending(get_engine(later))

    assert _ft_rows(later, pd) == [] and len(_ft_rows(later, pe)) == 1
    d, e = _episode(later, pd), _episode(later, pe)
    assert _episode_shape(d) == _episode_shape(e) == ("oriente", "orientation", timedelta(days=20), "DEPARTEMENT",
                                                      "social", 20)  # fmt: skip
    f, g = _episode(later, pf), _episode(later, pg)
    assert _episode_shape(f) == _episode_shape(g) == ("oriente", "france_travail", timedelta(days=12), "DEPARTEMENT",
                                                      "social", 12)  # fmt: skip


@pytest.mark.slow
def test_an_orientation_scope_not_provisioned_blocks_only_that_api(db, tmp_path, fake):
    (a, ta), _b = _entrants(db, tmp_path, 2)
    later = db
    _says(fake, db, a, [ft_orientation("DECIDE", "PED", ta + timedelta(days=45))])
    faults(fake, refused_scopes=["orientationusager"])
    try:
        env = cli_env(later, fake)
        proc = passerelle("ft", "sync", "--departement", "055", "--json", env=env)
        out, err = proc.communicate(timeout=180)
    finally:
        faults(fake)
    assert proc.returncode == 1, err  # a partial failure, as persons in error
    summary = json.loads(out)
    assert "invalid_scope" in summary["orientation_blocked"] and summary["definite"] is False
    assert "invalid_scope" in err
    assert summary["outcomes"] == {"found": 2} and summary["stopped"] is None  # the others went on
    with session_scope(db) as s:
        statuts = s.scalar(select(func.count()).select_from(FtSnapshot).where(FtSnapshot.kind == "statut"))
        assert statuts == summary["outcomes"]["found"]
        assert s.scalar(select(func.count()).select_from(FtSnapshot).where(FtSnapshot.kind == "orientation")) == 0
        refused = s.scalars(select(FtCall).where(FtCall.api == "orientationusager")).all()
        assert refused and all(c.code == "invalid_scope" and c.outcome == "error" for c in refused)
    assert _ft_rows(db) == [] and _episode(db, a).outcome == "en_attente"


@pytest.mark.slow
def test_a_malformed_orientation_is_a_recorded_error_and_stores_nothing(db, tmp_path, fake):
    faults(fake)
    [(a, ta)] = _entrants(db, tmp_path, 1)
    later = ft_settings(db, fake)
    bad = ft_orientation("DECIDE", "PSO", ta + timedelta(days=45)) | {"parcours": "SOCIAL"}
    _says(fake, db, a, [bad])
    summary = _sync(later)
    assert summary.orientation_errors == {"malformed": 1} and not summary.definite
    assert _ft_rows(db, a) == [] and _episode(db, a).outcome == "en_attente"
    with session_scope(db) as s:
        call = s.scalars(select(FtCall).where(FtCall.person_id == a, FtCall.api == "orientationusager")).one()
        assert (call.code, call.outcome, call.http_status) == ("malformed", "error", 200)
        assert "orientation" not in s.scalars(select(FtSnapshot.kind).where(FtSnapshot.person_id == a)).all()


def test_the_mapping_reads_france_travail_codes_both_ways_and_refuses_bad_shapes():
    day = date(2025, 3, 1)
    for code, ours in (("PED", "professionnel"), ("PSP", "socio-professionnel"), ("PSO", "social")):
        read = mapping.orientation(ft_orientation("DECIDE", code, day))
        assert read["parcours"] == code and read["dateOrientation"] == "2025-03-01"
        from app.france_travail.orientations import PARCOURS

        assert PARCOURS[code] == ours
    assert {v: k for k, v in PARCOURS.items()}["social"] == "PSO"  # social is PSO, never PSP
    camel = {"parcours": "PSP", "statut": "PRECONISE", "dateEntreeParcours": "2025-03-04"}
    assert mapping.orientation(camel)["dateOrientation"] == "2025-03-04"
    for wrong in ({"statut": "DECIDE"}, {"parcours": "PED", "statut": "VALIDE"}, {"parcours": "PED", "statut":
                  "DECIDE", "decision": {"date_decision": "01/03/2025"}}, {"parcours": "PED", "statut": "DECIDE",
                  "structure": "FT"}):  # fmt: skip
        with pytest.raises(mapping.MappingError):
            mapping.orientation(wrong)


@pytest.mark.slow
def test_categories_f_and_g_in_the_statut_table(db, tmp_path, fake):
    faults(fake)
    # eight oriented nouveaux entrants: France Travail answers F for two, G for one, 1 for the others
    entrants = _entrants(db, tmp_path, 8, want=("F", "G", "F"))
    later = ft_settings(db, fake)
    for pid, t0 in entrants:  # oriented by the platform: the table counts the oriented nouveaux entrants
        _says(fake, db, pid, None)
        event = {"type": "orientation", "organisme": "DEPARTEMENT", "type_parcours": "social", "date": t0}
        with session_scope(later, write=True) as s:
            record_event(s, later, s.get(Person, pid), EventIn.model_validate({**event, "external_id": f"o-{pid}"}),
                         recorded_by="test")  # fmt: skip
    summary = _sync(later)
    assert summary.outcomes == {"found": 8}
    t0 = entrants[0][1]
    with get_engine(later).connect() as conn:
        table = compute(conn, "statut-france-travail", ["055"], Period(t0, t0, "test"), today(later), ())
    assert table.value("orientes") == 8
    assert table.value("orientes_categorie_ft", "categorie_ft", "F") == 2
    assert table.value("orientes_categorie_ft", "categorie_ft", "G") == 1
    assert table.value("orientes_categorie_ft", "categorie_ft", "autre") == 5
    with session_scope(later) as s:  # the labels say what F and G are, in French
        from app.pilotage.labels import VALUE_LABELS

        assert "accompagnement social" in VALUE_LABELS["categorie_ft"]["F"]
        assert "attente d'orientation" in VALUE_LABELS["categorie_ft"]["G"]
        snaps = s.scalars(select(FtSnapshot.data).where(FtSnapshot.kind == "statut")).all()
        assert sorted(d["categInscriptionCode"] for d in snaps) == ["1"] * 5 + ["F", "F", "G"]
