"""Authentication (API keys, OIDC JWT), scopes, and the protection of personal identifiers."""
