"""Listing and lookup agree (issue 14, item 12): an actor folder symlinked from outside the actors root is refused
on use, so it is not listed either."""

from __future__ import annotations

import pytest

from server.errors import InvalidActorId
from server.inference.actor_registry import ActorRegistry
from tests.server.live_server import ACTOR_ID, make_actor


def test_symlinked_actor_folders_are_listed_only_when_usable(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "actors"
    outside.mkdir()
    root.mkdir()
    make_actor(outside)
    (root / "linked").symlink_to(outside / ACTOR_ID, target_is_directory=True)
    registry = ActorRegistry(root)
    assert registry.list() == []
    with pytest.raises(InvalidActorId):
        registry.folder("linked")
