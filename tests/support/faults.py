"""Faults injected at the database driver, through SQLAlchemy's public event API: no test patches a name
inside `app`. A statement that matches fails the way the test says (the database gone, a bug), whichever
module of the application issues it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

# What `passerelle episodes refresh` and every writer's refresh after its commit do first: read the queue of
# persons to recompute (writers only ever insert into it).
READS_THE_EPISODE_QUEUE = r"^\s*SELECT\b[\s\S]*\bFROM episode_queue\b"


@contextmanager
def failing_statements(pattern: str, error: Callable[[str], BaseException]) -> Iterator[list[str]]:
    """Every statement matching `pattern` (a regular expression, case-insensitive) raises `error(statement)`
    before it reaches the database, on every engine of the process, until the block ends. Yields the
    statements that failed."""
    matcher = re.compile(pattern, re.IGNORECASE)
    failed: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if matcher.search(statement):
            failed.append(statement)
            raise error(statement)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield failed
    finally:
        event.remove(Engine, "before_cursor_execute", before)
