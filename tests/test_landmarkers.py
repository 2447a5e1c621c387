import types
from functools import lru_cache

import numpy as np
import pytest
import torch

from flmlib.augment import augment
from flmlib.crops import box_units_to_image, crop_context, image_to_box_units
from flmlib.detect import detect_faces, match_detection
from flmlib.io import read_image, read_pts
from flmlib.landmarkers import build_landmarker
from flmlib.landmarkers import crop_geometry as landmarkers_module  # where the crops are cut
from flmlib.landmarkers.cnn import CNNLandmarker as ONetLandmarker
from flmlib.landmarkers.dlib_predictor import DlibShapePredictor, dlib_model_path
from flmlib.metrics import nme_interocular
from flmlib.models import build_model
from flmlib.train import TrainConfig, model_config, save_model


def save_checkpoint(path, model=None, **config_changes):
    """A model file in the training code's format (untrained weights unless a model is given)."""
    torch.manual_seed(0)
    model = model if model is not None else build_model("onet")
    config = model_config(TrainConfig(), types.SimpleNamespace(crop_size=96, context_factor=2.0), model)
    config.update(config_changes)
    save_model(path, model, config)
    return path


@lru_cache(maxsize=1)
def _helen_faces(root: str, n: int = 5):
    """First n helen test faces the HOG detector finds (IoU >= 0.3 with the annotation): images, boxes, gt points."""
    from pathlib import Path

    images, boxes, truth = [], [], []
    for jpg in sorted(Path(root, "300w/helen/testset").glob("*.jpg")):
        image, gt = read_image(jpg), read_pts(jpg.with_suffix(".pts"))
        match = match_detection(detect_faces(image, 1), gt, 0.3)
        if match.box is not None:
            images.append(image), boxes.append(match.box), truth.append(gt)
        if len(images) == n:
            break
    return images, np.stack(boxes), np.stack(truth)


@pytest.fixture(scope="module")
def helen(data_root):
    return _helen_faces(str(data_root))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("onet") / "onet.pt")


@pytest.fixture(scope="module")
def mean_shape(helen):
    """Mean ground-truth shape of the helen faces in box units, (68, 2)."""
    _, boxes, truth = helen
    return image_to_box_units(truth, boxes).mean(axis=0)


@pytest.fixture(scope="module")
def mean_shape_checkpoint(tmp_path_factory, mean_shape):
    """An O-Net that ignores its input and always answers the mean shape (zero head weights, bias = shape)."""
    model = build_model("onet")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.as_tensor(mean_shape.reshape(-1), dtype=torch.float32))
    return save_checkpoint(tmp_path_factory.mktemp("mean") / "onet.pt", model)


def test_dlib_model_path_points_at_the_68_point_model():
    path = dlib_model_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 1_000_000


def test_dlib_on_real_faces_is_accurate(helen):
    images, boxes, truth = helen
    dlib_lm = DlibShapePredictor()
    pred = np.concatenate([dlib_lm.predict(im, b[None]) for im, b in zip(images, boxes)])
    assert pred.shape == (len(images), 68, 2) and pred.dtype == np.float32
    # A property of a working 68-point model on HOG boxes, not a remembered figure: well under 10 % of the
    # inter-ocular distance on average. This catches a wrong point order, swapped axes or a wrong box, not a
    # half- or one-pixel convention slip (~0.01 here); those are covered by test_io and test_crops.
    assert nme_interocular(pred, truth).mean() < 0.1
    assert dlib_lm.predict_batch(images[:2], [boxes[:1], boxes[1:2]])[1].shape == (1, 68, 2)


def test_dlib_rejects_bad_input(helen):
    images, boxes, _ = helen
    dlib_lm = DlibShapePredictor()
    with pytest.raises(ValueError, match="uint8 RGB"):
        dlib_lm.predict(images[0].astype(np.float32), boxes[:1])
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        dlib_lm.predict(images[0], np.array([[10, 10, 5, 20]]))
    assert dlib_lm.predict(images[0], np.zeros((0, 4))).shape == (0, 68, 2)
    # an image with no rows or no columns (e.g. a slice past the edge) is named, not cropped into garbage
    for empty in (np.zeros((0, 40, 3), np.uint8), np.zeros((40, 0, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"image 1 is empty: shape \(" + str(empty.shape[0])):
            dlib_lm.predict_batch([images[0], empty], [boxes[:1], boxes[:1]])


def test_a_bad_box_in_a_batch_is_named_by_its_image_and_index(checkpoint):
    """The boxes of a whole batch are checked at once; the error still names the image and the box within it."""
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    image = np.zeros((60, 60, 3), np.uint8)
    good = np.array([[5, 5, 40, 40]], np.float32)
    boxes_list = [good, np.zeros((0, 4)), np.concatenate([good, [[10, 10, np.nan, 30]]]), good]
    with pytest.raises(ValueError, match=r"boxes of image 2\[1\] = \[10.0, 10.0, nan, 30.0\] is not a box"):
        onet.predict_batch([image] * 4, boxes_list)
    boxes_list[2] = np.array([[10, 10, 5, 30]])  # no width
    with pytest.raises(ValueError, match=r"boxes of image 2\[0\]"):
        onet.predict_batch([image] * 4, boxes_list)
    with pytest.raises(ValueError, match=r"boxes of image 1 must be \(K, 4\)"):
        onet.predict_batch([image] * 2, [good, np.zeros((2, 3))])
    assert [p.shape for p in onet.predict_batch([image] * 2, [good, np.zeros((0, 4))])] == [(1, 68, 2), (0, 68, 2)]


def test_cnn_rejects_an_empty_image(checkpoint):
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"image 0 is empty: shape \(0, 0, 3\)"):
        onet.predict(np.zeros((0, 0, 3), np.uint8), np.array([[0, 0, 10, 10]]))


def test_every_entry_point_defaults_to_one_forward_pass_size(checkpoint):
    from flmlib.cli import build_parser
    from flmlib.landmarkers.base import DEFAULT_BATCH_SIZE

    assert ONetLandmarker.from_checkpoint(checkpoint, device="cpu").batch_size == DEFAULT_BATCH_SIZE
    args = build_parser().parse_args(["predict", "x.jpg"])
    assert args.batch_size == DEFAULT_BATCH_SIZE


def test_onet_api_on_real_image_gives_points_inside_the_image(helen, mean_shape, mean_shape_checkpoint):
    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(mean_shape_checkpoint, device="cpu")
    checked = 0
    for image, box in zip(images, boxes):
        points = onet.predict(image, box[None])
        assert points.shape == (1, 68, 2) and points.dtype == np.float32
        # A constant answer in box units must land exactly where box_units_to_image puts it.
        np.testing.assert_allclose(points[0], box_units_to_image(mean_shape[None], box[None])[0], atol=1e-3)
        h, w = image.shape[:2]
        margin = 0.2 * (box[2] - box[0])
        if box[0] - margin >= 0 and box[1] - margin >= 0 and box[2] + margin <= w and box[3] + margin <= h:
            # Faces well inside the picture (HELEN also cuts faces at the border, where even the truth leaves it).
            assert (points[..., 0] >= -0.5).all() and (points[..., 0] <= w - 0.5).all()
            assert (points[..., 1] >= -0.5).all() and (points[..., 1] <= h - 0.5).all()
            checked += 1
    assert checked >= 1


def test_onet_input_is_the_training_eval_input(helen, checkpoint):
    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    crops = onet.context_crops(images[0], boxes[:1])
    np.testing.assert_array_equal(crops[0], crop_context(images[0], boxes[0], 96, 2.0)[0])
    inputs = onet.network_inputs(crops)
    crops_t = torch.from_numpy(crops).permute(0, 3, 1, 2)
    expected, _ = augment(crops_t, torch.zeros(1, 68, 2), None, out_size=48, context_factor=2.0)
    torch.testing.assert_close(inputs, expected, rtol=0, atol=0)
    # Without augmentation the network sees exactly the central box of the context crop.
    torch.testing.assert_close(inputs[0], crops_t[0, :, 24:72, 24:72].float(), rtol=0, atol=1e-3)


def test_onet_batches_agree_with_single_faces(helen, checkpoint):
    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu", batch_size=2)
    together = onet.predict_batch(images[:3], [b[None] for b in boxes[:3]])
    onet.batch_size = 256
    for image, box, got in zip(images, boxes, together):
        np.testing.assert_allclose(got, onet.predict(image, box[None]), atol=1e-3)
    assert [p.shape for p in onet.predict_batch(images[:2], [boxes[:0], boxes[:2]])] == [(0, 68, 2), (2, 68, 2)]


def test_predict_context_crops_matches_predict(helen, checkpoint):
    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    crops = np.concatenate([onet.context_crops(im, b[None]) for im, b in zip(images, boxes)])
    from_crops = onet.predict_context_crops(crops, boxes)
    from_images = np.concatenate(onet.predict_batch(images, [b[None] for b in boxes]))
    # From an image the input is cut directly (pixels within one grey level of the context crop's centre), which
    # moves points by thousandths of a pixel.
    np.testing.assert_allclose(from_crops, from_images, atol=0.05)


def test_direct_input_crop_is_the_centre_of_the_context_crop(helen, checkpoint):
    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    assert onet.cuts_inputs_directly
    for image, box in zip(images, boxes):
        direct = onet.input_crops(image, box[None])[0].astype(int)
        centre = onet.context_crops(image, box[None])[0, 24:72, 24:72].astype(int)
        assert direct.shape == (48, 48, 3)
        assert np.abs(direct - centre).max() <= 1
        assert (direct != centre).mean() < 0.05


def test_other_crop_geometry_falls_back_to_the_context_crop(helen, checkpoint):
    images, boxes, _ = helen
    model, config = build_model("onet").eval(), torch.load(checkpoint, weights_only=True)["config"]
    onet = ONetLandmarker(model, {**config, "crop_size": 120, "context_factor": 2.0})  # box on 60 px, input 48
    assert not onet.cuts_inputs_directly
    with pytest.raises(ValueError, match="whole pixels"):
        onet.input_crops(images[0], boxes[:1])
    crops = onet.context_crops(images[0], boxes[:1])
    np.testing.assert_allclose(onet.predict(images[0], boxes[:1]), onet.predict_context_crops(crops, boxes[:1]))


def test_bf16_precision_stays_close_to_fp32(helen, checkpoint):
    images, boxes, _ = helen
    fp32 = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    bf16 = ONetLandmarker.from_checkpoint(checkpoint, device="cpu", precision="bf16")
    got, expected = bf16.predict(images[0], boxes[:1]), fp32.predict(images[0], boxes[:1])
    assert got.dtype == np.float32
    # bfloat16 keeps 8 significant bits: a face box of ~200 px moves points by a pixel or less, never by more.
    assert np.abs(got - expected).max() < 2.0
    with pytest.raises(ValueError, match="precision"):
        ONetLandmarker.from_checkpoint(checkpoint, backend="onnx", precision="bf16")


def test_auto_precision_is_bf16_only_on_hardware_that_runs_it_natively(monkeypatch, checkpoint):
    from flmlib.landmarkers import runtimes

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})  # AVX-512 without bf16
    assert runtimes.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert runtimes.resolve_precision("auto", cpu) == "bf16"
    # oneDNN capped below AVX-512 (ONEDNN_MAX_CPU_ISA=AVX2) would emulate bf16, several times slower: fp32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert runtimes.resolve_precision("auto", cpu) == "fp32"
    assert runtimes.resolve_precision("bf16", cpu) == "bf16" and runtimes.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        runtimes.resolve_precision("fp16", cpu)
    # the landmarker says which precision it runs; onnx takes auto as fp32
    assert ONetLandmarker.from_checkpoint(checkpoint, device="cpu", precision="auto").precision == "fp32"
    assert ONetLandmarker.from_checkpoint(checkpoint, backend="onnx", precision="auto").precision == "fp32"


def test_compile_without_a_cpp_compiler_warns_and_runs_eagerly(monkeypatch, checkpoint):
    from flmlib.landmarkers import runtimes

    monkeypatch.setattr(runtimes, "cpp_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ compiler"):
        onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu", backend="compile")
    assert onet.backend == "torch" and not onet.runtime.compiled


def test_onet_non_finite_output_names_the_face(helen, checkpoint):
    images, boxes, _ = helen
    model, config = build_model("onet").eval(), torch.load(checkpoint, weights_only=True)["config"]

    def broken(x):
        out = model(x)
        out[1, 7] = float("nan")
        return out

    onet = ONetLandmarker(model, config, forward=broken)
    with pytest.raises(ValueError, match="face index 1 of 3"):
        onet.predict_batch(images[:3], [b[None] for b in boxes[:3]])


def test_onet_rejects_crops_of_another_size(checkpoint):
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(ValueError, match="96, 96, 3"):
        onet.predict_context_crops(np.zeros((2, 64, 64, 3), np.uint8), np.array([[0, 0, 10, 10]] * 2))
    with pytest.raises(ValueError, match="2 crops but 1 boxes"):
        onet.predict_context_crops(np.zeros((2, 96, 96, 3), np.uint8), np.array([[0, 0, 10, 10]]))


def test_checkpoint_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ONetLandmarker.from_checkpoint(tmp_path / "nope.pt")
    broken = save_checkpoint(tmp_path / "broken.pt", normalisation={"mean": 0.0, "scale": 0.0})
    with pytest.raises(ValueError, match=r"broken\.pt: cannot rebuild .*pixel_scale=0\.0"):
        ONetLandmarker.from_checkpoint(broken)
    with pytest.raises(ValueError, match="backend"):
        ONetLandmarker.from_checkpoint(broken, backend="tensorrt")


def test_a_model_file_with_other_input_statistics_runs_with_them(tmp_path):
    """A network trained on 0..1 inputs records its normalisation; loading rebuilds it, so it sees what it saw
    in training (the same weights with the default statistics would answer something else)."""
    torch.manual_seed(0)
    unit = build_model("onet", pixel_mean=0.0, pixel_scale=255.0).eval()
    path = save_checkpoint(tmp_path / "unit.pt", unit)
    landmarker = ONetLandmarker.from_checkpoint(path, device="cpu")
    assert landmarker.config["normalisation"]["scale"] == 255.0
    x = torch.rand(2, 3, 48, 48) * 255
    with torch.no_grad():
        np.testing.assert_allclose(landmarker.run_network(x), unit(x).reshape(-1, 68, 2).numpy(), atol=1e-5)
        default = build_model("onet").eval()
        default.load_state_dict(unit.state_dict())
        assert not np.allclose(default(x).numpy(), unit(x).numpy(), atol=1e-3)


def test_registry(checkpoint):
    assert build_landmarker("dlib").name == "dlib"
    onet = build_landmarker("onet", checkpoint=checkpoint, device="cpu", batch_size=8)
    assert onet.name == "onet" and onet.batch_size == 8
    with pytest.raises(KeyError, match=r"unknown method 'sift'.*onet.*dlib"):
        build_landmarker("sift")


def test_every_path_feeds_the_network_one_layout(helen, checkpoint):
    """A compiled model is recompiled for every new input layout or tensor kind; both input paths must agree."""
    images, boxes, _ = helen
    model, config = build_model("onet").eval(), torch.load(checkpoint, weights_only=True)["config"]
    seen = []

    def recording(x):
        seen.append((x.stride(), x.is_inference(), x.dtype))
        return model(x)

    onet = ONetLandmarker(model, config, forward=recording)
    onet.predict_batch(images[:2], [b[None] for b in boxes[:2]])
    crops = np.concatenate([onet.context_crops(im, b[None]) for im, b in zip(images[:2], boxes[:2])])
    onet.predict_context_crops(crops, boxes[:2])
    onet.run_network(onet.network_inputs(crops))
    assert len(seen) == 3 and len(set(seen)) == 1
    assert seen[0][1] and seen[0][0] == torch.empty(2, 3, 48, 48).to(memory_format=torch.channels_last).stride()


def test_large_batches_are_cut_on_threads_in_order(helen, checkpoint, monkeypatch):
    """A large batch goes to the cutter's own threads, with OpenCV's thread pool held to one thread meanwhile (its
    workers would compete with the cutter's) and restored afterwards."""
    import threading

    import cv2

    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    many_images = [images[i % len(images)] for i in range(40)]
    many_boxes = [boxes[i % len(boxes)][None] + i % 3 for i in range(40)]  # shifted: every crop differs
    threads_used, opencv_threads = set(), set()

    real_cut = landmarkers_module.cut_planned

    def recording_cut(*args):
        threads_used.add(threading.current_thread().name)
        opencv_threads.add(cv2.getNumThreads())
        return real_cut(*args)

    monkeypatch.setattr(landmarkers_module, "cut_planned", recording_cut)
    before, before_cv = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(2)
        cv2.setNumThreads(3)
        crops = onet.cut_crops(many_images, many_boxes, 48, 1.0)
        assert cv2.getNumThreads() == 3
    finally:
        torch.set_num_threads(before)
        cv2.setNumThreads(before_cv)
    # The batch went to the pool (which of its threads took which chunk is up to the executor).
    assert threads_used and all(name.startswith("cnn-crop") for name in threads_used)
    assert opencv_threads == {1}
    for crop, image, box in zip(crops, many_images, many_boxes):
        np.testing.assert_array_equal(crop, crop_context(image, box[0], 48, 1.0)[0])


def test_a_failing_crop_thread_raises_in_the_caller(helen, checkpoint, monkeypatch):
    import cv2

    images, boxes, _ = helen
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")

    real_cut = landmarkers_module.cut_planned

    def failing_cut(image, plans, i):
        if i == 39:
            raise ValueError("box beyond the test image")
        return real_cut(image, plans, i)

    monkeypatch.setattr(landmarkers_module, "cut_planned", failing_cut)
    many_boxes = [boxes[:1]] * 40  # the cut of face 39 fails (failing_cut)
    before, before_cv = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(2)
        cv2.setNumThreads(3)
        with pytest.raises(ValueError, match="beyond the test image"):
            onet.cut_crops([images[0]] * 40, many_boxes, 48, 1.0)
        assert cv2.getNumThreads() == 3  # restored after the failure too
    finally:
        torch.set_num_threads(before)
        cv2.setNumThreads(before_cv)


def test_points_from_inputs_needs_one_box_per_input(checkpoint):
    onet = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(ValueError, match="3 network inputs but 1 boxes"):
        onet.points_from_inputs(torch.zeros(3, 3, 48, 48), np.array([[0, 0, 10, 10]], np.float32))


def test_registry_builds_every_method_params_lists(checkpoint):
    from flmlib.config import load_config
    from flmlib.landmarkers import build_method

    study = load_config()
    for method in study.method_ids:
        spec = study.method_spec(method)
        overrides = {"checkpoint": checkpoint, "device": "cpu"} if spec.kind == "cnn" else {}
        try:
            landmarker = build_method(spec, **overrides)
        except FileNotFoundError as exc:  # only a method whose separate environment is not built may be missing
            assert "make mediapipe-env" in str(exc), exc
            pytest.skip(f"{method}: {exc}")
        assert landmarker.name == method and landmarker.spec == spec


def test_registry_names_a_kind_without_module():
    from flmlib.landmarkers import MethodSpec, build_method

    with pytest.raises(ValueError, match=r"method 'x': kind 'no_such_kind' names no module"):
        build_method(MethodSpec(id="x", kind="no_such_kind"))
    with pytest.raises(ValueError, match=r"flmlib.landmarkers.base has no build"):
        build_method(MethodSpec(id="x", kind="base"))


def test_inference_does_not_import_the_training_code():
    import subprocess
    import sys

    code = ("import sys, flmlib.landmarkers.cnn, flmlib.landmarkers.dlib_predictor, flmlib.predictor, flmlib.cli;"
            " print(sorted(m for m in sys.modules if m in ('flmlib.train', 'flmlib.train_figures', 'dvclive')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
