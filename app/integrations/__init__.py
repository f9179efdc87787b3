"""Partners that are not France Travail or the CAF/MSA."""
