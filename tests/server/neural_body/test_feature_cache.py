"""Per-pose feature cache: cached renders equal uncached ones bit for bit, a pose is encoded once, LRU by bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.neural_body.feature_cache import CachedRenderer, FeatureCache, pose_key, volumes_nbytes
from server.neural_body.volume_renderer import render_image
from tests.server.live_server import ACTOR_ID, body, calibrate_density, camera


@pytest.fixture(scope="module")
def posed():
    from server.body.model import load_body_model
    from server.neural_body.network import NeuralBodyNetwork

    model = load_body_model(None)
    torch.manual_seed(0)
    network = NeuralBodyNetwork(model.num_vertices, 2).eval()
    b = body(1)
    verts = model.pose(b).vertices[0].numpy()
    calibrate_density(network, verts, b)  # a visible silhouette, so the compared pixels are not all zero
    return network, verts, np.float32(b["Rh"]), np.float32(b["Th"])


def _render(network, verts, rh, th, cam, renderer=None):
    return render_image(network, verts, rh, th, 1, np.asarray(cam["K"]), np.asarray(cam["R"]), np.asarray(cam["T"]),
                        cam["width"], cam["height"], renderer=renderer)


def test_cached_render_equals_uncached_and_encodes_once(posed, monkeypatch):
    network, verts, rh, th = posed
    calls = []
    encode = network.encode_sparse_voxels
    monkeypatch.setattr(network, "encode_sparse_voxels", lambda s: calls.append(1) or encode(s))
    cache = FeatureCache(512 * 2**20)
    cams = [camera(16, 12), {**camera(20, 10), "K": [[30.0, 0.0, 9.5], [0.0, 30.0, 4.5], [0.0, 0.0, 1.0]]}]
    for i, cam in enumerate(cams):
        plain = _render(network, verts, rh, th, cam)
        cached = _render(network, verts, rh, th, cam, CachedRenderer(cache=cache, owner="a"))
        assert plain.alpha.max() > 0  # the body is in view
        for name in ("rgb", "alpha", "depth", "mask_at_box"):
            assert np.array_equal(getattr(plain, name), getattr(cached, name)), name
        assert (cache.misses, cache.hits) == (1, i)  # the second camera of the pose reuses the volumes
    assert len(calls) == 2 + 1  # two uncached renders + one cached encode
    assert len(cache) == 1 and cache.bytes_used > 0

    other = verts * np.float32(1.05)  # another pose (a larger body): a new entry
    _render(network, other, rh, th, cams[0], CachedRenderer(cache=cache, owner="a"))
    assert cache.misses == 2 and len(cache) == 2 and len(calls) == 4


def test_a_pose_that_only_moves_reuses_the_volumes(posed):
    """Moving the body (Th) leaves its SMPL-frame voxels unchanged: the cached volumes serve it, and its render
    matches an uncached render of the moved body."""
    network, verts, rh, th = posed
    cache = FeatureCache(512 * 2**20)
    shift = np.float32([0.3, -0.2, 0.1])
    cam = camera(16, 12)
    _render(network, verts, rh, th, cam, CachedRenderer(cache=cache, owner="a"))
    moved = _render(network, verts + shift, rh, th + shift, cam, CachedRenderer(cache=cache, owner="a"))
    assert (cache.misses, cache.hits) == (1, 1)
    plain = _render(network, verts + shift, rh, th + shift, cam)
    assert plain.alpha.max() > 0
    np.testing.assert_allclose(moved.alpha, plain.alpha, atol=1e-5)
    np.testing.assert_allclose(moved.rgb, plain.rgb, atol=1e-5)


def test_pose_key_separates_actor_device_and_pose(posed):
    from server.neural_body.sparse_input import prepare_sparse_input

    _, verts, rh, th = posed
    sparse = prepare_sparse_input(verts, rh, th)
    k = pose_key("a", sparse, "cpu")
    assert k == pose_key("a", prepare_sparse_input(torch.from_numpy(verts), rh, th), "cpu")
    assert k == pose_key("a", prepare_sparse_input(verts + 1.0, rh, th + 1.0), "cpu")  # only moved: same voxels
    bent = verts.copy()
    bent[0, 0] += 0.05
    assert len({k, pose_key("b", sparse, "cpu"), pose_key("a", sparse, "meta"),
                pose_key("a", prepare_sparse_input(bent, rh, th), "cpu"),
                pose_key("a", prepare_sparse_input(verts, rh + 0.1, th), "cpu"),
                pose_key("a", prepare_sparse_input(verts, rh, th, voxel_size=0.01), "cpu"),
                pose_key("a", sparse, "cpu", batchnorm="running")}) == 7


def test_lru_evicts_by_memory_and_owner():
    def vol(n: int):
        return lambda: [torch.zeros(n // 4, dtype=torch.float32)]  # n bytes

    cache = FeatureCache(1000)
    for key in ("a", "b", "c"):
        cache.get_or_encode(key, "x", vol(300))
    assert cache.bytes_used == 900 and len(cache) == 3
    cache.get_or_encode("a", "x", vol(300))  # touch a: b is now the oldest
    cache.get_or_encode("d", "y", vol(300))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in ("a", "c", "d") if k in cache}
    assert cache.bytes_used == 900 <= cache.budget_bytes
    big = cache.get_or_encode("huge", "x", vol(2000))  # over the whole budget: returned, not kept
    assert volumes_nbytes(big) == 2000 and "huge" not in cache and len(cache) == 3
    assert cache.evict_owner("x") == 2 and cache.bytes_used == 300 and "d" in cache
    with pytest.raises(ValueError, match="budget"):
        FeatureCache(-1)


def test_server_reuses_pose_across_cameras_and_unload_evicts(server):
    with server.client() as c:
        c.post(f"/v1/actors/{ACTOR_ID}/unload")
        before = c.get("/v1/health").json()["feature_cache"]
        assert before["entries"] == 0 and before["budget_bytes"] == 512 * 2**20
        req = {"body": body(0), "camera": camera(16, 12), "outputs": ["rgba"]}
        first = c.post(f"/v1/actors/{ACTOR_ID}/render", json=req)
        second = c.post(f"/v1/actors/{ACTOR_ID}/render", json={**req, "camera": camera(20, 14)})
        again = c.post(f"/v1/actors/{ACTOR_ID}/render", json=req)
        assert first.status_code == second.status_code == again.status_code == 200
        assert first.content == again.content
        after = c.get("/v1/health").json()["feature_cache"]
        assert after["misses"] - before["misses"] == 1 and after["hits"] - before["hits"] == 2
        assert after["entries"] == 1 and after["bytes"] > 0
        c.post(f"/v1/actors/{ACTOR_ID}/unload")
        assert c.get("/v1/health").json()["feature_cache"]["entries"] == 0


@pytest.mark.slow
def test_mesh_shares_cached_volumes_and_matches_uncached(posed):
    """A mesh whose volumes come from the cache (filled by a render) equals a mesh with its own encode; the
    BatchNorm mode is part of the key, so volumes of a running-statistics render never feed a mesh."""
    from server.neural_body.batchnorm_mode import batchnorm_mode, set_batchnorm_mode
    from server.neural_body.feature_cache import cached_volumes
    from server.neural_body.mesh import extract_mesh
    from server.neural_body.sparse_input import prepare_sparse_input

    network, verts, rh, th = posed
    saved = batchnorm_mode(network)
    sparse = prepare_sparse_input(verts, rh, th)
    cache = FeatureCache(512 * 2**20)

    def cached_mesh():
        return extract_mesh(network, sparse, 1, voxel_size=0.05,
                            encode=lambda s: cached_volumes(cache, "a", network, s))

    try:
        set_batchnorm_mode(network, "batch_stats")  # renders and meshes both use the frame's batch statistics
        plain = extract_mesh(network, sparse, 1, voxel_size=0.05)
        _render(network, verts, rh, th, camera(16, 12), CachedRenderer(cache=cache, owner="a"))
        assert (cache.misses, cache.hits) == (1, 0)
        shared = cached_mesh()
        assert (cache.misses, cache.hits) == (1, 1)
        assert len(plain.faces) > 0
        for name in ("vertices", "faces", "colors"):
            assert np.array_equal(getattr(plain, name), getattr(shared, name)), name

        set_batchnorm_mode(network, "running")  # a render in another mode: other volumes, another entry
        _render(network, verts, rh, th, camera(16, 12), CachedRenderer(cache=cache, owner="a"))
        assert (cache.misses, len(cache)) == (2, 2)
        again = cached_mesh()  # meshes switch to batch statistics: the first entry again
        assert (cache.misses, cache.hits) == (2, 2)
        assert np.array_equal(again.vertices, plain.vertices) and np.array_equal(again.colors, plain.colors)
    finally:
        set_batchnorm_mode(network, saved)


def test_a_refined_occupancy_is_made_once_per_pose_and_then_used_by_every_image(posed):
    """A large image refines the pose's occupancy by density (cached beside its features); a small image of the
    same pose, which alone would not pay for the probes, then uses it; the refinement moves with the body."""
    from server.neural_body.fast_renderer import FastRenderer
    from server.neural_body.feature_cache import CachedFastRenderer

    network, verts, rh, th = posed
    cache = FeatureCache(512 * 2**20)
    eager = CachedFastRenderer(cache=cache, owner="a", refine_min_samples_per_probe=0.0)
    first = _render(network, verts, rh, th, camera(16, 12), eager)
    assert eager.last_stats["probe_points"] > 0
    small = CachedFastRenderer(cache=cache, owner="a")
    again = _render(network, verts, rh, th, camera(16, 12), small)
    assert small.last_stats["probe_points"] == 0
    assert small.last_stats["density_points"] == eager.last_stats["density_points"]
    assert np.array_equal(again.alpha, first.alpha) and np.array_equal(again.rgb, first.rgb)
    shift = np.float32([0.3, -0.2, 0.1])  # the body moved: its voxels, and the refined cells, move with it
    moved = _render(network, verts + shift, rh, th + shift, camera(16, 12), small)
    assert small.last_stats["probe_points"] == 0
    plain = _render(network, verts + shift, rh, th + shift, camera(16, 12), FastRenderer(refine=False))
    assert plain.alpha.max() > 0.5
    np.testing.assert_allclose(moved.alpha, plain.alpha, atol=1e-3)
    np.testing.assert_allclose(moved.rgb, plain.rgb, atol=1e-3)
    fresh = CachedFastRenderer(cache=FeatureCache(512 * 2**20), owner="a")
    _render(network, verts, rh, th, camera(16, 12), fresh)
    assert fresh.last_stats["probe_points"] == 0  # a small image of a new pose is not worth the probes


def test_the_images_of_a_pose_together_pay_for_its_refinement(posed):
    """A level too costly for one image is applied once the pose's images so far have had enough samples (a preview
    orbiting one pose gets the refinement), and the refined images still agree with the unrefined ones."""
    from server.neural_body.fast_renderer import FastRenderer
    from server.neural_body.feature_cache import CachedFastRenderer, RefinedOccupancy

    network, verts, rh, th = posed
    cam = camera(16, 12)
    never = CachedFastRenderer(cache=FeatureCache(512 * 2**20), owner="a", refine_min_samples_per_probe=1e12)
    _render(network, verts, rh, th, cam, never)
    (tally,) = [v for _, v, _ in never.cache._entries.values() if isinstance(v, RefinedOccupancy)]
    assert tally.occupancy.level == 0 and tally.samples > 0 and never.last_stats["probe_points"] == 0
    # one image pays for 1 / 2.5 of the first level: the third image of the pose refines it
    per_probe = 2.5 * tally.samples / tally.occupancy.next_level_probes
    renderer = CachedFastRenderer(cache=FeatureCache(512 * 2**20), owner="a", refine_min_samples_per_probe=per_probe)
    probes = []
    for _ in range(4):
        image = _render(network, verts, rh, th, cam, renderer)
        probes.append(renderer.last_stats["probe_points"])
    assert probes[0] == probes[1] == 0 and probes[2] > 0 and probes[3] == 0
    plain = _render(network, verts, rh, th, cam, FastRenderer(refine=False))
    np.testing.assert_allclose(image.alpha, plain.alpha, atol=1e-3)
    np.testing.assert_allclose(image.rgb, plain.rgb, atol=1e-3)
