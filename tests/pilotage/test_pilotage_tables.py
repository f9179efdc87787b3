"""The pilotage tables (issue #15) on a hand-computable département, each one reproducible (the same table
for a past period and as-of date after later facts arrived), the CSV read back as French Excel reads it,
the API and the CLI, and the pseudonymised extract. On SQLite and PostgreSQL.

The département: four persons enter the same day D (one file), born on known days:
  A  man,   1990-01-15: orientation rendez-vous D+8 (present), oriented D+10, France Travail, professionnel;
  B  woman, 1999-06-01: orientation rendez-vous D+5 (absent), oriented D+20, Département, social;
  C  woman, 1960-03-10: never oriented;
  D  man,   1985-02-02: oriented D+40 (after the as-of date D+30).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from app.clock import today
from app.db import get_engine, session_scope
from app.models import FtSnapshot
from app.orientation.episodes import refresh_pending
from app.pilotage.tables import TABLES, Period, compute
from tests.support.cli import run_cli
from tests.support.factories import ingest, ingest_generated
from tests.support.fluxbuilder import foyer, write_flux
from tests.support.pilotage_scene import BORN, NIRS, record, scene_person


def _table(db, scene, name, **kw):
    with get_engine(db).connect() as conn:
        return compute(conn, name, ["055"], kw.pop("period", scene["period"]), kw.pop("as_of", scene["as_of"]), **kw)


def test_each_table_gives_the_hand_computed_figures(db, scene):
    t = _table(db, scene, "nouveaux-entrants")
    assert t.value("nouveaux_entrants") == 4
    assert (t.value("nouveaux_entrants", "sexe", "1"), t.value("nouveaux_entrants", "sexe", "2")) == (2, 2)
    assert {k: v for _i, dim, k, v in t.figures if dim == "tranche_age"} == {
        "25-29 ans": 1, "30-39 ans": 1, "40-49 ans": 1, "60 ans et plus": 1}  # fmt: skip
    assert t.value("nouveaux_entrants", "organisme", "non_oriente") == 2  # C waits, D oriented after as_of
    assert t.value("nouveaux_entrants", "role", "DEM") == 4

    t = _table(db, scene, "delais-orientation")
    assert [t.value(k) for k in ("nouveaux_entrants", "orientes", "orientes_15j", "taux_15j", "orientes_1mois",
                                 "taux_1mois", "delai_moyen_jours", "delai_median_jours", "en_attente",
                                 "sortis_avant_orientation")] == [4, 2, 1, 0.25, 2, 0.5, 15.0, 15, 2, 0]  # fmt: skip
    histogram = {int(k): v for i, dim, k, v in t.figures if i == "orientes_par_delai"}
    assert histogram[10] == 1 and histogram[20] == 1 and sum(histogram.values()) == 2 and len(histogram) == 21
    assert t.value("en_attente_par_anciennete", "anciennete", "16-30 jours") == 2
    assert t.value("taux_15j", "organisme", "FRANCE_TRAVAIL") == 1.0
    assert t.value("delai_moyen_jours", "type_parcours", "social") == 20

    t = _table(db, scene, "absents-rdv")
    assert [t.value(k) for k in ("orientes", "avec_rdv_orientation", "absents_rdv_orientation", "taux_absence_rdv")] \
        == [2, 2, 1, 0.5]  # fmt: skip
    assert t.value("absents_rdv_orientation", "sexe", "2") == 1

    t = _table(db, scene, "transmission")
    assert (t.value("fichiers_recus"), t.value("jours_de_reception")) == (1, 1)
    assert t.value("dernier_fichier_recu") == scene["d"].isoformat() and t.value("ecart_median_jours") is None

    t = _table(db, scene, "stock-oarsa", period=Period.parse(None, scene["d"], scene["as_of"]))
    assert [t.value(k) for k in ("soumis_droits_devoirs", "orientes_stock", "non_orientes_stock")] == [4, 2, 2]
    assert t.value("orientes_stock", "organisme", "DEPARTEMENT") == 1

    t = _table(db, scene, "completude-volet3")
    assert t.value("nouveaux_entrants") == 4
    shares = {k: v for i, dim, k, v in t.figures if i == "part_renseignee"}
    assert shares["date_entree"] == 1.0 and shares["identifiant_rsa"] == 1.0 and shares["date_ouverture_droit"] == 1.0
    assert shares["date_rdv_orientation"] == 0.5 and shares["type_parcours"] == 0.5 and shares["identifiant_ft"] == 0

    t = _table(db, scene, "statut-france-travail")
    assert t.value("orientes") == 2
    assert t.value("orientes_statut_ft", "statut_ft", "Inscrit") == 1
    assert t.value("orientes_statut_ft", "statut_ft", "non_interroge") == 1
    assert t.value("orientes_statut_ft", "type_parcours", "professionnel|Inscrit") == 1


def test_every_table_is_the_same_after_later_facts_arrive(db, scene, tmp_path):
    before = {name: _table(db, scene, name).as_dict() for name in TABLES}
    d = scene["d"]
    # later facts: C oriented at D+35, a France Travail answer for B today, a new person E received at D+45
    record(db, scene["ids"]["C"], type="orientation", date=d + timedelta(days=35), organisme="CCAS",
           type_parcours="social", external_id="o-c")  # fmt: skip
    with session_scope(db, write=True) as s:
        s.add(FtSnapshot(person_id=scene["ids"]["B"], departement_code="055", kind="statut",
                         data={"statutDE": "Radié"}, fingerprint="b"))  # fmt: skip
    later = tmp_path / "later"
    later.mkdir()
    e = d + timedelta(days=45)
    assert ingest(db, write_flux(later, [foyer(scene_person("E"), matricule="0000009")], day=e), received_on=e).status \
        == "applied"  # fmt: skip
    refresh_pending(get_engine(db))
    after = {name: _table(db, scene, name).as_dict() for name in TABLES}
    for name in TABLES:
        assert after[name] == before[name], name
    # ... and the same tables asked today do see the later facts
    today_view = _table(db, scene, "delais-orientation", as_of=today(db))
    assert today_view.value("orientes") == 4


def _french_rows(content: bytes) -> list[dict[str, str]]:
    assert content.startswith(b"\xef\xbb\xbf"), "a BOM for French Excel"
    text = content.decode("utf-8-sig")
    assert text.count("\r\n") == text.count("\n"), "one line ending: CRLF"
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))


def test_csv_long_form_french_and_machine_through_the_api_and_the_cli(db, scene, client, make_api_key, monkeypatch):
    key = make_api_key(["pilotage:read"])
    d, as_of = scene["d"], scene["as_of"]
    url = (f"/api/v1/pilotage/tables/delais-orientation?from={d}&to={d + timedelta(days=1)}&as_of={as_of}"
           "&format=csv")  # fmt: skip
    r = client.get(url, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == (
        f'attachment; filename="pilotage_delais-orientation_{d}_{d + timedelta(days=1)}_au_{as_of}.csv"'
    )
    rows = _french_rows(r.content)
    rate = next(x for x in rows if x["indicateur"] == "taux_15j" and x["dimension"] == "ensemble")
    # issue #26: a percentage in the French CSV, its numerator and denominator beside it (1 of the 4)
    assert rate["valeur"] == "25,00 %" and rate["libelle_indicateur"] == "Taux d'orientation en 15 jours"
    assert (rate["numerateur"], rate["denominateur"]) == ("1", "4")
    assert rate["as_of"] == as_of.strftime("%d/%m/%Y")
    by_sex = {x["libelle_valeur"]: x["valeur"] for x in rows if x["indicateur"] == "nouveaux_entrants"
              and x["dimension"] == "sexe"}  # fmt: skip
    assert by_sex == {"Homme": "2", "Femme": "2"}
    assert float(rate["valeur"].removesuffix(" %").replace(",", ".")) == 25.0  # what French Excel reads
    machine = _french_rows(client.get(url + "&locale=c", headers={"X-API-Key": key}).content)
    machine_rate = next(x for x in machine if x["indicateur"] == "taux_15j")
    assert (machine_rate["valeur"], machine_rate["numerateur"], machine_rate["denominateur"]) == ("0.25", "1", "4")
    assert next(x for x in machine if x["indicateur"] == "nouveaux_entrants")["numerateur"] == ""
    assert next(x for x in machine if x["indicateur"] == "taux_15j")["as_of"] == as_of.isoformat()
    as_json = client.get(url.replace("&format=csv", ""), headers={"X-API-Key": key}).json()
    assert len(as_json["figures"]) == len(rows) and as_json["titre"].startswith("Délais")
    cli = run_cli(db, monkeypatch, "pilotage", "table", "delais-orientation", "--from", d,
                  "--to", d + timedelta(days=1), "--as-of", as_of, "--format", "csv")  # fmt: skip
    assert cli.exit_code == 0 and cli.stdout_bytes == r.content  # the same bytes as the API's
    shown = run_cli(
        db, monkeypatch, "pilotage", "table", "delais-orientation", "--from", d, "--to", d, "--as-of", as_of
    )
    assert "Taux d'orientation en 15 jours" in shown.stdout and "25,0 %" in shown.stdout
    assert "taux_15j" not in shown.stdout and "orientes_15j" not in shown.stdout
    bad = client.get("/api/v1/pilotage/tables/delais-orientation?periode=2024-13", headers={"X-API-Key": key})
    assert bad.status_code == 422 and "periode" in bad.json()["message"]
    unknown = client.get("/api/v1/pilotage/tables/nope?periode=2024-03", headers={"X-API-Key": key})
    assert unknown.status_code == 422
    assert run_cli(db, monkeypatch, "pilotage", "table", "nope", "--periode", "2024-03").exit_code == 2


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2024-03", date(2024, 3, 1), date(2024, 3, 31)), ("2024-W10", date(2024, 3, 4), date(2024, 3, 10)),
    ("2024-T1", date(2024, 1, 1), date(2024, 3, 31)), ("2024-q4", date(2024, 10, 1), date(2024, 12, 31)),
    ("2024", date(2024, 1, 1), date(2024, 12, 31)), ("2024-02", date(2024, 2, 1), date(2024, 2, 29)),
])  # fmt: skip
def test_periods(text, start, end):
    period = Period.parse(text)
    assert (period.start, period.end) == (start, end)


def test_the_extract_is_pseudonymised_stable_per_key_and_audited(db, scene, client, make_api_key):
    from app.models import AccessRecord

    key = make_api_key(["pilotage:read"])
    url = f"/api/v1/pilotage/extract?from={scene['d']}&to={scene['d']}&as_of={scene['as_of']}"
    first = client.get(url, headers={"X-API-Key": key})
    assert first.status_code == 200 and first.headers["content-disposition"].endswith('.csv"')
    rows = _french_rows(first.content)
    assert len(rows) == 4 and rows[0]["mois_naissance"] in {"1990-01", "1999-06", "1960-03", "1985-02"}
    text = first.content.decode("utf-8-sig")
    for name in "ABCD":
        assert NIRS[name] not in text and f"NOM{name}" not in text and f"PRENOM{name}" not in text
        assert BORN[name].isoformat() not in text
    from app.pilotage.extract import pseudonym

    assert {r["id_pseudo"] for r in rows} == {pseudonym(db.extract_key_bytes, scene["ids"][n]) for n in "ABCD"}
    again = _french_rows(client.get(url, headers={"X-API-Key": key}).content)
    assert {r["id_pseudo"] for r in again} == {r["id_pseudo"] for r in rows}  # same key: they join
    lines = client.get(url + "&format=jsonl", headers={"X-API-Key": key}).text.splitlines()
    assert {json.loads(x)["id_pseudo"] for x in lines} == {r["id_pseudo"] for r in rows}
    from fastapi.testclient import TestClient

    from app.main import create_app

    other_key = db.model_copy(update={"extract_key": __import__("pydantic").SecretStr("b" * 43)})
    with TestClient(create_app(other_key)) as c:
        other = _french_rows(c.get(url, headers={"X-API-Key": key}).content)
    assert not {r["id_pseudo"] for r in other} & {r["id_pseudo"] for r in rows}  # another key: no join
    oriented = [r for r in rows if r["issue"] == "oriente"]
    assert sorted(r["delai_jours"] for r in oriented) == ["10", "20"]
    with session_scope(db) as s:
        assert s.scalar(select(AccessRecord.id).where(AccessRecord.action == "pilotage.extract")) is not None


def test_commune_names_and_territories_from_the_departements_table(db, scene, client, make_api_key, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    key = make_api_key(["pilotage:read"])
    url = f"/api/v1/pilotage/tables/nouveaux-entrants?from={scene['d']}&to={scene['d']}&as_of={scene['as_of']}"
    plain = client.get(url + "&par=commune", headers={"X-API-Key": key}).json()
    (verdun,) = [f for f in plain["figures"] if f["dimension"] == "commune"]
    assert (verdun["valeur_dimension"], verdun["libelle_valeur"]) == ("55545", "Verdun")  # from the CAF file
    assert not [f for f in plain["figures"] if f["dimension"] == "territoire"]  # no table loaded: no territory
    table = tmp_path / "communes.csv"
    table.write_text("\ufeffcode_insee;nom;territoire\n55545;Verdun (ville-centre);Nord meusien\n", encoding="utf-8")
    with TestClient(create_app(db.model_copy(update={"communes_file": table}))) as c:
        loaded = c.get(url, headers={"X-API-Key": key}).json()
        names = {f["libelle_valeur"] for f in loaded["figures"] if f["dimension"] == "commune"}
        territories = {f["valeur_dimension"]: f["valeur"] for f in loaded["figures"] if f["dimension"] == "territoire"}
        assert names == {"Verdun (ville-centre)"} and territories == {"Nord meusien": 4}
    table.write_text("code_insee;nom;territoire\n5554;Verdun;Nord\n", encoding="utf-8")
    with TestClient(create_app(db.model_copy(update={"communes_file": table}))) as c:
        bad = c.get(url, headers={"X-API-Key": key})
        assert bad.status_code == 503 and bad.json()["error"] == "communes_file_invalid"
        assert "line 2" in bad.json()["message"] and "PASSERELLE_COMMUNES_FILE" in bad.json()["message"]


def test_commune_names_as_the_cog_writes_them():
    from app.pilotage.tables import commune_title

    assert [commune_title(n) for n in ("BAR-LE-DUC", "BELLEVILLE-SUR-MEUSE", "L'ISLE-EN-RIGAULT", "ÉTAIN")] == [
        "Bar-le-Duc", "Belleville-sur-Meuse", "L'Isle-en-Rigault", "Étain"]  # fmt: skip


def test_the_cli_refuses_bad_options_and_a_bad_commune_table(db, scene, monkeypatch, tmp_path):
    args = ("pilotage", "table", "nouveaux-entrants", "--periode", scene["d"].strftime("%Y-%m"))
    assert run_cli(db, monkeypatch, *args, "--par", "pointure").exit_code == 2
    assert run_cli(db, monkeypatch, *args, "--format", "xlsx").exit_code == 2
    assert run_cli(db, monkeypatch, "pilotage", "table", "nouveaux-entrants", "--periode", "2024-13").exit_code == 2
    bad = tmp_path / "communes.csv"
    bad.write_text("code;name\n55545;Verdun\n", encoding="utf-8")
    monkeypatch.setenv("PASSERELLE_COMMUNES_FILE", str(bad))
    refused = run_cli(db, monkeypatch, *args)
    assert refused.exit_code == 3 and "PASSERELLE_COMMUNES_FILE" in refused.output, refused.output
    out = tmp_path / "x.csv"
    assert run_cli(db, monkeypatch, "pilotage", "extract", "-o", out, "--format", "parquet").exit_code == 2


def test_tables_extract_and_dashboard_for_many_readers_while_a_flux_is_ingested(db, scene, app, make_api_key, tmp_path):
    """Analysts and staff read while the nightly flux is applied: every answer 200, no 'database is
    locked', and each extract recorded (its audit event written beside the ingestion's writer)."""
    import threading

    import httpx

    from app.flux.generator import generate
    from app.models import AccessRecord
    from tests.support.live_server import LiveServer

    out = tmp_path / "big"
    generate(out, 400, 3, today(db) - timedelta(days=6), seed=9, departement="054")
    key = make_api_key(["pilotage:read"], ["055", "054"])
    q = f"from={scene['d']}&to={scene['d']}&as_of={scene['as_of']}"
    urls = [f"/api/v1/pilotage/tables/{name}?{q}" for name in TABLES] + [
        f"/api/v1/pilotage/extract?{q}", f"/api/v1/pilotage/tables/delais-orientation?{q}&format=csv",
        f"/tableau-de-bord?mois={scene['d'].strftime('%Y-%m')}&as_of={scene['as_of']}"]  # fmt: skip
    codes: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def ingest_all() -> None:
        try:
            ingest_generated(db, out, departement="054")
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    with LiveServer(app) as base:

        def read(n: int) -> None:
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as c:
                i = n
                while not done.is_set() or i < n + len(urls):
                    codes.append(c.get(urls[i % len(urls)]).status_code)
                    i += 1

        threads = [threading.Thread(target=ingest_all)] + [threading.Thread(target=read, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert codes and set(codes) == {200}, sorted(set(codes))
    with session_scope(db) as s:
        extracts = s.scalar(
            select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "pilotage.extract")
        )
    assert extracts >= 3 * 2  # each reader asked at least once, for both départements


def test_formulas_from_outside_are_neutralised_in_the_tables_and_the_extract(db, scene, make_api_key, tmp_path):
    """Issue #23 item 4 (OWASP CSV injection): a commune table and a commune code from outside holding
    formulas come out of the tables' CSV and the extract with a quote in front, readable; the service's own
    numbers and dates are unchanged."""
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from app.main import create_app
    from app.models import EntryEpisode

    with session_scope(db, write=True) as s:  # a commune code as a hostile file could have stored it
        s.execute(update(EntryEpisode).where(EntryEpisode.person_id == scene["ids"]["A"]).values(commune="-cmd"))
    table = tmp_path / "communes.csv"
    table.write_text('code_insee;nom;territoire\n55545;"=HYPERLINK(""http://x"",""y"")";@SUM(A1)\n', encoding="utf-8")
    key = make_api_key(["pilotage:read"])
    d, as_of = scene["d"], scene["as_of"]
    query = f"from={d}&to={d}&as_of={as_of}"
    with TestClient(create_app(db.model_copy(update={"communes_file": table}))) as c:
        got = c.get(f"/api/v1/pilotage/tables/nouveaux-entrants?{query}&format=csv", headers={"X-API-Key": key})
        assert got.status_code == 200, got.text
        rows = _french_rows(got.content)
        extract = _french_rows(c.get(f"/api/v1/pilotage/extract?{query}", headers={"X-API-Key": key}).content)
    communes = {(r["valeur_dimension"], r["libelle_valeur"], r["valeur"]) for r in rows if r["dimension"] == "commune"}
    assert communes == {("55545", '\'=HYPERLINK("http://x","y")', "3"), ("'-cmd", "'-cmd", "1")}
    territories = {r["valeur_dimension"] for r in rows if r["dimension"] == "territoire"}
    assert "'@SUM(A1)" in territories
    assert all(r["as_of"] == as_of.strftime("%d/%m/%Y") for r in rows)  # the service's dates as they were
    assert sorted(r["commune"] for r in extract) == ["'-cmd", "55545", "55545", "55545"]
    assert {r["t0"] for r in extract} == {d.isoformat()}
    assert not [cell for r in rows + extract for cell in r.values() if cell and cell[0] in "=+@\t\r"]
