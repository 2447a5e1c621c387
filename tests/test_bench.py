import json
import types

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import coordinate_ramps

from flmlib import bench
from flmlib.detect import detect_faces
from flmlib.io import read_image
from flmlib.landmarkers.base import DEFAULT_BATCH_SIZE
from flmlib.models import build_model
from flmlib.paths import PROJECT_ROOT
from flmlib.train import TrainConfig, model_config, save_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_root):
    """A prepared folder in the prepare stage's format with three helen test faces, an O-Net file, stage timings."""
    root = tmp_path_factory.mktemp("bench")
    prepared = root / "prepared"
    prepared.mkdir()
    rows, boxes = [], []
    for jpg in sorted((data_root / "300w/helen/testset").glob("*.jpg")):
        found = detect_faces(read_image(jpg), 1)
        if len(found):
            rows.append({"face_id": f"300w/helen/testset/{jpg.stem}", "image_path": str(jpg)})
            boxes.append(found[0])
        if len(rows) == 3:
            break
    np.savez(prepared / "test_300w_common.npz", boxes=np.stack(boxes), face_id=np.array([r["face_id"] for r in rows]))
    pd.DataFrame(rows).to_csv(prepared / "faces.csv", index=False)
    torch.manual_seed(0)
    model = build_model("onet")
    checkpoint = root / "onet.pt"
    save_model(checkpoint, model, model_config(TrainConfig(), types.SimpleNamespace(crop_size=96, context_factor=2.0), model))
    timings = root / "timings"
    timings.mkdir()
    (timings / "prepare.json").write_text(json.dumps({"stage": "prepare", "seconds": 12.5}))
    return prepared, checkpoint, timings, model


def test_tiny_bench_writes_every_field(setup, tmp_path, capsys):
    prepared, checkpoint, timings, model = setup
    out = tmp_path / "bench.json"
    code = bench.main(["--tiny", "--prepared", str(prepared), "--checkpoint", str(checkpoint),
                       "--timings", str(timings), "--out", str(out), "--methods", "dlib", "mediapipe"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["faces"]["faces"] == 3 and result["onet_weights"] == "trained"
    timed = [name for name, entry in result["onet"].items() if "batch_1" in entry]
    assert {"torch-channels-last", "torch-channels-last-1thread", "onnxruntime"} <= set(timed)
    assert "torch-nchw" not in result["onet"]  # kept only as evidence: --all-backends
    for name in timed:
        for batch in bench.BATCH_SIZES:
            for part in ("network_only", "from_context_crops", "detection_excluded"):
                row = result["onet"][name][f"batch_{batch}"][part]
                assert row["ms_per_face"] > 0 and row["faces_per_s"] > 0
                assert row["faces_per_s"] == pytest.approx(1000 / row["ms_per_face"], rel=0.01)
        assert set(result["ratio_onet_to_dlib"]["by_backend"][name]) == {"batch_1", "batch_256"}
        agree = result["onet"][name]["agreement_with_reference"]
        assert 0 <= agree["mean_px"] <= agree["max_px"] < 2  # every backend computes the same points (bf16: ~0.1 px)
    assert result["onet"]["torch-channels-last"]["agreement_with_reference"]["max_px"] == 0
    parts = result["where_time_goes"]["ms_per_face"]
    steps, crop = parts["steps"], parts["context_crop"]
    assert set(steps) == {"input_crop_from_image", "to_tensor", "network", "to_image_pixels"} and min(steps.values()) > 0
    assert crop["speedup"] == pytest.approx(crop["whole_image_preshrink_baseline"] / crop["context_region_only"], rel=0.02)
    assert "whole-image pre-shrink (baseline)" in result["markdown"]
    assert "skipped" in result["onet"]["torch-compile"]
    assert result["dlib"]["detection_excluded"]["faces_per_s"] > 0
    ratio = result["ratio_onet_to_dlib"]
    assert ratio["best_backend_batch_256"] in timed and isinstance(ratio["target_met"], bool)
    inter = ratio["interleaved"]
    assert inter["ratio"] == pytest.approx(inter["onet"]["faces_per_s"] / inter["dlib"]["faces_per_s"], rel=0.01)
    assert ratio["best_network_only_backend"] in timed and isinstance(ratio["target_met_network_only"], bool)
    det = result["detection_included"]
    assert det["images"] == 2 and det["hog_ms_per_image"] > 0 and "dlib" in det["methods"]
    assert all(v["faces_per_s"] > 0 for v in det["methods"].values())
    sizes = result["model_size"]
    assert sizes["onet"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert sizes["onet"]["mb_on_disk"] == pytest.approx(checkpoint.stat().st_size / 1e6, abs=1e-3)
    assert sizes["dlib"]["parameters"] > sizes["onet"]["parameters"] and sizes["dlib"]["mb_on_disk"] > 1
    stages = result["stage_timings"]
    assert stages["stages_seconds"]["prepare"] == 12.5
    # only prepare has a timing file here, so it is the whole study
    assert list(stages["stages_seconds"]) == bench.stage_names(timings) == ["prepare"]
    assert stages["complete"] is True and stages["study_seconds"] == 12.5
    assert "| O-Net | onnxruntime | 256 |" in result["markdown"]
    methods = result["methods"]["methods"]
    assert set(methods) == {"dlib", "mediapipe"} and methods["dlib"]["ratio_to_reference"] == 1.0
    # MediaPipe is timed where its environment is built, and otherwise listed with the reason
    assert methods["mediapipe"].get("ms_per_face", 0) > 0 or "mediapipe-env" in methods["mediapipe"]["skipped"]
    assert "| dlib | dlib_predictor |" in result["markdown"]
    assert out.with_suffix(".md").read_text().strip() == result["markdown"].strip()
    assert "target 10x" in capsys.readouterr().out


def test_baseline_crop_samples_the_same_places_as_crop_context():
    """The benchmark's before/after crop comparison is fair only if both cut the same region: on coordinate ramps,
    each crop pixel holds the image coordinates it was sampled at."""
    from flmlib.crops import apply_affine, context_matrix, crop_context, invert_affine

    image = coordinate_ramps(700, 900)
    grid = np.stack(np.meshgrid(np.arange(96), np.arange(96)), axis=-1).astype(np.float64)
    for box in ([300.5, 200.25, 421.0, 320.0], [250.2, 150.9, 531.7, 433.3], [400.3, 300.7, 440.1, 341.2]):
        box = np.array(box, np.float32)
        expected = apply_affine(grid, invert_affine(context_matrix(box, 96, 2.0)))
        # OpenCV's area resize at a non-integer factor places its samples to within a tenth of a pixel.
        np.testing.assert_allclose(bench.whole_image_context_crop(image, box, 96, 2.0)[..., :2], expected, atol=0.1)
        np.testing.assert_allclose(crop_context(image, box, 96, 2.0)[0][..., :2], expected, atol=0.01)


def test_missing_prepared_data_is_a_clear_error(tmp_path, capsys):
    code = bench.main(["--tiny", "--prepared", str(tmp_path), "--out", str(tmp_path / "b.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert "test_300w_common.npz not found" in err and "prepare" in err
    assert not (tmp_path / "b.json").exists()


def test_dlib_model_size_reads_a_shape_predictor_file(tmp_path):
    """Train a tiny dlib shape predictor with known structure and count its parts back from the file."""
    import dlib

    rng = np.random.default_rng(0)
    images, objects = [], []
    for _ in range(4):
        images.append(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8))
        parts = dlib.points([dlib.point(int(x), int(y)) for x, y in rng.integers(12, 48, (5, 2))])
        objects.append([dlib.full_object_detection(dlib.rectangle(10, 10, 49, 49), parts)])
    options = dlib.shape_predictor_training_options()
    options.cascade_depth, options.num_trees_per_cascade_level, options.tree_depth = 3, 4, 2
    options.feature_pool_size, options.oversampling_amount = 20, 2
    path = tmp_path / "tiny.dat"
    dlib.train_shape_predictor(images, objects, options).save(str(path))
    size = bench.dlib_model_size(path)
    trees, splits, leaves = 3 * 4, 3 * 4 * 3, 3 * 4 * 4  # depth 2: 3 splits and 4 leaves per tree
    assert (size["cascade_levels"], size["trees"], size["splits"], size["leaves"]) == (3, trees, splits, leaves)
    # initial shape (5 points) + a 10-vector per leaf + a threshold per split + an (x, y) delta per pool pixel
    assert size["float_parameters"] == 10 + 10 * leaves + splits + 2 * 20 * 3
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="not the expected"):
        bench.dlib_model_size(path)


def test_stage_timings_total_when_all_stages_ran(tmp_path):
    for stage, seconds in (("a", 1.5), ("b", 2.0)):
        (tmp_path / f"{stage}.json").write_text(json.dumps({"seconds": seconds}))
    timing = bench.stage_timings(tmp_path, ["a", "b"])
    assert timing["complete"] and timing["study_seconds"] == 3.5


def test_time_rounds_alternates_the_methods_and_takes_each_calls_median(monkeypatch):
    """Every round calls each method's modes once, in order (so a slow spell of the machine hits every method), after
    one warm-up call each; the result is each call's median over the timed rounds, in seconds."""
    from flmlib import speed

    one_round = [("a", "batched"), ("a", "single"), ("b", "batched"), ("b", "single")]
    # seconds each call takes: the warm-up round, then rounds 1-3 (a slow round 2 for "a", a slow round 3 for "b")
    seconds = [9, 9, 9, 9] + [1, 2, 3, 4] + [50, 60, 5, 6] + [2, 3, 70, 80]
    now, log = [0.0], []

    def call(method, mode):
        log.append((method, mode))
        now[0] += seconds[len(log) - 1]

    monkeypatch.setattr(speed.time, "perf_counter", lambda: now[0])
    calls = {m: {mode: (lambda m=m, mode=mode: call(m, mode)) for mode in ("batched", "single")} for m in ("a", "b")}
    medians = speed.time_rounds(calls, rounds=3, warmup=1)
    assert log == one_round * 4
    assert medians == {"a": {"batched": 2.0, "single": 3.0}, "b": {"batched": 5.0, "single": 6.0}}


def test_paired_ratios_divide_each_round_by_the_reference_in_the_same_round():
    """A slow spell that hits one round's methods alike leaves that round's ratio as it is: the ratio to the reference
    is the median of the per-round ratios, with their range."""
    from flmlib import speed

    times = {"ref": {"batched": [2.0, 8.0, 2.0], "single": [1.0, 1.0, 1.0]},
             "m": {"batched": [1.0, 4.0, 0.5], "single": [0.5, 0.25, 1.0]}}
    ratios = speed.paired_ratios(times, "ref")
    # per round 2 / 1, 8 / 4 (the slow round), 2 / 0.5
    assert ratios["m"]["batched"] == {"median": 2.0, "range": [2.0, 4.0]}
    assert ratios["m"]["single"] == {"median": 2.0, "range": [1.0, 4.0]}
    assert ratios["ref"]["batched"] == {"median": 1.0, "range": [1.0, 1.0]}
    # two slow spells, one hitting "m" alone (round 2), one both (round 3): per round 2, 0.2, 2 -> 2, where the
    # unpaired medians would give 1 / 5 = 0.2
    spells = {"ref": {"batched": [1.0, 1.0, 10.0]}, "m": {"batched": [0.5, 5.0, 5.0]}}
    assert speed.paired_ratios(spells, "ref")["m"]["batched"]["median"] == 2.0


def test_speed_times_every_method_batched_and_single(setup, tmp_path, capsys):
    """The leaderboard's speed stage on three faces: every method timed batched and single, with sizes and the ratio
    to the reference from the same run; a method that cannot be built is listed with the reason."""
    import yaml

    from flmlib import speed

    prepared, checkpoint, _, model = setup
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    onet = params["models"]["onet"]
    params["models"] = {"onet": {**onet, "options": {"checkpoint": str(checkpoint)}},
                        "missing": {**onet, "options": {"checkpoint": str(tmp_path / "missing.pt")}}}
    params["methods"] = {"dlib": params["methods"]["dlib"]}
    params["two_pass"] = {}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "speed.json"
    code = speed.main(["--params", str(path), "--prepared", str(prepared), "--out", str(out), "--rounds", "1",
                       "--batch", "8", "--single-faces", "2"])
    assert code == 0
    result = json.loads(out.read_text())
    onet, dlib = result["methods"]["onet"], result["methods"]["dlib"]
    assert "skipped" in result["methods"]["missing"] and "missing.pt" in result["methods"]["missing"]["skipped"]
    for entry in (onet, dlib):
        assert entry["batched"]["ms_per_face"] > 0 and entry["single"]["ms_per_face"] > 0
    assert onet["parameters"] == sum(p.numel() for p in model.parameters()) and onet["mb_on_disk"] > 0
    assert dlib["parameters"] > 1e6 and dlib["ratio_to_reference"] == {"batched": 1.0, "single": 1.0}
    assert dlib["ratio_range"] == {"batched": [1.0, 1.0], "single": [1.0, 1.0]}
    low, high = onet["ratio_range"]["batched"]
    assert low <= onet["ratio_to_reference"]["batched"] <= high  # one round: all three are that round's ratio
    assert onet["runtime"] == "torch, fp32" and dlib["runtime"] is None  # how each CNN ran goes with its times
    assert onet["runtime_is_default"] and dlib["runtime_is_default"]
    expected = dlib["batched"]["ms_per_face"] / onet["batched"]["ms_per_face"]
    # the ratio is written with 2 decimals (±0.005), from times written with 4 significant digits
    assert onet["ratio_to_reference"]["batched"] == pytest.approx(expected, rel=0.01, abs=0.006)
    assert result["environment"]["cpu"] and result["faces"]["batch"] == 8
    # a CNN runs the forward passes it runs everywhere else, not one pass of the whole batch
    assert onet["images_per_pass"] == DEFAULT_BATCH_SIZE != 8 and dlib["images_per_pass"] is None
    assert "onet" in capsys.readouterr().out


def test_environment_records_the_isa_in_use_and_the_limits_set(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("OPENCV_CPU_DISABLE", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    used = bench.isa_in_use()
    assert used["limits"] == {"ATEN_CPU_CAPABILITY": "default"}  # only the variables that are set
    assert used["torch"] == torch.backends.cpu.get_cpu_capability() and "SSE" in used["opencv"]
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert bench.isa_in_use()["limits"] == {}


def test_backends_kept_as_evidence_only_with_all_backends():
    model = build_model("onet").eval()
    config = {"input_size": 48, "crop_size": 96, "context_factor": 2.0, "model": "onet"}
    default = [name for name, _, _ in bench.onet_variants(model, config, compile_=False)]
    everything = [name for name, _, _ in bench.onet_variants(model, config, compile_=False, all_backends=True)]
    assert default[0] == everything[0] == "torch-channels-last"  # the reference comes first either way
    assert "torch-nchw" not in default and "torch-nchw" in everything and set(default) < set(everything)
