"""SQLAlchemy 2 typed models, one module per aggregate; importing this package registers them all."""

from app.models.auth import ApiClient, Departement, api_client_departements
from app.models.base import Base

__all__ = ["ApiClient", "Base", "Departement", "api_client_departements"]
