"""The benchmark's pieces: the framing camera, and frames of both paths side by side with their agreement."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_human_addon.core.camera import PinholeCamera, project
from server.commands.bench import (
    _poses,
    add_arguments,
    bench_mesh,
    bench_train,
    bench_views,
    frame_launches,
    frame_runs,
    framing_camera,
    parse_dilations,
    parse_margins,
    side_by_side,
)
from server.neural_body.mesh import grid_axes
from server.neural_body.sparse_input import prepare_sparse_input

DEMO_ACTOR = Path(__file__).resolve().parents[3] / "server" / "actors" / "demo"


@pytest.fixture(scope="module")
def demo_actor():
    from server.neural_body.actor import load_actor

    return load_actor(DEMO_ACTOR)


def test_framing_camera_fills_about_80_percent_of_the_height(demo_actor):
    verts, *_ = _poses(demo_actor, 1)[0]
    K, R, T = framing_camera(verts, 256)
    pixels, _ = project(verts.astype(np.float64), PinholeCamera(K, R, T, 256, 256))
    height = float(np.ptp(pixels[:, 1])) / 256
    assert 0.7 <= height <= 0.9
    assert pixels.min() >= 0 and pixels.max() <= 255


@pytest.mark.slow
def test_frame_runs_measure_both_paths_on_new_poses_and_their_agreement(demo_actor):
    times, renders = frame_runs(demo_actor.network, _poses(demo_actor, 2), 24, ["fast", "reference"])
    assert [len(times[p]) for p in ("fast", "reference")] == [2, 2] and len(renders["reference"]) == 2
    result = side_by_side({"poses": 2}, times, renders)
    assert result["fast_seconds"] > 0 and result["reference_seconds"] > 0
    # the ratio is printed to 0.1 (and the seconds to 1 ms): equal to the quotient up to that rounding
    assert result["reference_over_fast"] == pytest.approx(result["reference_seconds"] / result["fast_seconds"],
                                                          rel=0.02, abs=0.051)
    assert result["agreement"]["min_psnr_premultiplied_db"] >= 40
    assert result["agreement"]["max_alpha_difference"] <= 0.02


@pytest.mark.slow
def test_bench_views_measures_one_pose_from_new_cameras_with_the_caches(demo_actor):
    result = bench_views(demo_actor.network, _poses(demo_actor, 1)[0], 24, ["fast", "reference"], views=2)
    assert result["views"] == 2 and result["fast_seconds"] > 0 and result["reference_seconds"] > 0
    assert result["agreement"]["min_psnr_premultiplied_db"] >= 40
    assert result["agreement"]["max_alpha_difference"] <= 0.02


@pytest.mark.slow
def test_frame_launches_count_both_march_schedules(demo_actor):
    result = frame_launches(demo_actor.network, _poses(demo_actor, 1)[0], 48)
    cpu, gpu = result["cpu_schedule"], result["cuda_schedule"]
    assert gpu["ops"] < cpu["ops"] and gpu["syncs"] < cpu["syncs"]  # fewer launches and read-backs per frame
    assert gpu["density_points"] > cpu["density_points"] > 0  # for more density queries (no stop at the surface)
    assert gpu["syncs"] > 0 and gpu["host_tensors"] > 0


@pytest.mark.slow
def test_bench_mesh_reports_the_fast_mesh_its_queries_and_its_counts(demo_actor):
    pose = _poses(demo_actor, 1)[0]  # 1 cm: the bench's 5 mm mesh takes seconds on a CPU, and it is made twice
    result = bench_mesh(demo_actor.network, pose, ["fast"], full_reference=False, quick=True, voxel_size=0.01)
    assert result["voxel_size"] == 0.01 and result["fast_seconds"] > 0 and result["fast_vertices"] > 10000
    grid = prepare_sparse_input(*pose[:3]).world_bounds.numpy()
    assert 0 < result["fast_network_points"] < 0.3 * np.prod([len(a) for a in grid_axes(grid, 0.01)])
    counted = result["fast_launches_gpu_batches"]
    assert 0 < counted["syncs"] < 100 and counted["host_tensors"] < 40 and counted["ops"] > counted["syncs"]


@pytest.mark.slow
def test_bench_train_times_the_trainers_loss_for_both_samplers_and_restores_the_weights(demo_actor):
    network = demo_actor.network
    before = {k: v.clone() for k, v in network.state_dict().items()}
    result = bench_train(network, _poses(demo_actor, 1)[0], ["fast", "reference"], 1)
    assert result["occupancy"]["rays_per_iteration"] == result["box"]["rays_per_iteration"] == 1024
    assert result["occupancy"]["seconds_per_iteration"] > 0 and result["box"]["seconds_per_iteration"] > 0
    assert result["occupancy_over_box_iterations"] > 0
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items()) and not network.training


def test_sweep_settings_parse_and_bad_ones_are_named_before_anything_runs(capsys):
    assert parse_dilations("2,1; 1,1;1") == [(2, 1), (1, 1), (1,)]
    assert parse_dilations("") == [] and parse_margins("0.03, 0.05") == [0.03, 0.05]
    for bad in ("2,x", "1,-1", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="cell counts"):
            parse_dilations(bad)
    for bad in ("x", "-0.1", "2", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="margin in metres"):
            parse_margins(bad)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--dilations", "2;x"])
    assert exit_info.value.code == 2 and "'x' is not a comma-separated list" in capsys.readouterr().err


@pytest.mark.slow
def test_frame_runs_apply_the_dilations_and_the_refinement_to_the_fast_path_only(demo_actor, monkeypatch):
    from server.neural_body.fast_renderer import FastRenderer

    refining = FastRenderer.refined_occupancy
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(1)
        return refining(self, *args, **kwargs)

    monkeypatch.setattr(FastRenderer, "refined_occupancy", counted)
    poses = _poses(demo_actor, 1)
    # 256²: enough samples per probe for the 2 cm level to pay (REFINE_MIN_SAMPLES_PER_PROBE)
    _, wide = frame_runs(demo_actor.network, poses, 256, ["fast"], dilations=(3,))
    _, narrow = frame_runs(demo_actor.network, poses, 256, ["fast"], dilations=(0,))
    # no cells kept around the positive probes loses the thin parts (whole rays): the setting reached the renderer
    assert float(np.abs(wide["fast"][0].opacity - narrow["fast"][0].opacity).max()) > 0.1
    # without the refinement: the body occupancy alone, the same image (the refinement only skips empty samples)
    refined_frames = len(calls)
    _, unrefined = frame_runs(demo_actor.network, poses, 256, ["fast"], refine=False)
    assert refined_frames == 2 and len(calls) == 2  # the unrefined frame never refined
    assert float(np.abs(wide["fast"][0].opacity - unrefined["fast"][0].opacity).max()) < 0.02


@pytest.mark.slow
def test_frame_runs_compile_the_fast_paths_point_network_only(demo_actor):
    """``bench --compile``'s frames: the fast path through torch.compile gives the eager fast path's image."""
    from server.commands.bench import render_image_warm_up

    poses = _poses(demo_actor, 1)
    with torch.no_grad():
        render_image_warm_up(demo_actor.network, poses[0], ["fast"], compile=True)  # the compilation, untimed
    times, compiled = frame_runs(demo_actor.network, poses, 24, ["fast", "reference"], compile=True)
    _, eager = frame_runs(demo_actor.network, poses, 24, ["fast"])
    assert times["fast"][0] > 0 and times["reference"][0] > 0
    a, b = compiled["fast"][0], eager["fast"][0]
    assert a.opacity.max() > 0.5
    np.testing.assert_allclose(a.straight_rgb * a.opacity[..., None], b.straight_rgb * b.opacity[..., None],
                               atol=1e-3)
    np.testing.assert_allclose(a.opacity, b.opacity, atol=1e-4)


@pytest.mark.slow
def test_bench_profile_writes_the_frames_and_meshes_tables_and_traces(demo_actor, tmp_path):
    import gzip

    from server.commands.bench import bench_profile

    result = bench_profile(demo_actor.network, _poses(demo_actor, 1)[0], 32, tmp_path, voxel_size=0.02)
    assert sorted(Path(p).name for p in result["files"]) == [
        "cpu_frame_ops.txt", "cpu_frame_trace.json.gz", "cpu_mesh_ops.txt", "cpu_mesh_trace.json.gz"]
    for name in ("frame", "mesh"):
        figures = result[name]
        assert figures["wall_ms"] > 0 and figures["device_busy_ms"] is None and figures["device_kernels"] == 0
        table = (tmp_path / f"cpu_{name}_ops.txt").read_text()
        assert "aten::" in table and "Self CPU" in table
        trace = json.loads(gzip.decompress((tmp_path / f"cpu_{name}_trace.json.gz").read_bytes()))
        assert any(e.get("name") == "aten::embedding_bag" for e in trace["traceEvents"])
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_figures_are_saved_as_each_one_is_measured():
    from server.commands.bench import Figures

    written = []
    result = {"devices": {}, "complete": False}
    result["devices"]["cpu"] = figures = Figures(lambda: written.append(json.dumps(result)))
    figures["device"] = "cpu"
    figures["frame"] = {"fast_seconds": 1.0}
    assert [json.loads(w)["devices"]["cpu"] for w in written] == [{"device": "cpu"},
                                                                 {"device": "cpu", "frame": {"fast_seconds": 1.0}}]


@pytest.mark.slow
def test_the_gpu_runs_frame_variants_and_compiled_precisions_measure_each_setting(demo_actor):
    """What ``bench --device cuda`` adds to the frame figure (run here on the CPU, at 24²): every setting measured
    against the reference frames, each agreeing with them."""
    from server.commands.bench import compiled_frame_variants, gpu_frame_variants

    poses = _poses(demo_actor, 1)
    times, renders = frame_runs(demo_actor.network, poses, 24, ["reference"])
    settings = []

    def fast_variant(**setting):
        settings.append(setting)
        t, r = frame_runs(demo_actor.network, poses, 24, ["fast"], **setting)
        return side_by_side({**setting}, {**t, **times}, {**r, **renders})

    variants = gpu_frame_variants(fast_variant)
    assert sorted(variants["frame_precisions"]) == ["bf16", "fp16", "tf32"]
    assert sorted(variants["frame_segmented"]) == ["16", "32", "8"]
    assert variants["frame_unrefined"]["refine"] is False
    compiled = compiled_frame_variants(demo_actor.network, poses[0], fast_variant, ("fp32",))
    assert compiled["fp32"]["compile_seconds"] > 0 and compiled["fp32"]["compile"] is True
    measured = [*variants["frame_precisions"].values(), *variants["frame_segmented"].values(),
                variants["frame_unrefined"], compiled["fp32"]]
    assert len(measured) == len(settings) == 8
    for figure in measured:
        assert figure["fast_seconds"] > 0 and figure["agreement"]["min_psnr_premultiplied_db"] >= 40
