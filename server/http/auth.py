"""The bearer token: generated on first start, stored with 0600 permissions in the user's config dir."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from neural_human_addon.core.atomic_files import write_bytes_atomic

TOKEN_BYTES = 32


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/neural-human`` (default ``~/.config/neural-human``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "neural-human"


def token_path() -> Path:
    return config_dir() / "token"


def load_or_create_token(path: Path | None = None) -> tuple[str, bool]:
    """(token, created): the stored token, or a new random one written atomically with 0600 permissions."""
    path = path or token_path()
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    write_bytes_atomic(path, (token + "\n").encode(), mode=0o600)  # user-only: the token grants access
    return token, True


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
