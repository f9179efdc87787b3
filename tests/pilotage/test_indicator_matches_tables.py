"""The annex-4 indicator is a view over the pilotage tables (issue #21): over a generated département, at
three as_of dates, the indicator (JSON and CSV of `/api/v1/pilotage/orientation`, and the terminal table of
the CLI and the demo) and the table `delais-orientation` give the same figures and the same labels for
every breakdown; a person oriented without organisme is the one code `non_precise`, "Non précisé",
everywhere."""

from __future__ import annotations

import csv
import io
import random
from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import select

from app.clock import today
from app.db import get_engine, session_scope
from app.flux.generator import generate
from app.models import EntryEpisode, Person
from app.orientation.episodes import refresh_pending
from app.orientation.service import EventIn, record_event
from app.pilotage.display import print_indicator
from app.pilotage.indicator import TABLE_KEYS
from app.pilotage.labels import NOT_GIVEN, NOT_GIVEN_LABEL, NOT_ORIENTED
from tests.support.factories import ingest

ORGANISMES = ("FRANCE_TRAVAIL", "DEPARTEMENT", "MISSION_LOCALE", "AUTRE")
PARCOURS = ("professionnel", "social", "socio-professionnel")


def _orient(db: Any, pid: int, on: Any, rng: random.Random, n: int) -> None:
    """Every fourth person gets a référent with a structure only (no organisme, no parcours: `non_precise`)."""
    if n % 4 == 0:
        body = {"type": "referent", "date": on, "structure": "Association Le Relais"}
    else:
        body = {
            "type": "orientation",
            "date": on,
            "organisme": rng.choice(ORGANISMES),
            "type_parcours": rng.choice(PARCOURS),
            "accompagnement_global": rng.choice((True, False, None)),
        }
    with session_scope(db, write=True) as s:
        record_event(s, db, s.get(Person, pid), EventIn.model_validate(body), recorded_by="test")


@pytest.fixture
def departement(db, tmp_path):
    """A generated département of 200 foyers over 50 days, two thirds of its nouveaux entrants oriented 0 to
    40 days after their T0 (some after the last as_of: still waiting then)."""
    start = today(db) - timedelta(days=50)
    for f in generate(tmp_path / "gen", 200, 50, start, seed=21):
        stock = f.type_flux == "M" and f.created_on == start
        assert ingest(db, f.path, received_on=f.received_on, initial_stock=stock).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        entrants = s.execute(select(EntryEpisode.person_id, EntryEpisode.t0).order_by(EntryEpisode.id)).all()
    rng = random.Random(21)
    for n, (pid, t0) in enumerate(entrants):
        if n % 3:
            _orient(db, pid, min(t0 + timedelta(days=rng.randint(0, 40)), today(db)), rng, n)
    refresh_pending(get_engine(db))
    return start


def _by_key(figures: list[dict[str, Any]], dimension: str, indicator: str) -> dict[str, tuple[Any, str]]:
    return {
        f["valeur_dimension"]: (f["valeur"], f["libelle_valeur"])
        for f in figures
        if f["dimension"] == dimension and f["indicateur"] == indicator
    }


def _same_breakdowns(ind: dict[str, Any], figures: list[dict[str, Any]]) -> None:
    for name, dimension in (("par_organisme", "organisme"), ("par_type_parcours", "type_parcours")):
        table = {k: v for k, v in _by_key(figures, dimension, "orientes").items() if k != NOT_ORIENTED and v[0]}
        assert {r[dimension]: (r["orientes"], r["libelle"]) for r in ind[name]} == table, name
        for indicator in ("orientes_15j", "delai_moyen_jours"):
            values = _by_key(figures, dimension, indicator)
            assert {r[dimension]: r[indicator] for r in ind[name]} == {k: values[k][0] for k in table}
    caf_msa = _by_key(figures, "caf_msa", "nouveaux_entrants")
    assert {r["caf_msa"]: (r["nouveaux_entrants"], r["libelle"]) for r in ind["par_caf_msa"]} == caf_msa
    ag = _by_key(figures, "accompagnement_global", "orientes")
    assert ind["orientes_accompagnement_global"] == ag.get("oui", (0, ""))[0]


@pytest.mark.slow
def test_the_indicator_and_the_table_delais_orientation_say_the_same(client, db, make_api_key, departement):
    key = make_api_key(["pilotage:read"])
    h = {"X-API-Key": key}
    last = today(db)
    seen_not_given = False
    for as_of in (departement + timedelta(days=20), departement + timedelta(days=35), last):
        params = {"from": departement.isoformat(), "to": last.isoformat(), "as_of": as_of.isoformat()}
        ind = client.get("/api/v1/pilotage/orientation", headers=h, params=params).json()
        table = client.get("/api/v1/pilotage/tables/delais-orientation", headers=h, params=params).json()
        figures = table["figures"]
        whole = {f["indicateur"]: f["valeur"] for f in figures if f["dimension"] == "ensemble"}
        assert {k: ind[k] for k in TABLE_KEYS} == {k: whole[k] for k in TABLE_KEYS}, as_of
        assert ind["nouveaux_entrants"] > 0 and ind["en_attente"] > 0
        if as_of == last:
            assert ind["orientes"] >= 10 and len(ind["par_organisme"]) >= 4
        _same_breakdowns(ind, figures)
        # the indicator's CSV is the table in long form, with the same codes and labels
        text = client.get("/api/v1/pilotage/orientation", headers=h, params={**params, "format": "csv"}).content.decode(
            "utf-8-sig"
        )
        rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
        organismes = {r["valeur_dimension"]: r["libelle_valeur"] for r in rows if r["dimension"] == "organisme"}
        assert organismes == {
            f["valeur_dimension"]: f["libelle_valeur"] for f in figures if f["dimension"] == "organisme"
        }
        assert "AUTRE" not in organismes or organismes["AUTRE"] == "Autre"
        if any(r["organisme"] == NOT_GIVEN for r in ind["par_organisme"]):
            seen_not_given = True
            assert organismes[NOT_GIVEN] == NOT_GIVEN_LABEL
            shown = Console(width=200, record=True, file=io.StringIO())
            print_indicator(ind, shown)  # the CLI's and the demo's table
            assert NOT_GIVEN_LABEL in shown.export_text()
    assert seen_not_given  # the scene has persons oriented without organisme
