"""Shared kit with no domain: files at rest, text hygiene, CSV, job leases."""
