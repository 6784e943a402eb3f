"""Neural Human server: body models, data tools, the Neural Body renderer and the HTTP inference server."""

__version__ = "0.1.0"
