"""Fixtures of the add-on core tests: a canned stdlib HTTP server (pure logic) and a real `python -m server serve`
over a tiny random actor (the tests/server fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.addon.core.canned_server import CannedServer, start_canned_server


@pytest.fixture
def canned() -> Iterator[CannedServer]:
    state, stop = start_canned_server()
    try:
        yield state
    finally:
        stop()


@pytest.fixture(scope="session")
def actors_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.server.live_server import make_actor_anywhere

    actors = tmp_path_factory.mktemp("addon_core_actors")
    make_actor_anywhere(actors)
    return actors


@pytest.fixture(scope="session")
def real_server(actors_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real server for the module's read/render/job tests (the kill test starts its own)."""
    from tests.server.live_server import running_server

    root = tmp_path_factory.mktemp("addon_core_server")
    with running_server(actors_dir, root / "jobs", root / "config", root / "server.log") as srv:
        yield srv
