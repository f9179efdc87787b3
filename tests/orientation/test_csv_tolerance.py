"""Our CSV import takes what platforms and Excel users write (issue #11): separator `;` or `,`, UTF-8 with
or without BOM or Windows-1252 (said in the report), dates aaaa-mm-jj or jj/mm/aaaa, booleans 0/1,
oui/non, true/false; a column that does not concern the row's event ignored with a warning; a referent
with an organisme and no structure accepted; an invalid value the event takes rejects its row only."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from app.db import session_scope
from app.models import OrientationEvent
from tests.support.cli import run_cli
from tests.support.factories import nouvel_entrant

HEADER = [
    "nir",
    "date_naissance",
    "matricule",
    "role",
    "evenement",
    "date",
    "organisme",
    "type_parcours",
    "accompagnement_global",
    "presence",
    "external_id",
    "structure",
    "referent",
]


def _csv(rows: list[list[str]], sep: str = ";") -> str:
    return "\n".join(sep.join(r) for r in [HEADER, *rows]) + "\n"


def _import(db, monkeypatch, path):
    r = run_cli(db, monkeypatch, "orientations", "import", path, "--json")
    return r.exit_code, json.loads(r.stdout)


def _events(db):
    with session_scope(db) as s:
        return {
            e.external_id: (e.type, e.event_date, e.organisme, e.structure, e.presence, e.accompagnement_global)
            for e in s.scalars(select(OrientationEvent))
        }


def test_rows_as_a_platform_writes_them_in_windows_1252_with_french_dates(db, monkeypatch, tmp_path):
    """The three rows the issue saw refused, written as a platform would (every column on every row), in
    Windows-1252 with accents, dates jj/mm/aaaa and Oui/Non; plus one real error, which alone is refused."""
    _pid, t0 = nouvel_entrant(db, tmp_path)
    d = lambda n: (t0 + timedelta(days=n)).strftime("%d/%m/%Y")  # noqa: E731
    nir = "1900555545123"
    rows = [
        [nir, "15/01/1990", "", "", "rdv_orientation", d(1), "DEPARTEMENT", "", "Oui", "absent", "t-1", "", ""],
        [nir, "", "", "", "orientation", d(2), "DEPARTEMENT", "social", "Non", "", "t-2", "Maison de l'Insertion", ""],
        [nir, "", "", "", "referent", d(3), "DEPARTEMENT", "", "", "", "t-3", "", "Hélène Mérand"],
        [nir, "", "", "", "orientation", d(4), "DEPARTEMENT", "sociale", "oui", "", "t-4", "", ""],  # not a parcours
    ]
    path = tmp_path / "excel.csv"
    path.write_bytes(_csv(rows).encode("cp1252"))
    code, report = _import(db, monkeypatch, path)
    assert code == 1  # one row rejected: the run says so
    assert (report["encoding"], report["separator"], report["applied"]) == ("windows-1252", ";", 3)
    assert [r["line"] for r in report["rejected"]] == [5] and "type_parcours" in report["rejected"][0]["reason"]
    messages = sorted(w["message"] for w in report["warnings"])
    assert messages == [
        "column accompagnement_global ignored: a rdv_orientation event does not take it",
        "organisme kept as the rdv_orientation event's structure",
    ]
    events = _events(db)
    assert events["t-1"][2:5] == (None, "DEPARTEMENT", "absent")
    assert events["t-2"][3] == "Maison de l'Insertion" and events["t-2"][5] is False
    assert events["t-3"][:3] == ("referent", t0 + timedelta(days=3), "DEPARTEMENT")
    assert "t-4" not in events


def test_a_comma_separated_utf8_file_with_a_bom_and_iso_dates(db, monkeypatch, tmp_path):
    _pid, t0 = nouvel_entrant(db, tmp_path)
    day = (t0 + timedelta(days=2)).isoformat()
    rows = [
        [
            "1900555545123",
            "1990-01-15",
            "",
            "",
            "orientation",
            day,
            "FRANCE_TRAVAIL",
            "professionnel",
            "true",
            "",
            "c-1",
            "",
            "",
        ]
    ]
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv(rows, sep=",").encode("utf-8"))
    code, report = _import(db, monkeypatch, path)
    assert code == 0, report
    assert (report["encoding"], report["separator"], report["applied"]) == ("utf-8 (BOM)", ",", 1)
    assert _events(db)["c-1"][5] is True


def test_the_json_api_stays_strict(client, db, make_api_key, tmp_path):
    """Programs get an error for a field their event does not take (docs/rules.md, "CSV import")."""
    pid, t0 = nouvel_entrant(db, tmp_path)
    key = make_api_key(["orientation:write"])
    body = {"type": "rdv_orientation", "date": t0.isoformat(), "organisme": "DEPARTEMENT", "presence": "present"}
    r = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=body)
    assert r.status_code == 422 and "does not take organisme" in r.text
    referent = {"type": "referent", "date": t0.isoformat(), "organisme": "DEPARTEMENT"}
    assert client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=referent).status_code == 201
    nothing = {"type": "referent", "date": t0.isoformat(), "referent": "X"}
    r = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=nothing)
    assert r.status_code == 422 and "structure or organisme" in r.text


def test_a_file_mixing_utf8_and_windows_1252_lines_is_refused_naming_the_line(db, monkeypatch, tmp_path):
    """Issue #23: a file mostly UTF-8 with a line pasted from a Windows-1252 file was read whole as
    Windows-1252 and its UTF-8 accents stored as mojibake ("HÃ©lÃ¨ne"). Refused, naming the line; nothing
    stored. The reverse (a UTF-8 line in a Windows-1252 file) likewise, for both import formats."""
    _pid, t0 = nouvel_entrant(db, tmp_path)
    d = lambda n: (t0 + timedelta(days=n)).isoformat()  # noqa: E731
    nir = "1900555545123"
    rows = [
        [nir, "", "", "", "referent", d(1), "DEPARTEMENT", "", "", "", f"m-{n}", "", f"Hélène Mérand {n}"]
        for n in range(1, 5)
    ]
    lines = _csv(rows).splitlines(keepends=True)
    mixed = b"".join(line.encode("cp1252" if n == 3 else "utf-8") for n, line in enumerate(lines, start=1))
    path = tmp_path / "mixed.csv"
    path.write_bytes(mixed)
    for fmt in ("auto", "events"):
        r = run_cli(db, monkeypatch, "orientations", "import", path, "--format", fmt)
        assert r.exit_code == 1, r.output
        assert "line 3 is not UTF-8" in " ".join(r.stderr.split()), r.stderr
    reverse = b"".join(line.encode("utf-8" if n == 4 else "cp1252") for n, line in enumerate(lines, start=1))
    path.write_bytes(reverse)
    r = run_cli(db, monkeypatch, "orientations", "import", path)
    assert r.exit_code == 1 and "line 4 is in UTF-8" in " ".join(r.stderr.split()), r.stderr
    export = ("Civilité;Nom;Prénom;Numéro CAF\n" + "M;MÉRAND;Hélène;123\n" * 3).encode()
    path.write_bytes(export + "M;MÉRAND;Hélène;124\n".encode("cp1252"))
    r = run_cli(db, monkeypatch, "orientations", "import", path, "--format", "rdv-insertion")
    assert r.exit_code == 1 and "line 5 is not UTF-8" in " ".join(r.stderr.split()), r.stderr
    assert _events(db) == {}
    # one encoding throughout is read as before
    path.write_bytes(_csv(rows).encode("cp1252"))
    code, report = _import(db, monkeypatch, path)
    assert code == 0 and report["encoding"] == "windows-1252" and report["applied"] == 4, report
