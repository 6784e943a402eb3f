"""HTTP API v1 of the inference server (DESIGN.md §4): a thin FastAPI shell that validates, queues and serialises.

- ``app.create_app(actors_root, token, device) -> FastAPI``
- ``actor_registry.ActorRegistry``: actor folders under a root, loaded on first use, unloaded least recently used
  first under memory pressure; ``actor_registry.BUNDLED_ACTORS_DIR`` (server/actors) is ``serve``'s default root
- ``auth.load_or_create_token``: the bearer token in the user's config dir
- ``inference.InferenceQueue``: serialises model work (one GPU, many clients), retries once after freeing memory
"""
