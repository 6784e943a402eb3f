"""The `serve` command's checks before it binds, the token file, and the inference queue's serialisation."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from tests.server.live_server import REPO


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "server", "serve", "--actors", str(tmp_path), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)


def test_non_loopback_host_needs_allow_remote(tmp_path):
    r = _serve(tmp_path, "--host", "0.0.0.0")
    assert r.returncode == 2 and "--allow-remote" in r.stderr


def test_missing_actors_folder(tmp_path):
    r = _serve(tmp_path / "nope")
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_ray_arguments_are_checked():
    from server.commands.serve import check_arguments
    from tests.cli_args import command_args

    def problem(*argv: str) -> str | None:
        return check_arguments(command_args("serve", *argv))

    assert problem("--ray", "auto", "--ray-workers", "2", "--ray-gpus-per-worker", "0.5") is None
    assert "need --ray" in problem("--ray-workers", "2")
    assert "--ray-workers must be >= 1" in problem("--ray", "local", "--ray-workers", "0")
    assert "--ray-cpus-per-worker must be > 0" in problem("--ray", "local", "--ray-cpus-per-worker", "0")
    assert "--ray-gpus-per-worker must be >= 0" in problem("--ray", "local", "--ray-gpus-per-worker", "-1")


def test_renderer_arguments_are_checked():
    from server.commands.serve import check_arguments
    from tests.cli_args import command_args

    assert check_arguments(command_args("serve", "--compile")) is None
    assert "needs --renderer fast" in check_arguments(command_args("serve", "--compile", "--renderer", "reference"))
    assert "--margin must be 0..1" in check_arguments(command_args("serve", "--margin", "2"))


def test_is_loopback():
    from server.commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


def test_token_created_once_with_private_permissions(tmp_path, monkeypatch):
    from server.http.auth import load_or_create_token, token_matches, token_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    token, created = load_or_create_token()
    assert created and token_path() == tmp_path / "neural-human" / "token"
    assert stat.S_IMODE(token_path().stat().st_mode) == 0o600
    again, created_again = load_or_create_token()
    assert again == token and not created_again
    assert token_matches(f"Bearer {token}", token) and token_matches(f"bearer {token}", token)
    assert not token_matches(None, token) and not token_matches(token, token)
    assert not token_matches(f"Bearer {token}x", token) and not token_matches(f"Basic {token}", token)


def _startup_log(log_path) -> str:
    return log_path.read_text()


@pytest.mark.slow
def test_serve_without_actors_serves_the_bundled_folder(tmp_path):
    import httpx

    from server.inference.limits import BUNDLED_ACTORS_DIR
    from server.neural_body.actor import MANIFEST_FILE
    from tests.server.live_server import running_server

    assert BUNDLED_ACTORS_DIR == REPO / "server" / "actors"
    # whatever is shipped at test time: every visible folder with a manifest is an actor (hidden ones are the
    # temporary folders of an actor being written)
    expected = sorted(p.name for p in BUNDLED_ACTORS_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and (p / MANIFEST_FILE).is_file()) if BUNDLED_ACTORS_DIR.is_dir() else []
    log = tmp_path / "serve.log"
    with running_server(None, tmp_path / "jobs", tmp_path / "cfg", log) as srv, srv.client() as c:
        listed = [a["id"] for a in c.get("/v1/actors").json()["actors"]]
        assert httpx.get(srv.url + "/v1/health").json()["loaded_actors"] == []  # listing loads nothing
    assert listed == expected
    text = _startup_log(log)
    if expected:
        assert f"serving {len(expected)} actor(s) from {BUNDLED_ACTORS_DIR}: {', '.join(expected)}" in text
    else:
        assert f"no actors found in {BUNDLED_ACTORS_DIR}: train one with `python -m server train` or pass --actors" \
            in text


@pytest.mark.slow
def test_serve_starts_on_an_empty_actors_folder(tmp_path):
    from tests.server.live_server import running_server

    actors = tmp_path / "empty"
    actors.mkdir()
    log = tmp_path / "serve.log"
    with running_server(actors, tmp_path / "jobs", tmp_path / "cfg", log, "--max-loaded", "2") as srv, \
            srv.client() as c:
        assert c.get("/v1/actors").json() == {"actors": []}
        memory = c.get("/v1/health").json()["memory"]
    assert memory["max_loaded"] == 2 and memory["lru_order"] == [] and memory["evictions"] == 0
    text = _startup_log(log)
    assert f"no actors found in {actors.resolve()}: train one with `python -m server train` or pass --actors" in text
    assert "at most 2 loaded" in text


@pytest.mark.parametrize("flag", ["--max-loaded", "--min-free-gpu-mb"])
def test_negative_memory_limits_refused(tmp_path, flag):
    r = _serve(tmp_path, flag, "-1")
    assert r.returncode == 2 and "--max-loaded and --min-free-gpu-mb must be >= 0" in r.stderr
