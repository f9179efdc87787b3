"""The one settings object of the service, read from `PASSERELLE_*` environment variables."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# PLACEHOLDER_*, ed25519_seed: re-exported, importable from here as before app.kit.secret_review held them
from app.kit import secret_review
from app.kit.files import private_dir
from app.kit.secret_review import PLACEHOLDER_MARKERS as PLACEHOLDER_MARKERS
from app.kit.secret_review import PLACEHOLDER_WORDS as PLACEHOLDER_WORDS
from app.kit.secret_review import b64key
from app.kit.secret_review import ed25519_seed as ed25519_seed

# A flux file's limits (defaults of FLUX_MAX_DECOMPRESSED_BYTES and FLUX_MAX_ELEMENTS; app.flux.envelope).
FLUX_MAX_DECOMPRESSED_BYTES = 8 * 1024**3
FLUX_MAX_ELEMENTS = 400_000_000


class Environment(StrEnum):
    dev = "dev"
    test = "test"
    prod = "prod"


class ConfigurationError(RuntimeError):
    """A setting is missing or unsafe; the message names it."""


# (backend, driver) of the database URLs the service can use: `sqlite:///…` and `postgresql+psycopg://…`
SUPPORTED_DATABASE_SCHEMES = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PASSERELLE_", env_file=None, extra="ignore")
    _dev_secret_values: dict[str, str] = PrivateAttr(default_factory=dict)

    env: Environment = Environment.dev
    data_dir: Path = Path("./data")
    database_url: str = ""
    # The migrations' own connection (`passerelle db upgrade`, `serve --migrate`): on PostgreSQL a role that
    # owns the tables, the service's role being granted only what it needs (`passerelle db grant`, docs/
    # operations.md "Two database roles"). Empty: the service's own URL.
    migration_database_url: str = ""
    # PostgreSQL only: a streaming replica the pilotage tables, the indicator and the dashboard read from
    # (issue #27). A request reads there only once the replica has replayed everything the primary had
    # written when the request began (else, or if it is unreachable, the primary answers): the figures are
    # those the primary would give, for any as_of.
    database_read_url: str = ""
    database_read_max_wait_ms: int = Field(default=200, ge=0, le=10_000)
    log_level: str | None = Field(
        default=None,
        description="log level; unset: INFO, but WARNING for a command run at a terminal (its output is the result)",
    )
    log_json: bool | None = Field(
        default=None,
        description="JSON log lines (true) or human-readable ones (false); unset: JSON unless stderr is a terminal",
    )

    # Secrets. In dev/test they are generated once and kept in DATA_DIR/dev-secrets.json so that
    # encrypted data stays readable across restarts; in prod each must be given explicitly.
    nir_encryption_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated `key_id:base64url(32 bytes)`; the first is used to encrypt, all decrypt.",
    )
    nir_hmac_key: SecretStr | None = Field(default=None, description="base64url, >= 32 bytes")
    api_key_pepper: SecretStr | None = Field(default=None, description="base64url, >= 32 bytes")
    # Weekly files for France Travail, encrypted at rest (issue #13): `key_id:base64url(32 bytes)[,older...]`,
    # the first encrypts, all decrypt. Required to publish exports in prod; generated in dev/test.
    export_keys: SecretStr | None = None

    # People authenticate with OIDC bearer tokens issued by the Département's identity provider.
    oidc_issuer: str | None = None
    # The dashboard's browser login (authorization code + PKCE; app.security.login): the provider's endpoints
    # and this service's client there (its redirect URI: PUBLIC_URL/connexion/retour).
    oidc_authorization_endpoint: str | None = None
    oidc_token_endpoint: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    # How long a dashboard session lasts at most (the cookie's Max-Age; never beyond its access token's own
    # expiry); `/deconnexion` ends it on the server before that (issue #23).
    dashboard_session_hours: float = Field(default=8.0, gt=0, le=24, description="a browser session's lifetime")
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_jwks_file: Path | None = None
    oidc_algorithms: list[str] = ["RS256", "ES256", "PS256"]
    oidc_scopes_claim: str = "roles"
    oidc_role_scopes: dict[str, list[str]] = {
        "passerelle-data-scientist": ["pilotage:read", "persons:read", "exports:read"],
        "passerelle-auditor": ["audit:read"],
        "passerelle-admin": ["admin"],
    }
    oidc_departements_claim: str = "departements"
    oidc_leeway_seconds: int = 30
    oidc_jwks_cache_seconds: int = 3600
    oidc_jwks_min_refresh_seconds: float = Field(
        default=60.0, ge=0, le=3600, description="an unknown key id reloads the JWKS at most this often"
    )

    # Limits on what a caller may send.
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 2_147_483_648

    # Time limits on the database (see docs/decisions.md, "Many callers at once").
    database_connect_timeout_seconds: int = Field(default=5, ge=2, le=300, description="PostgreSQL connect timeout")
    database_statement_timeout_seconds: int = Field(
        default=30, ge=0, le=3600, description="PostgreSQL statement timeout for requests (0 = none)"
    )
    database_pool_timeout_seconds: int = Field(default=10, ge=1, le=300, description="wait for a pooled connection")
    sqlite_busy_timeout_seconds: int = Field(
        default=120, ge=1, le=3600, description="SQLite: how long a writer waits for another writer"
    )
    # A flux file's limits (issue #23): a gzip of a few KB may expand to gigabytes of XML. Sized for a whole
    # national monthly file (~1.9 million foyers, ~4 million persons, ~1.25 KB and ~45 elements a person:
    # ~5 GB, ~180 million elements) with margin; beyond, the file is rejected `too_large` (docs/ingestion.md).
    flux_max_decompressed_bytes: int = Field(
        default=FLUX_MAX_DECOMPRESSED_BYTES, ge=1024, description="largest XML a flux file may hold, once decompressed"
    )
    flux_max_elements: int = Field(
        default=FLUX_MAX_ELEMENTS, ge=100, description="most XML elements a flux file may hold"
    )
    # `flux watch`: a file whose last write is this recent may still be being copied: left for a later look,
    # unless its writer says it is complete (`NAME.done` beside it, or written under a temporary name and
    # renamed); docs/operations.md, "The inbox".
    inbox_settle_seconds: float = Field(
        default=60.0, ge=0, le=86_400, description="seconds a dropped file must be left unchanged before it is taken"
    )
    ingest_parallel_min_bytes: int = Field(
        default=20 * 1024 * 1024, ge=0, description="files from this size are read by a second process"
    )
    max_concurrent_requests: int = Field(
        default=20,
        ge=1,
        le=500,
        description="API requests admitted at once by a worker process (more wait, in arrival order)",
    )
    max_anonymous_requests: int = Field(
        default=4,
        ge=1,
        le=100,
        description="requests without a recently authenticated credential admitted at once by a worker process "
        "(their own slots: they never take those of authenticated callers)",
    )
    max_partner_requests: int = Field(
        default=8,
        ge=1,
        le=200,
        description="requests that call a partner (France Travail) admitted at once by a worker process, in "
        "slots of their own: a slow partner never holds a slot a local read needs",
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="a request body (an upload: each of its chunks) not received within this is answered 408",
    )
    request_threads: int | None = Field(
        default=None,
        ge=1,
        le=200,
        description="requests handled at once by a worker process (default: 2 on SQLite, 4 on PostgreSQL; "
        "more only compete for the interpreter lock)",
    )
    rate_limit_per_minute: int = Field(
        default=1200,
        ge=0,
        le=1_000_000,
        description="requests a client may make per minute (0: no limit), for all the server processes through "
        "Redis or PostgreSQL; on SQLite per worker process",
    )
    rate_limit_burst: int | None = Field(default=None, ge=1, le=100_000, description="default: a tenth of a minute's")
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="seconds a worker keeps an API key it accepted without reading its client again: a key "
        "revoked elsewhere is refused at most this long after (0: read on every request)",
    )
    # Issue #23: refused attempts without a valid credential (401, a wrong download link, a wrong webhook
    # signature) from one source address, per minute (shared as the rate limit is); beyond, 429 (0: no limit).
    max_refused_per_minute: int = Field(
        default=60, ge=0, le=1_000_000, description="refused unauthenticated attempts per source address and minute"
    )
    # Several processes (issue #27, item 4; docs/operations.md "Several processes"): the Redis they share for the
    # per-client rate limits, the refusals per source address, France Travail's token and rate cap. Unset: on
    # PostgreSQL the limits go through the database (rate_limit_in_database), France Travail's token stays per
    # process; on SQLite each process counts alone (N workers give a client N times its budget). Unreachable:
    # never a failed request, each process falls back to its own counts until it answers again (a warning).
    redis_url: SecretStr | None = Field(
        default=None, description="e.g. redis://127.0.0.1:6379/0 (a password in it is kept secret)"
    )
    rate_limit_in_database: bool | None = Field(
        default=None,
        description="PostgreSQL without Redis: share the rate limits through the database (unset: yes; never on "
        "SQLite)",
    )
    redis_prefix: str = Field(
        default="passerelle", min_length=1, max_length=100, description="prefix of this service's keys in Redis"
    )
    # The reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed: the source address
    # of a request is its peer's unless the peer is one of them (none: X-Forwarded-For is never read).
    trusted_proxies: Annotated[list[str], NoDecode] = []
    cors_origins: Annotated[list[str], NoDecode] = []  # browsers' origins allowed to call the API (none: CORS off)
    ready_timeout_seconds: float = Field(default=1.5, gt=0, le=10, description="/ready answers within this")

    # Retention (issue #14, `passerelle purge`; docs/operations.md, "Retention"). Quarantined flux files
    # hold NIRs in clear: kept this long for the operator to act.
    quarantine_retention_days: int = Field(default=30, ge=1, le=3650)
    person_retention_months: int = Field(
        default=24, ge=1, le=120, description="a person whose right closed longer ago than this is purged"
    )
    audit_retention_days: int = Field(
        default=365, ge=183, le=1095, description="audit events kept this long (CNIL: 6 months to 3 years)"
    )
    webhook_body_retention_days: int = Field(default=90, ge=1, le=3650, description="raw webhook bodies")
    ft_call_retention_days: int = Field(default=365, ge=30, le=1095, description="France Travail call traces")
    # The audit trail's seal (app.audit.chain): `key_id:base64url(>= 32 bytes)[,older...]`, the first
    # seals, all verify. Required in prod; generated in dev/test.
    audit_keys: SecretStr | None = None
    # Pilotage (issue #15): the key of the pseudonymous ids of the analysis extract (base64url, >= 32 bytes;
    # generated in dev/test; without it in prod the extract is refused); the Département's commune table
    # (CSV code_insee;nom;territoire) for names and territories.
    extract_key: SecretStr | None = None
    communes_file: Path | None = None
    # Département codes accepted beside INSEE's list (app.admin.departements.OFFICIAL_DEPARTEMENTS): a territory
    # outside it, comma-separated codes of 3 digits (e.g. `975`: Saint-Pierre-et-Miquelon).
    extra_departements: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Département codes accepted beside INSEE's list (comma-separated, 3 digits each)",
    )
    pilotage_gap_days: int = Field(
        default=3,
        ge=1,
        le=60,
        description="working days (weekends and French public holidays not counted) without a beneficiary file "
        "beyond which a CAF/MSA is flagged silent (flux freshness, dashboard) and a gap between files is flagged "
        "(transmission table)",
    )
    legal_deadline_warning_days: int = Field(
        default=7,
        ge=0,
        le=42,
        description="the worklist flags a legal deadline (CASF art. D.262-65-2, six weeks) this many days ahead",
    )
    pilotage_target_15_days: float = Field(
        default=1.0, ge=0, le=1, description="the dashboard's objective line: share oriented within 15 days"
    )
    audit_seal_interval_seconds: float = Field(
        default=5.0, ge=0, le=3600, description="the server seals new audit events this often (0: never)"
    )
    # Signed checkpoints for an auditor who holds none of our keys (issue #23, item 7; app.audit.checkpoint,
    # docs/audit.md): the Ed25519 private key (PEM, or base64url of its 32 bytes; `passerelle audit keygen`),
    # required in prod once a destination is set; generated in dev/test. The note's origin (and key name),
    # default `passerelle-rsa.<host of PASSERELLE_PUBLIC_URL>/audit`. Published to a directory the auditor
    # controls and/or e-mailed (comma-separated), by the server every interval and at each `audit anchor`.
    audit_signing_key: SecretStr | None = None
    audit_checkpoint_origin: str | None = None
    audit_checkpoint_dir: Path | None = None
    audit_checkpoint_email: Annotated[list[str], NoDecode] = []
    audit_checkpoint_interval_seconds: float = Field(
        default=3600.0, ge=0, le=86400, description="the server publishes a signed checkpoint this often (0: never)"
    )

    # RDV-Insertion's signed webhooks (docs/integrations.md): the secret of each département, as a JSON
    # object {"055": "..."} or the path of a file holding it (container secrets). No secret: no route.
    rdv_insertion_secrets: SecretStr | None = None
    # RDV-Insertion motif categories (short names) that are an orientation RDV / an accompaniment RDV
    rdv_insertion_orientation_categories: list[str] = [
        "rsa_orientation",
        "rsa_orientation_on_phone_platform",
        "rsa_orientation_france_travail",
        "rsa_orientation_file_active",
        "rsa_orientation_coaching",
    ]
    rdv_insertion_accompaniment_categories: list[str] = [
        "rsa_accompagnement",
        "rsa_accompagnement_social",
        "rsa_accompagnement_sociopro",
        "rsa_accompagnement_moins_de_30_ans",
        "rsa_follow_up",
        "rsa_cer_signature",
        "rsa_main_tendue",
        "rsa_atelier_collectif_mandatory",
    ]

    # RDV-Insertion's users export (orientations import --format rdv-insertion): which date dates the
    # orientation (annex 4 counts its notification: the start of the accompaniment by default), and the
    # Département's orientation labels -> type de parcours.
    rdv_insertion_orientation_date: Literal["debut_accompagnement", "orientation"] = "debut_accompagnement"
    rdv_insertion_parcours: dict[str, str] = {
        "Sociale": "social",
        "Professionnelle": "professionnel",
        "Socio-professionnelle": "socio-professionnel",
    }

    # France Travail (issue #12; these names are fixed: docs/integrations.md). The token endpoint is
    # {ft_auth_url}/connexion/oauth2/access_token?realm={ft_realm}; ft_api_url includes /partenaire.
    ft_auth_url: str | None = None
    ft_api_url: str | None = None
    ft_client_id: str | None = None
    ft_client_secret: SecretStr | None = None
    ft_realm: str = "/agent"
    ft_scope_prefix: str = ""  # e.g. "application_{client_id}" where France Travail asks for it
    ft_scopes: dict[str, str] = {
        "rechercher-usager": "api_rechercher-usagerv2 rechercheusager profil_accedant",
        "contrat-usager": "api_contrat-usagerv2 statutcontratusager profil_accedant",
        "diagnosticargumente": "api_diagnosticargumentev4 diagnosticusageragent",
        "orientationusager": "api_orientationusagerv1 orientationusager",
    }
    ft_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    ft_read_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    ft_max_attempts: int = Field(default=4, ge=1, le=10)
    ft_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    ft_retry_after_cap_seconds: float = Field(default=120.0, ge=0, le=3600)
    ft_circuit_failures: int = Field(default=5, ge=1, le=100)
    ft_circuit_cooldown_seconds: float = Field(default=30.0, ge=0, le=3600)
    ft_max_concurrency: int = Field(default=8, ge=1, le=256, description="France Travail calls in flight at once")
    ft_rate_per_second: float = Field(default=20.0, ge=0, le=1000, description="call starts per second (0: no cap)")
    ft_request_deadline_seconds: float = Field(
        default=8.0, gt=0, le=120, description="an API request's France Travail calls end within this, retries included"
    )
    ft_sync_person_deadline_seconds: float = Field(
        default=60.0,
        gt=0,
        le=900,
        description="`ft sync`: one person's France Travail calls (the token's included) end within this, retries "
        "included; the person is retried by a later run",
    )
    # An identity found but not certified (topIdentiteCertifiee N): use its jeton and mark it, or refuse it.
    ft_uncertified: Literal["use", "refuse"] = "use"
    ft_jeton_margin_seconds: int = Field(
        default=300, ge=0, le=3600, description="a jeton this close to expiry is renewed"
    )
    # Orientation usager v1 (off by default): push an `orientation` event to France Travail, through the outbox.
    ft_orientation_push: bool = False
    ft_orientation_origine: str = "CD"
    ft_orientation_parcours: dict[str, str] = {"professionnel": "PED", "socio-professionnel": "PSP", "social": "PSO"}
    ft_orientation_organismes: dict[str, str] = {"FRANCE_TRAVAIL": "FT", "DEPARTEMENT": "CD"}
    ft_outbox_max_attempts: int = Field(default=10, ge=1, le=100)

    # Weekly files for France Travail (issue #13; these names are fixed: tools outside the project use them).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    mail_from: str | None = None
    export_recipients: Annotated[list[str], NoDecode] = []
    public_url: str | None = None
    export_link_days: int = Field(default=7, ge=1, le=90, description="a download link expires after this")
    export_single_use: bool = False
    export_push_dir: Path | None = None  # a copy of each published file is also dropped there (a share)

    # The contrat d'engagement (issue #25, docs/rules.md "The contrat d'engagement").
    contract_deadline_warning_days: int = Field(
        default=7,
        ge=0,
        le=60,
        description="the contracts worklist flags persons whose one-month contract deadline is within this many days",
    )
    ce_transition_deadline: date = Field(
        default=date(2027, 1, 1),
        description="the day by which persons accompanied before 2025 must have a contrat d'engagement (2027-01-01; "
        "overseas départements, three years: 2028-01-01)",
    )
    pilotage_contrat_ce_code: Literal["CER_PPAE", "CE"] = Field(
        default="CER_PPAE",
        description="TYPE_CONTRAT of the weekly pilotage file for a contrat d'engagement: CER or PPAE by its "
        "organisme (CER_PPAE, the convention's values), or CE",
    )

    # Timezone of business dates (the reception date of a flux defaults to today there).
    business_timezone: str = "Europe/Paris"
    # The business date the service takes for today (app/clock.py), fixed: for tests, demos and replays of a
    # past day only; refused in prod. Unset: today in `business_timezone`.
    today: date | None = Field(default=None, description="fixed business date (tests and demos; not in prod)")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, v: Any) -> Any:
        """Comma-separated IPs or CIDRs (a JSON list is accepted too); each one checked here."""
        if isinstance(v, str):
            text = v.strip()
            v = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        for item in v or []:
            try:
                ipaddress.ip_network(str(item).strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or a CIDR network") from None
        return [str(item).strip() for item in v or []]

    @field_validator("export_recipients", "audit_checkpoint_email", mode="before")
    @classmethod
    def _recipients(cls, v: Any) -> Any:
        """Comma-separated, as tools outside the project write it (a JSON list is accepted too)."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    @field_validator("extra_departements", mode="before")
    @classmethod
    def _extra_departements(cls, v: Any) -> Any:
        """Comma-separated codes of 3 digits, e.g. `977,978` (the codes the API accepts: app.security.auth)."""
        if isinstance(v, str):
            v = [part.strip() for part in v.split(",") if part.strip()]
        for code in v or []:
            if not re.fullmatch(r"\d{3}", str(code)):
                raise ValueError(f"{code!r} is not a code of 3 digits (e.g. 977)")
        return v

    @field_validator("today", mode="before")
    @classmethod
    def _iso_today(cls, v: Any) -> Any:
        """YYYY-MM-DD only: pydantic alone would read `0` as a Unix timestamp (1970-01-01)."""
        if isinstance(v, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v.strip()):
            raise ValueError("a date is written YYYY-MM-DD")
        return v.strip() if isinstance(v, str) else v

    @field_validator("database_url", "migration_database_url", "database_read_url", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _defaults_and_safety(self) -> Settings:
        # prod never falls back to a SQLite file inside the container: the database is named, with the
        # secrets, and every one missing is named at once
        missing = [] if self.database_url or self.env is not Environment.prod else ["PASSERELLE_DATABASE_URL"]
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'passerelle.db').as_posix()}"
        self._supported_database_urls()
        self._read_rdv_insertion_secrets()  # a wrong value is refused now, naming the variable
        self._same_database_for_migrations()
        if self.database_read_url and not (
            self.database_read_url.startswith("postgresql") and self.database_url.startswith("postgresql")
        ):
            raise ConfigurationError(
                "PASSERELLE_DATABASE_READ_URL: a read replica is a PostgreSQL standby of a PostgreSQL "
                "PASSERELLE_DATABASE_URL (SQLite has none)"
            )
        if self.env is Environment.prod:
            self._refuse_weak_secrets(missing)
            if self.today is not None:
                raise ConfigurationError("PASSERELLE_TODAY fixes the date: for tests and demos only, not in prod")
        return self

    def _supported_database_urls(self) -> None:
        """A URL this service can use: SQLite (pysqlite) or PostgreSQL with psycopg 3; anything else (mysql://,
        postgres://, a driver not installed) is refused here, naming the variable, not by a traceback later."""
        from sqlalchemy.engine import make_url  # lazy, as in sqlite_path
        from sqlalchemy.exc import ArgumentError

        for name in ("database_url", "migration_database_url", "database_read_url"):
            value = getattr(self, name)
            if not value:
                continue
            try:
                url = make_url(value)
                scheme = (url.get_backend_name(), url.get_driver_name())
            except ArgumentError:
                scheme = ("", "")
            if scheme not in SUPPORTED_DATABASE_SCHEMES:
                given = value.split("://", 1)[0] if "://" in value else "none"
                raise ConfigurationError(
                    f"PASSERELLE_{name.upper()}: the scheme {given!r} is not supported; "
                    "use sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/database"
                )

    def _same_database_for_migrations(self) -> None:
        """The migrations' URL names the service's database (another user, the same server and database)."""
        if not self.migration_database_url:
            return
        from sqlalchemy.engine import make_url  # lazy, as in sqlite_path
        from sqlalchemy.exc import ArgumentError

        try:
            ours, theirs = make_url(self.database_url), make_url(self.migration_database_url)
        except ArgumentError:
            raise ConfigurationError("PASSERELLE_MIGRATION_DATABASE_URL is not a database URL") from None

        def place(url: Any) -> tuple[Any, ...]:
            return url.get_backend_name(), url.host, url.port, url.database

        if place(ours) != place(theirs):
            raise ConfigurationError(
                "PASSERELLE_MIGRATION_DATABASE_URL names another database than PASSERELLE_DATABASE_URL "
                "(same server, port and database, another user)"
            )

    def _read_rdv_insertion_secrets(self) -> dict[str, str]:
        name = "PASSERELLE_RDV_INSERTION_SECRETS"
        if self.rdv_insertion_secrets is None or not self.rdv_insertion_secrets.get_secret_value().strip():
            return {}
        raw = self.rdv_insertion_secrets.get_secret_value().strip()
        if not raw.startswith("{"):
            try:
                raw = Path(raw).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"{name}: neither a JSON object nor a readable file ({exc.strerror})"
                ) from None
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise ConfigurationError(f'{name} is not a JSON object {{"055": "secret"}}') from None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and len(k) == 3 and isinstance(v, str) and v for k, v in parsed.items()
        ):
            raise ConfigurationError(f"{name} must map département codes (3 characters) to non-empty secrets")
        return dict(parsed)

    def rdv_insertion_secret(self, departement: str) -> bytes | None:
        """The webhook secret of a département (None: RDV-Insertion is not connected for it)."""
        secret = self._read_rdv_insertion_secrets().get(departement)
        return secret.encode() if secret else None

    def _refuse_weak_secrets(self, missing: list[str] | None = None) -> None:
        """Prod only (issue #23, item 10): every secret required is set, and every one set passes the review of
        app.kit.secret_review; every problem is named by its variable, never by its value."""
        values = {
            name: value.get_secret_value()
            for name in secret_review.REVIEWED
            if (value := getattr(self, name)) is not None
        }
        missing = [*(missing or []), *secret_review.missing_in_prod(values)]
        if missing:  # all of them at once, not one per start
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigurationError(f"{', '.join(missing)} {verb} required when PASSERELLE_ENV=prod")
        publishes_checkpoints = self.audit_checkpoint_dir is not None or bool(self.audit_checkpoint_email)
        rdv_insertion = self._read_rdv_insertion_secrets()
        problems = secret_review.review_secrets(values, rdv_insertion, publishes_checkpoints=publishes_checkpoints)
        if problems:
            raise ConfigurationError("; ".join(problems))
        if self.oidc_issuer and not (self.oidc_jwks_url or self.oidc_jwks_file):
            raise ConfigurationError("PASSERELLE_OIDC_JWKS_URL or PASSERELLE_OIDC_JWKS_FILE is required with an issuer")

    # -- secrets resolved (generated in dev/test) --------------------------------------------

    def _dev_secrets(self) -> dict[str, str]:
        path = self.data_dir / "dev-secrets.json"
        if path.exists():
            loaded: dict[str, str] = json.loads(path.read_text())
            return loaded
        if not self.data_dir.exists():
            private_dir(self.data_dir)  # it will hold secrets and personal data
        generated = {
            "nir_encryption_keys": "dev1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "nir_hmac_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "api_key_pepper": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(generated, fh)
        return generated

    def secret(self, name: str) -> str:
        value: SecretStr | None = getattr(self, name)
        if value is not None and value.get_secret_value().strip():
            return value.get_secret_value()
        if self.env is Environment.prod:  # pragma: no cover - refused at construction already
            raise ConfigurationError(f"PASSERELLE_{name.upper()} is required")
        # A dev secret, once in its file, never changes (`_dev_secret` only adds): read the file once, not at
        # every request that needs the pepper or the NIR key (issue #27)
        known = self._dev_secret_values
        if name not in known:
            known[name] = self._dev_secrets()[name]
        return known[name]

    @property
    def encryption_keys(self) -> list[tuple[str, bytes]]:
        return parse_encryption_keys(self.secret("nir_encryption_keys"))

    @property
    def export_key_ring(self) -> list[tuple[str, bytes]]:
        """The export keys (the first encrypts); generated once in dev/test, required in prod."""
        if self.export_keys is not None and self.export_keys.get_secret_value().strip():
            return parse_encryption_keys(self.export_keys.get_secret_value())
        if self.env is Environment.prod:
            raise ConfigurationError("PASSERELLE_EXPORT_KEYS is required to build and serve exports in prod")
        return parse_encryption_keys(self._dev_secret("export_keys"))

    @property
    def audit_key_ring(self) -> list[tuple[str, bytes]]:
        """The audit trail's seal keys (the first seals); generated once in dev/test, required in prod."""
        if self.audit_keys is not None and self.audit_keys.get_secret_value().strip():
            return parse_encryption_keys(self.audit_keys.get_secret_value())
        if self.env is Environment.prod:  # pragma: no cover - refused at construction already
            raise ConfigurationError("PASSERELLE_AUDIT_KEYS is required in prod")
        return parse_encryption_keys(self._dev_secret("audit_keys"))

    @property
    def audit_signing_seed(self) -> bytes:
        """The 32 bytes of the checkpoints' Ed25519 private key; generated once in dev/test."""
        if self.audit_signing_key is not None and self.audit_signing_key.get_secret_value().strip():
            return ed25519_seed(self.audit_signing_key.get_secret_value())
        if self.env is Environment.prod:
            raise ConfigurationError("PASSERELLE_AUDIT_SIGNING_KEY is required to sign audit checkpoints in prod")
        return b64key(self._dev_secret("audit_signing_key").partition(":")[2])

    @property
    def extract_key_bytes(self) -> bytes:
        """The analysis extract's pseudonymisation key; generated once in dev/test, required in prod."""
        if self.extract_key is not None and self.extract_key.get_secret_value().strip():
            return b64key(self.extract_key.get_secret_value())
        if self.env is Environment.prod:
            raise ConfigurationError("PASSERELLE_EXTRACT_KEY is required to make the pseudonymised extract in prod")
        return b64key(self._dev_secret("extract_key").partition(":")[2])

    def _dev_secret(self, name: str) -> str:
        """A dev/test secret added after the dev-secrets file was first written: generated and kept."""
        current = self._dev_secrets()
        if name not in current:
            current[name] = "dev1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
            path = self.data_dir / "dev-secrets.json"
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(current, fh)
            os.replace(tmp, path)
        return current[name]

    @property
    def hmac_key(self) -> bytes:
        return b64key(self.secret("nir_hmac_key"))

    @property
    def pepper(self) -> bytes:
        return b64key(self.secret("api_key_pepper"))

    @property
    def effective_request_threads(self) -> int:
        """Measured (bench/BENCHMARKS.md, load runs): request handling is CPU-bound Python, so a worker gains
        nothing from more threads than it keeps busy; PostgreSQL's round trips leave room for a few more."""
        if self.request_threads is not None:
            return self.request_threads
        return 2 if self.is_sqlite else 4

    @property
    def ft_configured(self) -> bool:
        """Whether a France Travail is named (the real one's recette or production, or the fake)."""
        return bool(self.ft_auth_url and self.ft_api_url and self.ft_client_id and self.ft_client_secret)

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """`trusted_proxies` as networks (app.api.middleware.source_address)."""
        return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)

    @property
    def migrations_url(self) -> str:
        """The URL migrations connect with: PASSERELLE_MIGRATION_DATABASE_URL, or the service's own."""
        return self.migration_database_url or self.database_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database's file (None for PostgreSQL or an in-memory database)."""
        if not self.is_sqlite:
            return None
        from sqlalchemy.engine import make_url  # lazy: the settings load before any command, SQLAlchemy only if needed

        database = make_url(self.database_url).database
        return Path(database) if database and database != ":memory:" else None


def parse_encryption_keys(raw: str) -> list[tuple[str, bytes]]:
    keys: list[tuple[str, bytes]] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        key_id, sep, b64 = part.partition(":")
        if not sep or not key_id:
            raise ValueError("each key is `key_id:base64url`")
        key = b64key(b64)
        if len(key) != 32:
            raise ValueError(f"key {key_id!r} must be 32 bytes")
        keys.append((key_id, key))
    return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; a wrong value is a `ConfigurationError` naming each variable (never
    its value: it may be a secret)."""
    try:
        # Container secrets: a directory of files named as the variables (`PASSERELLE_NIR_HMAC_KEY`, ...), each
        # holding one value (Docker and Kubernetes mount them so); the environment wins where both give one.
        secrets_dir = os.environ.get("PASSERELLE_SECRETS_DIR")
        if secrets_dir and not Path(secrets_dir).is_dir():
            raise ConfigurationError("PASSERELLE_SECRETS_DIR is not a directory")
        return Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"PASSERELLE_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigurationError(problems) from None
