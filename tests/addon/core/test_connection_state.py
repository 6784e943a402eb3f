"""The add-on's record of what the server said (pure): panel lines and the actor menu."""

from __future__ import annotations

from neural_human_addon.core.connection_state import ConnectionState, describe_health


def test_health_line_names_device_gpu_and_free_memory() -> None:
    health = {"server_version": "0.1.0",
              "device": {"type": "cuda", "name": "NVIDIA H100", "free_memory_bytes": 70 * 2**30}}
    assert describe_health(health) == "server 0.1.0, CUDA (NVIDIA H100), 70.0 GiB free"
    assert describe_health({"server_version": "0.1.0", "device": {"type": "cpu"}}) == "server 0.1.0, CPU"


def test_actor_menu_follows_the_actor_list_and_says_when_empty() -> None:
    state = ConnectionState()
    assert state.actor_enum_items[0][0] == ""
    state.set_actors([{"id": "demo", "name": "Demo actor", "frames": 68, "body_model": "demo"}])
    assert state.actor_enum_items == [("demo", "Demo actor", "Demo actor: 68 frames trained, body demo")]
    assert state.actor("demo")["frames"] == 68 and state.actor("other") is None
    state.set_actors([])
    assert state.actor_enum_items == [("", "(no actors on the server)", "")]
    state.reset()
    assert state.health is None and state.actor_enum_items == [("", "(connect first)", "")]
