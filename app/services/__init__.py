"""Domain services: the operations behind the API and the CLI. They never commit; the caller's unit of work does."""
