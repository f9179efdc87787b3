"""Alembic, driven from the code: upgrade, downgrade, current revision, and "is the schema at head?"."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.settings import Settings, get_settings


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "_migrations"  # inside a built wheel (see pyproject force-include)
    if installed.is_dir():
        return installed
    return here.parent / "migrations"


def alembic_config(settings: Settings | None = None) -> Config:
    settings = settings or get_settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = settings.database_url
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings | None = None, revision: str = "-1") -> None:
    command.downgrade(alembic_config(settings), revision)


def head_revisions(settings: Settings | None = None) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def at_head(engine: Engine, settings: Settings | None = None) -> bool:
    return current_revisions(engine) == head_revisions(settings)
