"""FastAPI routers: thin layers that parse, authorise, call a service and shape the answer."""
