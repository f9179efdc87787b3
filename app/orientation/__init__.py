"""Orientation: events, imports, entry episodes (the shell around app.rules), worklist."""
