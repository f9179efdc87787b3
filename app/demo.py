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
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import Engine, func, select

from app import migrate
from app.audit.chain import anchor, verify
from app.clients.france_travail import FranceTravailClient
from app.clock import today
from app.db import database_in_use, dispose_engines, get_engine, session_scope
from app.errors import Busy
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.france_travail.fake import pointed_at, running_fake
from app.france_travail.fake.answers import ft_orientation
from app.france_travail.fake.state import FakeState
from app.france_travail.sync import SyncOptions, run_sync
from app.kit.files import private_dir
from app.logging import configure_logging
from app.models import EntryEpisode, FtSnapshot, Person
from app.orientation.contracts import waiting_contract
from app.orientation.episodes import refresh_pending
from app.orientation.service import EventIn, record_event
from app.orientation.worklist import worklist_page
from app.persons.repository import audit_job_reads
from app.pilotage.display import print_indicator
from app.pilotage.indicator import orientation_indicator
from app.pilotage.tables import Period, commune_names, compute
from app.rules.deadlines import deadline_15_days, legal_deadline_near, legal_deadline_past, overdue_15_days
from app.rules.episodes import CE_IN_FORCE
from app.security.nir import NirProtector
from app.settings import Settings

ORGANISMES = ["FRANCE_TRAVAIL"] * 5 + ["DEPARTEMENT"] * 3 + ["MISSION_LOCALE", "CAP_EMPLOI", "CCAS"]
PARCOURS = ["professionnel"] * 4 + ["socio-professionnel"] * 3 + ["social"] * 2


def run_demo(
    base: Settings,
    foyers: int = 2000,
    days: int = 56,
    seed: int = 2024,
    console: Console | None = None,
    port: int = 8000,
) -> dict[str, Any]:
    console = console or Console()

    configure_logging("WARNING", base.log_json)  # the demo's own output is the report
    root, settings = _fresh_database(base)
    engine = get_engine(settings)
    day = today(settings)
    start = day - timedelta(days=days + 4)

    console.print(f"[bold]1.[/] Génération d'un département de {foyers} foyers et de {days} jours de fichiers CAF/MSA…")
    files = generate(root / "flux", foyers, days, start, seed=seed)
    manifest = json.loads((root / "flux" / "manifest.json").read_text())

    console.print(f"[bold]2.[/] Intégration des {len(files)} fichiers, dans l'ordre où le Département les a reçus…")
    applied = _ingest_all(engine, settings, root / "flux", manifest, console)

    console.print(
        "[bold]3.[/] La plateforme d'orientation enregistre ses décisions (certaines en retard, des absences)…"
    )
    recorded = _record_decisions(engine, settings, day, random.Random(seed))

    console.print("[bold]4.[/] France Travail (le simulateur, lancé pour la démo) est interrogé sur ces personnes…")
    synced = _france_travail(settings, console)

    with engine.connect() as conn:
        result = orientation_indicator(conn, ["055"], start, day, day)
    console.print(f"[bold]5.[/] {applied} fichiers intégrés, {recorded} événements de la plateforme enregistrés.\n")
    print_indicator(result, console)
    console.print(T0_EXPLAINED)
    console.print(synced)
    _print_worklist(settings, day, console)
    _print_contracts(engine, settings, day, console)
    _print_audit_seal(engine, settings, console)
    console.print(browser_instructions(root / "demo.db", port), highlight=False, soft_wrap=True)
    dispose_engines()
    return result


def passerelle_command() -> str:
    """How to call `passerelle` from here: `.venv/bin/passerelle` from a clone (a path relative to the
    current directory when it is under it), else its absolute path, else the bare name."""
    command = Path(sys.executable).parent / "passerelle"
    if not command.exists():
        return "passerelle"
    try:
        return command.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return command.as_posix()


def browser_instructions(database: Path, port: int = 8000) -> str:
    """The demo's last lines (issue #26): the exact commands to see its data in a browser. The link command
    prints a single-use link (app.admin.links) that opens the dashboard for 8 hours."""
    env = f"PASSERELLE_DATABASE_URL=sqlite:///{database.as_posix()}"
    exe = passerelle_command()
    base = f"http://127.0.0.1:{port}"
    return (
        f"\nLa base de la démo est {database}. Pour voir ses données dans un navigateur :\n"
        f"  1. dans un terminal, lancez le service sur cette base (il reste au premier plan) :\n"
        f"     {env} {exe} serve --port {port}\n"
        f"  2. dans un autre terminal, demandez un lien de connexion (usage unique, valable 15 minutes) :\n"
        f'     {env} {exe} dashboard link --departement 055 --name "Prénom Nom" --url {base}\n'
        f"  3. ouvrez dans un navigateur le lien qu'il affiche : le tableau de bord du département 055 s'ouvre "
        f"pour 8 heures.\n"
        f"  La documentation de l'API : {base}/docs"
    )


def _fresh_database(base: Settings) -> tuple[Path, Settings]:
    """An empty demo directory under the data directory, and settings on a new SQLite database there."""
    root = base.data_dir / "demo"
    if database_in_use(root / "demo.db"):  # never deleted under a server: its keys would stop working
        raise Busy(
            f"la base de la démo ({root / 'demo.db'}) est utilisée par un serveur (passerelle serve) : "
            "arrêtez-le, puis relancez la démo"
        )
    if root.exists():
        shutil.rmtree(root)
    private_dir(root)
    demo_db = f"sqlite:///{(root / 'demo.db').as_posix()}"
    # its own database, migrated as itself: never with the migrations' URL of the real one
    settings = base.model_copy(update={"database_url": demo_db, "migration_database_url": ""})
    migrate.upgrade(settings)
    return root, settings


def _ingest_all(engine: Engine, settings: Settings, flux: Path, manifest: list[Any], console: Console) -> int:
    """Every generated file in the order received, the entry episodes refreshed once after the last;
    returns how many were applied."""
    applied = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("flux", total=len(manifest))
        for entry in manifest:
            report = ingest_file(
                engine,
                settings,
                flux / entry["file"],
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
    return applied


def _record_decisions(engine: Engine, settings: Settings, day: date, rng: random.Random) -> int:
    """The platform's events for every waiting entrant, those dated up to `day`; returns how many."""
    with engine.connect() as conn:
        episodes = conn.execute(
            select(EntryEpisode.person_id, EntryEpisode.t0)
            .where(EntryEpisode.outcome == "en_attente")
            .order_by(EntryEpisode.person_id)
        ).all()
    recorded = 0
    for person_id, t0 in episodes:
        events = _platform_events(t0, rng)
        with session_scope(settings, write=True) as session:
            person = session.get(Person, person_id)
            assert person is not None
            for n, payload in enumerate(events):
                if payload["date"] > day:
                    continue  # not happened yet: the person is still waiting
                event = EventIn.model_validate({**payload, "external_id": f"demo-{person_id}-{n}"})
                record_event(session, settings, person, event, recorded_by="demo")
                recorded += 1
    return recorded


def _platform_events(t0: date, rng: random.Random) -> list[dict[str, Any]]:
    """What the platform does about an entrant of T0 `t0`: an invitation, an RDV (some absent), then an
    orientation (78 %), a référent (10 %) or nothing, some late."""
    events: list[dict[str, Any]] = []
    roll = rng.random()
    events.append({"type": "invitation", "date": t0 + timedelta(days=rng.randint(1, 4)), "channel": "courrier"})
    rdv = t0 + timedelta(days=rng.randint(5, 12))
    events.append({"type": "rdv_orientation", "date": rdv, "presence": "absent" if rng.random() < 0.15 else "present"})
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
        events.extend(_contract(events[-1], random.Random(f"{t0.isoformat()}-{delay}")))
    elif roll < 0.88:
        events.append({"type": "referent", "date": t0 + timedelta(days=delay), "structure": "CCAS de Verdun"})
    return events


def _contract(orientation: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """A contract after most orientations, some after the one-month deadline: a contrat d'engagement with the
    orientation's organisme (a CER before 2025). Drawn apart (`rng` of its own): the demo's other draws stay."""
    if rng.random() < 0.25:
        return []  # still waiting for a contract
    signed = orientation["date"] + timedelta(days=rng.choice([5, 10, 18, 25, 29, 35, 45]))
    if signed < CE_IN_FORCE:
        return [{"type": "contrat", "date": signed, "contrat": "CER"}]
    return [{"type": "contrat_engagement", "date": signed, "organisme": orientation["organisme"]}]


def _print_audit_seal(engine: Engine, settings: Settings, console: Console) -> None:
    """Seal what the demo wrote (ingest, events, reads), then print the chain's head and its check."""

    head = anchor(engine, settings)
    checked = verify(engine, settings)
    console.print(
        f"\nJournal d'audit : {checked.checked} événements scellés, chaîne "
        f"{'intacte' if checked.intact else 'ROMPUE'} (ancre {head['seq']}:{head['mac'][:12]}… ; "
        "`passerelle audit verify`).\n"
        "Ancre : le numéro et le sceau du dernier événement ; notée hors de la base (`passerelle audit anchor` "
        "l'affiche en entier), elle permet de prouver plus tard qu'aucun événement n'a été retiré."
    )


T0_EXPLAINED = (
    "T0 : le jour où le Département a reçu le fichier CAF/MSA qui fait de la personne un nouvel entrant ; les "
    "délais comptent à partir de ce jour (T0 le 01/03 : orienté en 15 jours si le courrier part avant le 16/03)."
)
CALLS_EXPLAINED = (
    "Appels : les requêtes envoyées à l'API de France Travail (recherche, statut, diagnostic…), nouvelles "
    "tentatives comprises ; une personne en demande plusieurs."
)
FOUND = ("found", "not_certified")  # the searches that found the person: their statut is asked
FAKE_SEED = 1  # the France Travail simulator's: who it knows, always the same way
FT_OUTCOMES = {
    "found": "trouvé, identité certifiée",
    "not_certified": "trouvé, identité non certifiée",
    "unknown": "inconnu de France Travail",
    "ambiguous": "plusieurs personnes correspondent",
    "refused": "recherche refusée",
    "no_nir": "sans NIR ou date de naissance",
    "error": "erreur (réessayé à la prochaine synchronisation)",
}


def _france_travail(settings: Settings, console: Console) -> Table:
    """`ft sync` of the département against the fake France Travail; the statuts found, as a table."""

    with running_fake(seed=FAKE_SEED) as base:
        ft = pointed_at(settings, base, ft_max_concurrency=16, ft_rate_per_second=0.0)
        _oriented_by_france_travail(settings, base, FAKE_SEED)
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
    refresh_pending(get_engine(settings))  # France Travail's orientations recorded: their episodes
    table = Table(
        title=f"France Travail : {summary.selected} personnes interrogées, {summary.calls} appels",
        caption=CALLS_EXPLAINED,
        caption_justify="left",
    )
    table.add_column("Résultat de la recherche / statut France Travail")
    table.add_column("Personnes", justify="right")
    outcomes = summary.outcomes
    for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {FT_OUTCOMES.get(outcome, outcome)}", str(n))
    table.add_row("[bold]Total : personnes interrogées", f"[bold]{sum(outcomes.values())}")
    table.add_section()
    found = sum(outcomes.get(o, 0) for o in FOUND)
    table.add_row(f"Statut des {found} personnes trouvées (dernière réponse)", "")
    with session_scope(settings) as session:
        latest = select(func.max(FtSnapshot.id)).where(FtSnapshot.kind == "statut").group_by(FtSnapshot.person_id)
        statuts: dict[str, int] = {}
        for snap in session.scalars(select(FtSnapshot).where(FtSnapshot.id.in_(latest))):
            name = "aucune donnée" if snap.no_data or not snap.data else str(snap.data["statutDE"])
            statuts[name] = statuts.get(name, 0) + 1
    if found > sum(statuts.values()):  # a statut call that failed: said, so that the lines add up
        statuts["statut non obtenu"] = found - sum(statuts.values())
    for name, n in sorted(statuts.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {name}", str(n))
    table.add_row("[bold]Total : personnes trouvées", f"[bold]{sum(statuts.values())}")
    table.add_section()
    table.add_row("Orientations France Travail enregistrées (décidées)", str(summary.orientations.get("decide", 0)))
    table.add_row("Préconisations France Travail enregistrées", str(summary.orientations.get("preconise", 0)))
    with session_scope(settings) as session:
        by_ft = session.scalar(
            select(func.count()).select_from(EntryEpisode).where(EntryEpisode.oriented_by == "france_travail")
        )
    table.add_row("  nouveaux entrants orientés par France Travail", str(by_ft or 0))
    return table


def _print_contracts(engine: Engine, settings: Settings, day: date, console: Console) -> None:
    """The contrats d'engagement of the demo's orientations: counts only (no person named, nothing to audit)."""
    with engine.connect() as conn:
        waiting = waiting_contract(conn, ["055"], day)
        table = compute(conn, "contrats-engagement", ["055"], Period.days(day - timedelta(days=60), day), day)
    console.print(
        f"\nContrats d'engagement : {table.value('contrats_signes')} signés après "
        f"{table.value('orientes_periode')} orientations ({table.value('contrats_signes_1mois')} dans le mois) ; "
        f"{len(waiting)} personnes orientées sans contrat, dont {sum(w.past for w in waiting)} au-delà d'un mois ; "
        f"{table.value('transition_sans_ce')} personnes accompagnées avant 2025 encore sans contrat d'engagement "
        f"(échéance de transition : {settings.ce_transition_deadline.strftime('%d/%m/%Y')})."
    )


def _legal_cell(deadline: date | None, day: date, warning_days: int) -> str:
    """The legal deadline (CASF art. D.262-65-2) as the worklist flags it; "-" when the decree's clock does
    not apply."""
    if deadline is None:
        return "-"
    if legal_deadline_past(deadline, day):
        return f"[red]France Travail peut orienter depuis le {deadline.strftime('%d/%m/%Y')}"
    if legal_deadline_near(deadline, day, warning_days):
        return f"[yellow]{deadline.strftime('%d/%m/%Y')} (échéance légale proche)"
    return deadline.strftime("%d/%m/%Y")


def _oriented_by_france_travail(settings: Settings, base: str, seed: int) -> None:
    """The decree's case (issue #25): a person still waiting more than six weeks after T0 whom France Travail
    orients: the fake answers a DECIDE dated T0 + 45 days for them (the demo's one such person: the first
    whom the simulator of this seed knows, certified)."""
    day = today(settings)
    with session_scope(settings) as session:
        rows = session.execute(
            select(EntryEpisode.t0, Person.nir_encrypted)
            .join(Person, Person.id == EntryEpisode.person_id)
            .where(EntryEpisode.outcome == "en_attente", EntryEpisode.t0 <= day - timedelta(days=46))
            .where(Person.nir_encrypted.is_not(None), Person.date_naissance.is_not(None))
            .order_by(EntryEpisode.t0, EntryEpisode.person_id)
            .limit(100)
        ).all()
    nirs = NirProtector(settings.encryption_keys, settings.hmac_key)
    simulator = FakeState(seed=seed)
    for t0, encrypted in rows:
        nir13 = nirs.decrypt(encrypted or "")[:13]  # never empty: the query keeps persons with a NIR
        if simulator.kind(nir13) == "certified":
            decided = t0 + timedelta(days=45)
            httpx.post(
                f"{base}/_fake/orientations",
                json={"nir13": nir13, "orientations": [ft_orientation("DECIDE", "PSP", decided)]},
                timeout=5,
            ).raise_for_status()
            return


def _print_worklist(settings: Settings, day: date, console: Console) -> None:
    with session_scope(settings) as session:
        page = worklist_page(session, ["055"], day, limit=10)  # the demo's one département
        rows = [(entry.episode, entry.person) for entry in page.entries]
        names = commune_names(session.connection(), ["055"])
        table = Table(title="Liste de travail : les premières personnes à orienter (par échéance)")
        for col in ("Personne", "T0", "Jours écoulés", "Échéance des 15 jours", "Échéance légale (6 semaines)",
                    "CAF/MSA", "Commune"):  # fmt: skip
            table.add_column(col)
        # names are printed: a read of personal data, recorded like any other (issue #14)
        audit_job_reads(session, "demo", "person.worklist", [(p.id, p.departement_code) for _e, p in rows])
        for episode, person in rows:
            elapsed = (day - episode.t0).days
            late = "[red]" if overdue_15_days(episode.t0, day) else ""
            table.add_row(
                f"#{person.id} {person.prenom or ''} {(person.nom or '')[:1]}.",
                episode.t0.strftime("%d/%m/%Y"),
                f"{late}{elapsed}",
                deadline_15_days(episode.t0).strftime("%d/%m/%Y"),
                _legal_cell(episode.legal_deadline, day, settings.legal_deadline_warning_days),
                episode.caf_msa or "-",
                names.get(episode.commune or "", episode.commune or "-"),
            )
    console.print(table)
