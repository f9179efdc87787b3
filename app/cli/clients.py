"""`passerelle clients` and `passerelle departements`: who may call the API, for which départements."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import (
    console,
    err_console,
    print_json,
    print_rows,
    ready_settings,
    validated_departement,
)

clients_app = typer.Typer(help="Machine clients and their API keys.", no_args_is_help=True, rich_markup_mode=None)
departements_app = typer.Typer(
    help="Départements served by this instance.", no_args_is_help=True, rich_markup_mode=None
)


@departements_app.command("add")
def departements_add(code: str, name: Annotated[str | None, typer.Option()] = None) -> None:
    """Register a département (3 characters, e.g. 055)."""
    from app.admin.departements import ensure_departement, not_a_departement, unknown_departements
    from app.cli.common import ExitCode, fail
    from app.db import session_scope

    code = validated_departement(code)
    settings = ready_settings()
    if unknown_departements([code], settings):
        raise fail(not_a_departement([code]), ExitCode.USAGE)
    with session_scope(write=True) as session:
        ensure_departement(session, code, name)
    console.print(f"département {code} registered")


@departements_app.command("list")
def departements_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the registered départements."""
    from app.admin.departements import list_departements
    from app.db import session_scope

    ready_settings()
    with session_scope() as session:
        rows = [{"code": d.code, "name": d.name} for d in list_departements(session)]
    if as_json:
        print_json(rows)
    else:
        print_rows(("code", "name"), [(r["code"], r["name"] or "") for r in rows])


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option(help="A unique, descriptive name (e.g. plateforme-orientation).")],
    departement: Annotated[list[str], typer.Option(help="Département granted (repeatable).")],
    scope: Annotated[list[str], typer.Option(help="Scope granted (repeatable).")],
) -> None:
    """Create a machine client; its API key is printed once and never stored in clear."""
    from app.admin.clients import create_client
    from app.db import session_scope

    codes = [validated_departement(c) for c in departement]
    settings = ready_settings()
    with session_scope(write=True) as session:  # a ClientError: exit 2 (app.cli.common.PasserelleGroup)
        created = create_client(session, settings, name=name, departements=codes, scopes=scope)
    err_console.print(f"client [bold]{name}[/] created (id {created.client_id}); its API key, shown only once:")
    print(created.key)


@clients_app.command("list")
def clients_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List machine clients (never their keys)."""
    from app.admin.clients import list_clients
    from app.db import session_scope

    ready_settings()
    with session_scope() as session:
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "key_prefix": c.key_prefix,
                "scopes": c.scopes,
                "departements": c.departement_codes,
                "created_at": c.created_at.isoformat(),
                "last_used_at": c.last_used_at.isoformat() if c.last_used_at else None,
                "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
            }
            for c in list_clients(session)
        ]
    if as_json:
        print_json(rows)
        return
    print_rows(
        ("id", "name", "prefix", "départements", "scopes", "last used", "revoked"),
        [
            (
                r["id"],
                r["name"],
                r["key_prefix"],
                " ".join(r["departements"]),  # type: ignore[arg-type]
                " ".join(r["scopes"]),  # type: ignore[arg-type]
                r["last_used_at"],
                r["revoked_at"],
            )
            for r in rows
        ],
        narrow=("id", "name", "départements", "scopes", "revoked"),
    )


@clients_app.command("revoke")
def clients_revoke(name_or_id: str) -> None:
    """Revoke a client's API key (immediately refused afterwards)."""
    from app.admin.clients import revoke_client
    from app.db import session_scope

    ready_settings()
    with session_scope(write=True) as session:  # a ClientError: exit 2
        revoke_client(session, name_or_id)
    console.print(f"client {name_or_id} revoked")
