"""The partners' clients only: France Travail's APIs (httpx + authlib) and the mail server (SMTP)."""
