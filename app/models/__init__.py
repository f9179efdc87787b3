"""SQLAlchemy 2 typed models, one module per aggregate; importing this package registers them all."""

from app.models.auth import ApiClient, BrowserSessionRevocation, DashboardLink, Departement, api_client_departements
from app.models.base import Base
from app.models.exports import Export, ExportDownload, ExportLink, ExportMail, FtReturnFile, FtReturnRow, JobLease
from app.models.flux import (
    AccessRecord,
    AmbiguousKey,
    AuditChain,
    AuditLeaf,
    FluxFile,
    FluxObservation,
    FoyerEvent,
    IdentityMatch,
    InstructionRecord,
    Person,
    PersonKey,
    PersonState,
)
from app.models.france_travail import FtCall, FtIdentity, FtOutboxItem, FtSnapshot, FtSyncItem, FtSyncRun
from app.models.limits import RateLimitBucket, RefusalWindow
from app.models.orientation import (
    EntryEpisode,
    EpisodeQueue,
    OrientationEvent,
    PendingEvent,
    WebhookDelivery,
    WebhookItem,
)

__all__ = [
    "AccessRecord",
    "AmbiguousKey",
    "ApiClient",
    "AuditChain",
    "AuditLeaf",
    "Base",
    "BrowserSessionRevocation",
    "DashboardLink",
    "Departement",
    "EntryEpisode",
    "EpisodeQueue",
    "Export",
    "ExportDownload",
    "ExportLink",
    "ExportMail",
    "FluxFile",
    "FluxObservation",
    "FoyerEvent",
    "FtCall",
    "FtIdentity",
    "FtOutboxItem",
    "FtReturnFile",
    "FtReturnRow",
    "FtSnapshot",
    "FtSyncItem",
    "FtSyncRun",
    "IdentityMatch",
    "InstructionRecord",
    "JobLease",
    "OrientationEvent",
    "PendingEvent",
    "Person",
    "PersonKey",
    "PersonState",
    "RateLimitBucket",
    "RefusalWindow",
    "WebhookDelivery",
    "WebhookItem",
    "api_client_departements",
]
