"""Pilotage tables and indicators, computed from stored facts for an as-of date."""
