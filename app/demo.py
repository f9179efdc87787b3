"""`passerelle demo`: the main job end to end on a fresh SQLite database, in well under a minute.

Generates a realistic stock and a month of daily CAF/MSA files, ingests them as received, records the
orientation platform's decisions for most nouveaux entrants (some late, some no-shows, some never), asks
the fake France Travail (started for the demo as a separate process, stopped after) about the persons the
platform works on, then prints the annex-4 indicator, their France Travail statuts and the top of the
worklist. Nothing is left running.
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import date, timedelta
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from app import migrate
from app.db import dispose_engines, get_engine, session_scope
from app.files import private_dir
from app.ingest.generator import generate
from app.ingest.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, Person
from app.pilotage.display import print_indicator
from app.pilotage.orientation import orientation_indicator
from app.services.episodes import refresh_pending
from app.services.orientation import EventIn, record_event
from app.services.persons import audit_job_reads
from app.settings import Settings, today

ORGANISMES = ["FRANCE_TRAVAIL"] * 5 + ["DEPARTEMENT"] * 3 + ["MISSION_LOCALE", "CAP_EMPLOI", "CCAS"]
PARCOURS = ["professionnel"] * 4 + ["socio-professionnel"] * 3 + ["social"] * 2


def run_demo(
    base: Settings, foyers: int = 2000, days: int = 36, seed: int = 2024, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console()
    from app.logging import configure_logging

    configure_logging("WARNING", base.log_json)  # the demo's own output is the report
    root = base.data_dir / "demo"
    if root.exists():
        shutil.rmtree(root)
    private_dir(root)
    settings = base.model_copy(update={"database_url": f"sqlite:///{(root / 'demo.db').as_posix()}"})
    migrate.upgrade(settings)
    engine = get_engine(settings)
    day = today(settings)
    start = day - timedelta(days=days + 4)

    console.print(f"[bold]1.[/] Generating a département of {foyers} foyers and {days} days of CAF/MSA files…")
    files = generate(root / "flux", foyers, days, start, seed=seed)
    manifest = json.loads((root / "flux" / "manifest.json").read_text())

    console.print(f"[bold]2.[/] Ingesting {len(files)} files as the Département received them…")
    applied = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("flux", total=len(manifest))
        for entry in manifest:
            report = ingest_file(
                engine,
                settings,
                root / "flux" / entry["file"],
                IngestOptions(
                    received_on=date.fromisoformat(entry["received_on"]),
                    initial_stock=entry["initial_stock"],
                    ingested_by="demo",
                ),
                refresh=False,  # once, after the last file
            )
            applied += report.status == "applied"
            progress.advance(task)
    refresh_pending(engine)

    console.print("[bold]3.[/] The orientation platform records its decisions (some late, some no-shows)…")
    rng = random.Random(seed)
    with engine.connect() as conn:
        episodes = conn.execute(
            select(EntryEpisode.person_id, EntryEpisode.t0)
            .where(EntryEpisode.outcome == "en_attente")
            .order_by(EntryEpisode.person_id)
        ).all()
    recorded = 0
    for person_id, t0 in episodes:
        events: list[dict[str, Any]] = []
        roll = rng.random()
        events.append({"type": "invitation", "date": t0 + timedelta(days=rng.randint(1, 4)), "channel": "courrier"})
        rdv = t0 + timedelta(days=rng.randint(5, 12))
        events.append(
            {"type": "rdv_orientation", "date": rdv, "presence": "absent" if rng.random() < 0.15 else "present"}
        )
        delay = rng.choice([2, 4, 6, 8, 9, 11, 12, 13, 14, 16, 19, 24, 31, 38])
        if roll < 0.78:
            events.append(
                {
                    "type": "orientation",
                    "date": t0 + timedelta(days=delay),
                    "organisme": rng.choice(ORGANISMES),
                    "type_parcours": rng.choice(PARCOURS),
                    "accompagnement_global": rng.random() < 0.1,
                    "structure": "Plateforme d'orientation de la Meuse",
                }
            )
        elif roll < 0.88:
            events.append({"type": "referent", "date": t0 + timedelta(days=delay), "structure": "CCAS de Verdun"})
        with session_scope(settings, write=True) as session:
            person = session.get(Person, person_id)
            assert person is not None
            for n, payload in enumerate(events):
                if payload["date"] > day:
                    continue  # not happened yet: the person is still waiting
                event = EventIn.model_validate({**payload, "external_id": f"demo-{person_id}-{n}"})
                record_event(session, settings, person, event, recorded_by="demo")
                recorded += 1

    console.print("[bold]4.[/] France Travail (the fake, started for the demo) is asked about them…")
    synced = _france_travail(settings, console)

    with engine.connect() as conn:
        result = orientation_indicator(conn, ["055"], start, day, day)
    console.print(f"[bold]5.[/] {applied} files applied, {recorded} platform events recorded.\n")
    print_indicator(result, console)
    console.print(synced)
    _print_worklist(settings, day, console)
    from app.services.audit_chain import anchor, verify

    head = anchor(engine, settings)  # seals what the demo wrote (ingest, events, reads), then the chain's head
    checked = verify(engine, settings)
    console.print(
        f"\nAudit trail: {checked.checked} events sealed, chain {'intact' if checked.intact else 'BROKEN'} "
        f"(anchor {head['seq']}:{head['mac'][:12]}…; `passerelle audit verify`)."
    )
    console.print(
        f"\nThe demo database is {root / 'demo.db'}; explore it with\n"
        f"  PASSERELLE_DATABASE_URL=sqlite:///{(root / 'demo.db').as_posix()} passerelle serve   (then /docs)"
    )
    dispose_engines()
    return result


def _france_travail(settings: Settings, console: Console) -> Table:
    """`ft sync` of the département against the fake France Travail; the statuts found, as a table."""
    from app.clients.france_travail import FranceTravailClient
    from app.fake_ft import pointed_at, running_fake
    from app.models import FtSnapshot
    from app.services.ft_sync import SyncOptions, run_sync

    with running_fake(seed=1) as base:
        ft = pointed_at(settings, base, ft_max_concurrency=16, ft_rate_per_second=0.0)
        client = FranceTravailClient(ft)
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("France Travail", total=None)
                summary = run_sync(
                    get_engine(ft),
                    ft,
                    client,
                    SyncOptions("055"),
                    on_start=lambda s: progress.update(task, total=s.selected),
                    on_progress=lambda n: progress.advance(task, n),
                )
        finally:
            client.close()
    table = Table(title=f"France Travail: {summary.selected} persons asked, {summary.calls} calls")
    table.add_column("résultat / statutDE")
    table.add_column("persons", justify="right")
    for outcome, n in sorted(summary.outcomes.items(), key=lambda kv: -kv[1]):
        table.add_row(outcome, str(n))
    with session_scope(settings) as session:
        latest = select(func.max(FtSnapshot.id)).where(FtSnapshot.kind == "statut").group_by(FtSnapshot.person_id)
        statuts: dict[str, int] = {}
        for snap in session.scalars(select(FtSnapshot).where(FtSnapshot.id.in_(latest))):
            name = "aucune donnée (204)" if snap.no_data or not snap.data else str(snap.data["statutDE"])
            statuts[name] = statuts.get(name, 0) + 1
    for name, n in sorted(statuts.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  statutDE {name}", str(n))
    return table


def _print_worklist(settings: Settings, day: date, console: Console) -> None:
    ee = EntryEpisode
    with session_scope(settings) as session:
        rows = session.execute(
            select(ee, Person)
            .join(Person, Person.id == ee.person_id)
            .where(ee.t0 <= day, ee.open_until > day)
            .order_by(ee.t0, ee.person_id)
            .limit(10)
        ).all()
        table = Table(title="Worklist: the first persons to orient (by deadline)")
        for col in ("person", "T0", "days", "15-day deadline", "CAF/MSA", "commune"):
            table.add_column(col)
        # names are printed: a read of personal data, recorded like any other (issue #14)
        audit_job_reads(session, "demo", "person.worklist", [(p.id, p.departement_code) for _e, p in rows])
        for episode, person in rows:
            elapsed = (day - episode.t0).days
            late = "[red]" if elapsed >= 15 else ""
            table.add_row(
                f"#{person.id} {person.prenom or ''} {(person.nom or '')[:1]}.",
                episode.t0.isoformat(),
                f"{late}{elapsed}",
                (episode.t0 + timedelta(days=14)).isoformat(),
                episode.caf_msa or "-",
                episode.commune or "-",
            )
    console.print(table)
