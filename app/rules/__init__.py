"""The annex-4 rules (nouveaux entrants, orientation delay) as pure functions over a person's dated facts."""
