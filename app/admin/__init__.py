"""Administration: API clients, départements, keys, retention (purge)."""
