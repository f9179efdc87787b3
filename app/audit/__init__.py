"""Audit: the record of every read and action, its tamper-evident chain, its search."""
