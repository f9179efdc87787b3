"""The weekly files for France Travail (issue #13): builders, encrypted storage, links, e-mail."""
