"""The inference service without HTTP: actor registry, posing, frame and mesh work, the model queue, jobs. Raises the
project's own errors (server.errors), never HTTP status codes; server.http maps them to JSON answers."""
