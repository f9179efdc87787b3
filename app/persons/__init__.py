"""Persons: identity and the repository (readable by the caller, state as of a date)."""
