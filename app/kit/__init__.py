"""Shared kit with no domain: files at rest, text hygiene, CSV, job leases, the prod review of the secrets."""
