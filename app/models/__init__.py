"""SQLAlchemy 2 typed models, one module per aggregate; importing this package registers them all."""

from app.models.auth import ApiClient, Departement, api_client_departements
from app.models.base import Base
from app.models.flux import AccessRecord, FluxFile, FluxFileMember, FoyerEvent, Person, PersonKey, PersonState

__all__ = [
    "AccessRecord",
    "ApiClient",
    "Base",
    "Departement",
    "FluxFile",
    "FluxFileMember",
    "FoyerEvent",
    "Person",
    "PersonKey",
    "PersonState",
    "api_client_departements",
]
