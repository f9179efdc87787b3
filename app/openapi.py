"""The OpenAPI document, rendered deterministically so that the committed copy can be compared."""

from __future__ import annotations

import json

from app.settings import Settings


def render_openapi() -> str:
    from app.main import create_app

    # A fixed, throw-away configuration: the document must not depend on the machine.
    settings = Settings(database_url="sqlite:///:memory:", env="test")
    schema = create_app(settings).openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
