"""Clients of the partners' APIs (France Travail)."""
