"""France Travail: the service over its APIs, the sync and outbox jobs, the mapping, the return file, the fake."""
