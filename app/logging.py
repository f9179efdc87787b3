"""structlog JSON logging for the service and uvicorn, with a redaction processor for personal data.

A NIR, a name, a token, a key or an address must never reach a log line: values under sensitive
keys are replaced, and NIR-, JWT- and API-key-shaped substrings are masked in every string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

SENSITIVE_KEYS = frozenset(
    {
        "nir",
        "nir13",
        "nom",
        "nomnai",
        "prenom",
        "prenom2",
        "prenom3",
        "name_of_person",
        "nom_naissance",
        "first_name",
        "last_name",
        "birth_name",
        "date_naissance",
        "dtnai",
        "birth_date",
        "adresse",
        "address",
        "nomvoie",
        "telephone",
        "phone",
        "email",
        "courriel",
        "numtel",
        "adrelec",
        "contacts",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "jeton",
        "jeton_usager",
        "jetonusager",
        "ft-jeton-usager",
        "authorization",
        "x-api-key",
        "api_key",
        "key",
        "secret",
        "client_secret",
        "password",
        "pepper",
        "cookie",
        "set-cookie",
        "agent_nom",
        "agent_prenom",
    }
)

# Digits that look like a NIR (13 or 15 characters, Corsica 2A/2B), JWTs, our API keys, bearer values.
_PATTERNS = [
    re.compile(r"(?<![0-9A-Za-z])[1-478]\d{4}(?:2[AB]|\d{2})\d{6}(?:\d{2})?(?![0-9A-Za-z])"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"prsa_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{10,}"),
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),  # e-mail addresses
    re.compile(r"(?<![0-9])(?:\+33\s?|0)[1-9](?:[\s.-]?\d{2}){4}(?![0-9])"),  # French telephone numbers
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
]


def scrub(text: str) -> str:
    for pattern in _PATTERNS[:-1]:
        text = pattern.sub(REDACTED, text)
    return _PATTERNS[-1].sub(lambda m: m.group(1) + REDACTED, text)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else _redact(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict.keys()):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _scrub_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    # Last line of defence: exception texts and tracebacks are rendered into strings before here.
    return scrub(rendered) if isinstance(rendered, str) else rendered


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer, _scrub_rendered],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through the same formatter (JSON lines, redacted).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # No library noise at the default level: SQLAlchemy's statements, alembic's plugin set-up and
    # "Running upgrade" lines (the CLI says what it did), httpx's request lines; their warnings still pass.
    for name in ("sqlalchemy.engine", "alembic", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python warnings go through the same handler, in the same format (shown once per place, the default).
    logging.captureWarnings(True)


UVICORN_LOG_CONFIG: dict[str, Any] = {"version": 1, "disable_existing_loggers": False}
