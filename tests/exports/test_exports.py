"""The weekly files for France Travail (issue #13): built from a generated flux, instruction files and
orientation events; e-mailed to a local SMTP sink (aiosmtpd); downloaded through the link; recorded; a
second run changes nothing; concurrent runs publish once; every bad link and failure said clearly. On
SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import email
import io
import json
import re
import threading
import time
from datetime import date, timedelta
from email import policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.clock import today
from app.db import get_engine, session_scope
from app.exports import publish as pub
from app.exports.weekly import FLUX_COLUMNS, PILOTAGE_COLUMNS, Week, WeekError
from app.main import create_app
from app.models import AccessRecord, Export, ExportDownload, ExportLink, JobLease, Person
from app.models.base import utcnow
from app.pilotage.indicator import orientation_indicator
from tests.support.clock import clock_env, faketime_env
from tests.support.factories import weekly_departement
from tests.support.ftsupport import passerelle
from tests.support.smtp import links


def _rows(content: bytes) -> list[list[str]]:
    assert content.startswith("\ufeff".encode()), "a BOM for French Excel"
    text = content.decode("utf-8-sig")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))


def test_the_weekly_files_reach_france_travail_once_and_their_downloads_are_recorded(xsettings, smtp, tmp_path):
    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path)
    result = pub.publish(get_engine(xsettings), xsettings, "055", week)
    assert result.mailed and len(sink.messages) == 1
    message = email.message_from_bytes(sink.messages[0], policy=policy.default)
    assert "semaine " + week.label in message["Subject"] and "francetravail.test" in message["To"]
    tokens = links(sink.messages[0])
    assert set(tokens) == {"flux", "pilotage"}
    with TestClient(create_app(xsettings), raise_server_exceptions=False) as c:
        r = c.get(f"/api/v1/exports/download/{tokens['flux']}")
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == f'attachment; filename="rsa_055_{week.label}_flux.csv"'
        flux = _rows(r.content)
        assert tuple(flux[0]) == FLUX_COLUMNS and len(flux) - 1 == result.files[0].rows > 0
        for row in flux[1:]:
            record = dict(zip(FLUX_COLUMNS, row, strict=True))
            assert len(record["NIR"]) == 15 and re.match(r"^\d\d/\d\d/\d{4}$", record["DATE_ORIENTATION"])
            assert record["TYPE_PARCOURS"] in ("SOCIAL", "SOCIOPROFESSIONNEL", "PROFESSIONNEL")
            assert record["STATUT"] in ("DEMANDEUR", "CONJOINT")
        assert any(dict(zip(FLUX_COLUMNS, row, strict=True))["NATIONALITE"] for row in flux[1:])
        pilotage = _rows(c.get(f"/api/v1/exports/download/{tokens['pilotage']}").content)
        assert tuple(pilotage[0]) == PILOTAGE_COLUMNS
        stock = PILOTAGE_COLUMNS.index("STOCK")  # by name: ORIENTE_PAR (issue #25) comes after it
        assert {row[stock] for row in pilotage[1:]} == {"0", "1"}  # nouveaux entrants and stock
        assert all(row[3].startswith("01/") for row in pilotage[1:] if row[3])  # birth dates to the 1st
    with session_scope(xsettings) as s:
        served = s.scalars(select(ExportDownload.outcome)).all()
        assert served == ["served", "served"]
        reads = s.scalars(select(AccessRecord.action).where(AccessRecord.principal_id.like("link:%"))).all()
        assert sorted(reads) == ["export.download.flux", "export.download.pilotage"]
    # the nightly job again: the same bytes, nothing sent
    again = pub.publish(get_engine(xsettings), xsettings, "055", week)
    assert again.unchanged and not again.mailed and len(sink.messages) == 1
    assert [f.sha256 for f in again.files] == [f.sha256 for f in result.files]
    resent = pub.publish(get_engine(xsettings), xsettings, "055", week, resend=True)
    assert resent.mailed and len(sink.messages) == 2 and links(sink.messages[1]) != tokens
    manifest = json.loads((xsettings.data_dir / "exports" / "055" / week.label / "manifest.json").read_text())
    assert [f["sha256"] for f in manifest["fichiers"]] == [f.sha256 for f in result.files]


def test_a_rebuild_gives_the_same_bytes_and_the_pilotage_file_agrees_with_the_indicator(xsettings, tmp_path):
    week = weekly_departement(xsettings, tmp_path)
    engine = get_engine(xsettings)
    first = pub.build(engine, xsettings, "055", week)
    second = pub.build(engine, xsettings, "055", week)
    assert [(f.sha256, f.rows) for f in first] == [(f.sha256, f.rows) for f in second]
    pilotage = first[1]
    plain = pub.decrypt_file(
        pilotage.path,
        xsettings.export_key_ring,
        pub._aad("055", week.label, "pilotage", pilotage.sha256),
        pilotage.sha256,
    )
    rows = _rows(plain.read())[1:]
    start = week.monday - timedelta(days=30)
    with engine.connect() as conn:
        indicator = orientation_indicator(conn, ["055"], start, week.sunday, week.sunday)
    stock = PILOTAGE_COLUMNS.index("STOCK")
    entrants = [r for r in rows if r[stock] == "0" and start <= _day(r[4]) <= week.sunday]
    summary = indicator
    assert len(entrants) == summary["nouveaux_entrants"]
    oriented = [r for r in entrants if r[7]]
    assert len(oriented) == summary["orientes"]
    within = [r for r in oriented if (_day(r[7]) - _day(r[4])).days <= 14]
    assert len(within) == summary["orientes_15j"]


def _day(text: str) -> date:
    d, m, y = text.split("/")
    return date(int(y), int(m), int(d))


def test_bad_links_are_refused_clearly_and_serve_nothing(xsettings, smtp, tmp_path):
    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=40)
    single = xsettings.model_copy(update={"export_single_use": True})
    pub.publish(get_engine(single), single, "055", week)
    tokens = links(sink.messages[-1])
    with TestClient(create_app(xsettings), raise_server_exceptions=False) as c:
        forged = c.get("/api/v1/exports/download/" + "A" * 43)
        assert (forged.status_code, forged.json()["error"]) == (403, "link_invalid")
        assert c.get("/api/v1/exports/download/short").status_code == 422
        assert c.get(f"/api/v1/exports/download/{tokens['flux']}").status_code == 200
        used = c.get(f"/api/v1/exports/download/{tokens['flux']}")
        assert (used.status_code, used.json()["error"]) == (410, "link_used") and "déjà servi" in used.json()["message"]
        with session_scope(xsettings, write=True) as s:
            link = s.scalar(
                select(ExportLink).where(ExportLink.token_hash == pub.token_hash(xsettings, tokens["pilotage"]))
            )
            link.expires_at = link.created_at - timedelta(seconds=1)
        expired = c.get(f"/api/v1/exports/download/{tokens['pilotage']}")
        assert (expired.status_code, expired.json()["error"]) == (410, "link_expired")
        pub.publish(get_engine(xsettings), xsettings, "055", week, resend=True)
        fresh = links(sink.messages[-1])
        with session_scope(xsettings, write=True) as s:
            link = s.scalar(select(ExportLink).where(ExportLink.token_hash == pub.token_hash(xsettings, fresh["flux"])))
            link.revoked_at = link.created_at
        revoked = c.get(f"/api/v1/exports/download/{fresh['flux']}")
        assert (revoked.status_code, revoked.json()["error"]) == (410, "link_revoked")
        with session_scope(xsettings) as s:
            path = s.scalar(select(Export.path).where(Export.kind == "pilotage"))
        stored = Path(path)
        data = bytearray(stored.read_bytes())
        data[-40] ^= 0xFF  # one byte of the stored file changed
        stored.write_bytes(bytes(data))
        corrupted = c.get(f"/api/v1/exports/download/{fresh['pilotage']}")
        assert (corrupted.status_code, corrupted.json()["error"]) == (409, "export_corrupted")
        assert "ID_CAF" not in corrupted.text
    with session_scope(xsettings) as s:
        outcomes = sorted(s.scalars(select(ExportDownload.outcome)))
        assert outcomes == ["corrupted", "expired", "revoked", "served", "used"]  # a forged link names no link
        events = s.execute(
            select(AccessRecord.outcome, AccessRecord.detail).where(AccessRecord.action.like("export.download%"))
        ).all()
    # every attempt is in the audit trail too, the refused ones with their reason; a refused link counted per
    # minute (issue #23, written when the server stopped at the latest)
    assert sorted(o for o, _d in events) == ["ok", "refused", "refused", "refused", "refused", "refused"]
    details = sorted((json.loads(d) for o, d in events if o == "refused"), key=lambda d: d["reason"])
    assert details == [{"reason": "corrupted"}] + [
        {"count": 1, "per": "minute", "reason": r, "status": status}
        for r, status in (("expired", 410), ("revoked", 410), ("unknown", 403), ("used", 410))
    ]


def test_a_refused_mail_or_a_full_disk_leaves_nothing_half_published(xsettings, smtp, tmp_path, monkeypatch):
    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=40)
    sink.refuse = True
    with pytest.raises(pub.PublishError, match="550"):
        pub.publish(get_engine(xsettings), xsettings, "055", week)
    with session_scope(xsettings) as s:
        assert s.scalar(select(func.count()).select_from(ExportLink).where(ExportLink.revoked_at.is_(None))) == 0
        assert set(s.scalars(select(Export.published_at))) == {None}
    sink.refuse = False
    assert pub.publish(get_engine(xsettings), xsettings, "055", week).mailed  # the next run sends them
    real_replace = pub.os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device")

    other = Week.of(week.monday - timedelta(days=7))  # a week after the first flux file (issue #23)
    directory = xsettings.data_dir / "exports" / "055" / other.label
    before = set(directory.glob("*")) if directory.exists() else set()  # the data directory is the session's
    monkeypatch.setattr(pub.os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        pub.publish(get_engine(xsettings), xsettings, "055", other)
    monkeypatch.setattr(pub.os, "replace", real_replace)
    assert set(directory.glob("*")) == before, "nothing left behind: no .part, no .enc"
    with session_scope(xsettings) as s:
        assert s.scalar(select(func.count()).select_from(Export).where(Export.week == other.label)) == 0


def test_concurrent_runs_publish_once(xsettings, smtp, tmp_path):
    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=60)
    outcomes: list[str] = []

    def run() -> None:
        try:
            result = pub.publish(get_engine(xsettings), xsettings, "055", week)
            outcomes.append("mailed" if result.mailed else "unchanged")
        except pub.ExportBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("mailed") == 1 and len(sink.messages) == 1, outcomes
    assert set(outcomes) <= {"mailed", "unchanged", "busy"}


def test_a_live_job_renews_its_lease_and_is_never_taken_over(db, monkeypatch):
    """Issue #24 item 6: a job that lives longer than `LEASE_SECONDS` (shown by back-dating its lease) was
    taken over by a second run: the lease is renewed while the job lives, released when it ends."""
    monkeypatch.setattr(pub, "RENEW_SECONDS", 0.05)
    with pub.lease(db, "purge", "all"):
        with session_scope(db, write=True) as s:  # as if the job had run for an hour
            s.execute(update(JobLease).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with session_scope(db) as s:
                if utcnow() - s.scalar(select(JobLease.heartbeat_at)) < timedelta(minutes=1):
                    break
            time.sleep(0.05)
        with pytest.raises(pub.ExportBusy, match="another 'purge' of all is running"), pub.lease(db, "purge", "all"):
            pass
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(JobLease)) == 0
    with pub.lease(db, "purge", "all"):  # released: the next run takes it
        pass


def test_weeks_and_departements_that_cannot_be_exported(db, xsettings):
    day = today(xsettings)
    with pytest.raises(WeekError, match="has not ended"):
        Week.parse(Week.last_complete(day + timedelta(days=7)).label, day)
    with pytest.raises(WeekError, match="ISO week"):
        Week.parse("2024-10", day)
    with pytest.raises(WeekError, match="does not exist"):
        Week.parse("2023-W53", day)
    env = {"PASSERELLE_ENV": "test", "PASSERELLE_DATA_DIR": str(db.data_dir),
           "PASSERELLE_DATABASE_URL": db.database_url,
           "PASSERELLE_NIR_ENCRYPTION_KEYS": db.nir_encryption_keys.get_secret_value(),
           "PASSERELLE_NIR_HMAC_KEY": db.nir_hmac_key.get_secret_value(),
           "PASSERELLE_API_KEY_PEPPER": db.api_key_pepper.get_secret_value(), "PASSERELLE_LOG_LEVEL": "WARNING",
           "PATH": "/usr/bin:/bin", **clock_env(db), **faketime_env()}  # fmt: skip
    future = Week.last_complete(day + timedelta(days=14)).label
    for args, message in (
        (["--week", future], "has not ended"),
        (["--week", "2024-W99"], "does not exist"),
        (["--departement", "099"], "unknown département"),
    ):
        proc = passerelle("export", "weekly", *args, env=env)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in err, (args, err)


RETURN_HEADER = [
    "Nom", "Prénom", "Date De Naissance", "Tranche Age Actuel", "Obligation Emploi Actuel", "Inscription Actuelle",
    "Rome Actuel", "Diagnostic Realise (oui/non)", "Commune Entree", "Commune Actuelle", "Libelle Commune Actuelle",
    "Territoire Entree", "Territoire Actuel", "Departement Actuel", "Agence Dans Xp", "Agence",
    "Direction territoriale Actuelle", "Date Entree Parcours", "Date Sortie", "Motif Sortie",
    "Libelle Parcours Entree", "Libelle Parcours Actuel", "Modalité de suivi et d’accompagnement (Msa) Actuelle",
    "Libelle Pni (si suivi délégué à un partenaire non informatisé)", "Libelle Type de Suivi délégué",
    "Top Demandeur d’emploi de Longue Duree",
]  # fmt: skip


def _return_file(flux_rows: list[list[str]], separator: str = ";", encoding: str = "utf-8-sig") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=separator, lineterminator="\r\n")
    writer.writerow(RETURN_HEADER)
    for row in flux_rows:
        record = dict(zip(FLUX_COLUMNS, row, strict=True))
        writer.writerow([record["NOM"], record["PRENOM"], record["DATE_NAISSANCE"], "30-39 ans", "Non", "Oui",
                         "K1304", "oui", "55545", "55545", "VERDUN", "T1", "T1", "55", "Non", "Verdun",
                         "DT Meuse", "03/03/2026", "", "", "Accompagnement", "Accompagnement", "Guidé", "", "",
                         "Non"])  # fmt: skip
    writer.writerow(["INCONNU", "PERSONNE", "01/01/1970"] + [""] * (len(RETURN_HEADER) - 3))
    return out.getvalue().encode(encoding)


def test_the_return_file_round_trips_and_the_api_publishes_lists_and_revokes(xsettings, smtp, tmp_path, make_api_key):
    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path)
    pushed = tmp_path / "share"
    settings = xsettings.model_copy(update={"export_push_dir": pushed})
    runner, reader = make_api_key(["exports:run"]), make_api_key(["exports:read", "ft:read"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post(
            "/api/v1/exports/weekly", json={"departement": "055", "week": week.label}, headers={"X-API-Key": runner}
        )
        assert r.status_code == 200 and r.json()["envoye"], r.text
        assert (
            c.post("/api/v1/exports/weekly", json={"departement": "055"}, headers={"X-API-Key": reader}).status_code
            == 403
        )
        future = Week.last_complete(today(settings) + timedelta(days=14)).label
        bad = c.post(
            "/api/v1/exports/weekly", json={"departement": "055", "week": future}, headers={"X-API-Key": runner}
        )
        assert bad.status_code == 422 and "has not ended" in bad.json()["message"]
        tokens = links(sink.messages[-1])
        flux = _rows(c.get(f"/api/v1/exports/download/{tokens['flux']}").content)
        copy = pushed / "055" / week.label / f"rsa_055_{week.label}_flux.csv"
        assert _rows(copy.read_bytes()) == flux and (copy.stat().st_mode & 0o777) == 0o600
        listed = c.get("/api/v1/exports", params={"departement": "055"}, headers={"X-API-Key": reader}).json()["items"]
        assert {(i["type"], i["liens_actifs"], i["telechargements"]) for i in listed} == {
            ("flux", 1, 1),
            ("pilotage", 1, 0),
        }
        flux_id = next(i["id"] for i in listed if i["type"] == "flux")
        revoked = c.post(f"/api/v1/exports/{flux_id}/revoke", headers={"X-API-Key": runner})
        assert revoked.json()["liens_revoques"] == 1
        assert c.get(f"/api/v1/exports/download/{tokens['flux']}").status_code == 410
        # France Travail sends its return file: the persons we sent come back and are found
        data = _return_file(flux[1:], separator=",", encoding="cp1252")
        files = {"file": ("retour_ft.csv", data, "text/csv")}
        r = c.post("/api/v1/ft-return-files", files=files, data={"departement": "055"}, headers={"X-API-Key": runner})
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["encoding"], report["separator"]) == ("windows-1252", ",")
        assert (report["rows"], report["matched"], len(report["unmatched"])) == (len(flux), len(flux) - 1, 1)
        assert report["unmatched"][0]["line"] == len(flux) + 1 and "INCONNU" not in r.text
        again = c.post(
            "/api/v1/ft-return-files", files=files, data={"departement": "055"}, headers={"X-API-Key": runner}
        )
        assert again.json()["duplicate"] is True
        with session_scope(settings) as s:
            nom, born = flux[1][1], flux[1][3]
            pid = s.scalar(select(Person.id).where(Person.nom == nom, Person.date_naissance == _day(born)))
        shown = c.get(f"/api/v1/persons/{pid}/france-travail", headers={"X-API-Key": reader}).json()
        assert shown["retourFichier"]["rome_actuel"] == "K1304" and shown["retourFichier"]["date_entree_parcours"]
        missing = _return_file(flux[1:2]).replace(b"Rome Actuel", b"Rome")
        r = c.post("/api/v1/ft-return-files", files={"file": ("x.csv", missing, "text/csv")},
                   data={"departement": "055"}, headers={"X-API-Key": runner})  # fmt: skip
        assert r.status_code == 422 and "Rome Actuel" in r.json()["message"]
        bad_date = _return_file(flux[1:2]).replace(flux[1][3].encode(), b"31/02/1980")
        r = c.post("/api/v1/ft-return-files", files={"file": ("y.csv", bad_date, "text/csv")},
                   data={"departement": "055"}, headers={"X-API-Key": runner})  # fmt: skip
        assert r.status_code == 422 and "line 2" in r.json()["message"]


def test_the_nightly_command_publishes_once_and_says_so(xsettings, smtp, tmp_path, make_api_key):
    sink, port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=40)
    s = xsettings
    env = {"PASSERELLE_ENV": "test", "PASSERELLE_DATA_DIR": str(s.data_dir), "PASSERELLE_DATABASE_URL": s.database_url,
           "PASSERELLE_NIR_ENCRYPTION_KEYS": s.nir_encryption_keys.get_secret_value(),
           "PASSERELLE_NIR_HMAC_KEY": s.nir_hmac_key.get_secret_value(),
           "PASSERELLE_API_KEY_PEPPER": s.api_key_pepper.get_secret_value(), "PASSERELLE_LOG_LEVEL": "WARNING",
           "PASSERELLE_SMTP_HOST": "127.0.0.1", "PASSERELLE_SMTP_PORT": str(port), "PASSERELLE_SMTP_TLS": "none",
           "PASSERELLE_MAIL_FROM": "passerelle@departement.test",
           "PASSERELLE_EXPORT_RECIPIENTS": "agent.ft@francetravail.test, dr@francetravail.test",
           "PASSERELLE_PUBLIC_URL": "https://passerelle.departement.test", "PATH": "/usr/bin:/bin",
           **clock_env(s), **faketime_env()}  # fmt: skip
    proc = passerelle("export", "weekly", "--departement", "055", "--week", week.label, "--json", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (manifest,) = json.loads(out)
    assert manifest["envoye"] and {f["type"] for f in manifest["fichiers"]} == {"flux", "pilotage"}
    assert len(sink.messages) == 1
    message = email.message_from_bytes(sink.messages[0], policy=policy.default)
    assert message["To"] == "agent.ft@francetravail.test, dr@francetravail.test"
    tokens = links(sink.messages[0])
    with TestClient(create_app(xsettings), raise_server_exceptions=False) as c:
        assert c.get(f"/api/v1/exports/download/{tokens['pilotage']}").status_code == 200
    proc = passerelle("export", "weekly", "--departement", "055", "--week", week.label, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "already published, nothing sent" in out, (out, err)
    assert len(sink.messages) == 1
    sink.refuse = True
    proc = passerelle("export", "weekly", "--departement", "055", "--week", week.label, "--resend", env=env)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "550" in err


def test_formulas_from_outside_are_neutralised_in_the_weekly_files(xsettings, smtp, tmp_path):
    """Issue #23 item 4 (OWASP CSV injection): names from a CAF file and a structure from an orientation event
    holding formulas (or a tab, a carriage return) come out of the files France Travail's agents open in Excel
    with a quote in front, readable; the service's own dates and NIRs are unchanged."""
    from sqlalchemy import update

    from app.models import EntryEpisode

    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path)
    hostile = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1", "-cmd", "\tx", "\rx"]
    with session_scope(xsettings, write=True) as s:  # as a hostile file or event could have stored them
        ids = s.scalars(select(Person.id).order_by(Person.id)).all()
        for n, pid in enumerate(ids):
            nom, prenom = hostile[n % len(hostile)], hostile[(n + 1) % len(hostile)]
            s.execute(update(Person).where(Person.id == pid).values(nom=nom, prenom=prenom))
        s.execute(update(EntryEpisode).values(structure='=HYPERLINK("http://x","y")'))
    assert pub.publish(get_engine(xsettings), xsettings, "055", week).mailed
    tokens = links(sink.messages[-1])
    with TestClient(create_app(xsettings)) as c:
        files = {kind: _rows(c.get(f"/api/v1/exports/download/{token}").content) for kind, token in tokens.items()}
    flux = [dict(zip(FLUX_COLUMNS, r, strict=True)) for r in files["flux"][1:]]
    pilotage = [dict(zip(PILOTAGE_COLUMNS, r, strict=True)) for r in files["pilotage"][1:]]
    assert flux and pilotage
    quoted = {"'" + h for h in hostile}
    assert {r["NOM"] for r in flux} <= quoted and {r["PRENOM"] for r in flux} <= quoted
    assert len({r["NOM"] for r in flux}) > 1
    assert {r["STRUCTURE_REFERENTE"] for r in pilotage} - {""} == {'\'=HYPERLINK("http://x","y")'}
    assert all(re.match(r"^\d\d/\d\d/\d{4}$", r["DATE_ORIENTATION"]) and len(r["NIR"]) == 15 for r in flux)
    assert not [v for r in flux + pilotage for v in r.values() if v and v[0] in "=+-@\t\r"]


def test_the_one_csv_writer_neutralises_formulas_and_keeps_numbers_and_dates():
    """OWASP's rule in `app.kit.csv`: a quote before a text starting with =, +, -, @, tab or CR; a plain
    number the service writes (negative, decimal comma, percentage) and a date stay as they are."""
    from app.kit.csv import iter_csv, safe_cell, write_csv

    hostile = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1", "-cmd", "\tx", "\rx", "-1+1", "-2024-03-01", "="]
    kept = ["-3", "-0,5", "-0.5", "12,5 %", "-12,5 %", "-1e-05", "2024-03-01", "01/03/2024", "Verdun", "", "0"]
    assert [safe_cell(v) for v in hostile] == ["'" + v for v in hostile]
    assert [safe_cell(v) for v in kept] == kept
    assert [safe_cell(v) for v in (-3, -0.5, None, True, date(2024, 3, 1))] == [-3, -0.5, None, True, date(2024, 3, 1)]
    row = [*hostile, *kept, -3, -0.5]
    out = io.BytesIO()
    assert write_csv(tuple(f"c{n}" for n in range(len(row))), [row], out) == 1
    assert out.getvalue() == b"".join(iter_csv([f"c{n}" for n in range(len(row))], [row]))
    (read,) = _rows(out.getvalue())[1:]
    assert read == ["'" + v for v in hostile] + kept + ["-3", "-0.5"]


def test_weeks_before_the_first_flux_file_or_not_over_are_refused(xsettings, smtp, tmp_path, make_api_key):
    """Issue #23: `export weekly --week 0001-W01` built and mailed two empty files. A week before the week
    of the département's first flux file, or not over (the app's clock), is refused (CLI exit 2 with a
    French message, API 422); nothing built, nothing mailed; the first file's week itself is exported."""
    from tests.support.factories import ingest
    from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux

    sink, port = smtp
    day = today(xsettings)
    engine = get_engine(xsettings)
    with pytest.raises(WeekError, match="aucun fichier de flux"):
        pub.publish(engine, xsettings, "055", Week.last_complete(day))
    first = day - timedelta(days=30)
    ingest(xsettings, write_flux(tmp_path, [foyer(person(NIR_A))], day=first), received_on=first)
    start = Week.of(first)
    for week, message in (
        (Week.parse("0001-W01", day), "précède le premier fichier de flux"),
        (Week.of(start.monday - timedelta(days=1)), f"semaine {start.label}"),
        (Week.of(day), "n'est pas terminée"),
    ):
        with pytest.raises(WeekError, match=message):
            pub.publish(engine, xsettings, "055", week)
    s = xsettings
    env = {"PASSERELLE_ENV": "test", "PASSERELLE_DATA_DIR": str(s.data_dir), "PASSERELLE_DATABASE_URL": s.database_url,
           "PASSERELLE_NIR_ENCRYPTION_KEYS": s.nir_encryption_keys.get_secret_value(),
           "PASSERELLE_NIR_HMAC_KEY": s.nir_hmac_key.get_secret_value(),
           "PASSERELLE_API_KEY_PEPPER": s.api_key_pepper.get_secret_value(), "PASSERELLE_LOG_LEVEL": "WARNING",
           "PASSERELLE_SMTP_HOST": "127.0.0.1", "PASSERELLE_SMTP_PORT": str(port), "PASSERELLE_SMTP_TLS": "none",
           "PASSERELLE_MAIL_FROM": "passerelle@departement.test",
           "PASSERELLE_EXPORT_RECIPIENTS": "agent.ft@francetravail.test",
           "PASSERELLE_PUBLIC_URL": "https://passerelle.departement.test", "PATH": "/usr/bin:/bin",
           **clock_env(s), **faketime_env()}  # fmt: skip
    proc = passerelle("export", "weekly", "--departement", "055", "--week", "0001-W01", env=env)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "0001-W01 précède le premier fichier de flux" in " ".join(err.split()), err
    runner = make_api_key(["exports:run"])
    with TestClient(create_app(xsettings), raise_server_exceptions=False) as c:
        r = c.post("/api/v1/exports/weekly", json={"departement": "055", "week": "0001-W01"},
                   headers={"X-API-Key": runner})  # fmt: skip
        assert r.status_code == 422 and "premier fichier de flux" in r.json()["message"], r.text
        assert sink.messages == []
        with session_scope(xsettings) as session:
            assert session.scalar(select(func.count()).select_from(Export)) == 0
        assert not (xsettings.data_dir / "exports" / "055" / "0001-W01").exists()
        r = c.post("/api/v1/exports/weekly", json={"departement": "055", "week": start.label},
                   headers={"X-API-Key": runner})  # fmt: skip
        assert r.status_code == 200 and r.json()["envoye"] and len(sink.messages) == 1, r.text
