"""HTTP API v1 of the inference server (DESIGN.md §4, docs/API.md): a thin FastAPI shell over server.inference.

- ``app.create_app(actors_root, token, device) -> FastAPI``: state, error handlers, routers
- ``routers/``: health, actors, jobs; ``schemas``: request and response models; ``dependencies``: the service,
  the jobs and the token check; ``errors``: the server's errors as JSON answers; ``auth``: the token file
"""
