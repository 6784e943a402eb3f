"""The `server` fixture: a real server over a tiny random actor, shared by the server tests (see live_server.py)."""

from __future__ import annotations

import pytest

from tests.server.live_server import make_actor, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server")
    actors = root / "actors"
    actors.mkdir()
    make_actor(actors)
    (actors / "not-an-actor").mkdir()  # folders without a manifest are not listed
    with running_server(actors, root / "jobs", root / "config", root / "server.log") as srv:
        yield srv
