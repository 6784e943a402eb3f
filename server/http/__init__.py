"""HTTP API v1 of the inference server (DESIGN.md §4): a thin FastAPI shell that validates, queues and serialises.

- ``app.create_app(actors_root, token, device) -> FastAPI``
- ``actor_registry.ActorRegistry``: actor folders under a root, loaded on first use
- ``auth.load_or_create_token``: the bearer token in the user's config dir
- ``inference.InferenceQueue``: serialises model work (one GPU, many clients)
"""
