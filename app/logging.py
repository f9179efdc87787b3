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


# Credentials a URL carries (issue #23): the download link's token (the link is the credential: any segment
# after `/download/`), and any query value whose name says it is one (token, key, secret, signature,
# password, code, state, session...), whatever else the name holds (`api_key`, `client_secret`, `sig`).
_DOWNLOAD_SEGMENT = re.compile(r"(/download/)[^/?#\s\"'\\]+")
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#?\s\"'\\]+)=([^&;#\s\"'\\]*)")
_CREDENTIAL_NAME = re.compile(
    r"(?i)token|secret|passw|pwd|signature|session|jeton|credential|auth|cookie|api.?key|"
    r"(?:^|[_.-])(?:key|code|state|sig|nonce|otp|pin)(?:$|[_.-])"
)


def _redact_param(found: re.Match[str]) -> str:
    separator, name, value = found.groups()
    return f"{separator}{name}={REDACTED}" if _CREDENTIAL_NAME.search(name) and value else found.group(0)


def redact_url(text: str) -> str:
    """A path or URL as a log may show it: the download token and credential-named query values masked."""
    text = _DOWNLOAD_SEGMENT.sub(lambda m: m.group(1) + REDACTED, text)
    return _QUERY_PARAM.sub(_redact_param, text)


def scrub(text: str) -> str:
    for pattern in _PATTERNS[:-1]:
        text = pattern.sub(REDACTED, text)
    text = redact_url(text)
    return _PATTERNS[-1].sub(lambda m: m.group(1) + REDACTED, text)


class AccessLogFilter(logging.Filter):
    """On uvicorn's access logger: the request line's path (with its query string) is redacted in the record
    itself, before any handler sees it (ours, a test's, a platform's), so a download link or a credential
    in a query never reaches a log whoever formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        return True


def install_access_log_filter() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogFilter) for f in access.filters):
        access.addFilter(AccessLogFilter())


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


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed by a host
        return False


def configure_logging(level: str | None = "INFO", json_logs: bool | None = True) -> None:
    """Logs on stderr, never stdout (a command's results). `json_logs` None: JSON lines for a machine (the
    server under a supervisor, cron, a redirected stderr), one human line per event when stderr is a
    terminal, so a person never reads JSON mixed with a command's output. `level` None: INFO."""
    if json_logs is None:
        json_logs = not stderr_is_terminal()
    level = level or "INFO"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(
            colors=False, pad_event_to=0, pad_level=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        # an event below the level is dropped first, before any processor works on it (a request's access
        # line at WARNING costs nothing then: issue #27)
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
    install_access_log_filter()
    # No library noise at the default level: SQLAlchemy's statements, alembic's plugin set-up and
    # "Running upgrade" lines (the CLI says what it did), httpx's request lines; their warnings still pass.
    for name in ("sqlalchemy.engine", "alembic", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python warnings go through the same handler, in the same format (shown once per place, the default).
    logging.captureWarnings(True)


UVICORN_LOG_CONFIG: dict[str, Any] = {"version": 1, "disable_existing_loggers": False}
