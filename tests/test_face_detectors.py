"""Face detectors: the registry's boxes follow the study's convention on a real test image."""
import numpy as np
import pytest

from flmlib.crops import iou, landmark_box
from flmlib.face_detectors import (BlazeFaceDetector, BoxCalibration, FaceDetector, HogDetector, build_raw,
                                   read_calibrations, write_calibrations)
from flmlib.io import read_image, read_pts
from flmlib.landmarkers.mediapipe_mesh import DEFAULT_PYTHON
from flmlib.paths import project_path

HELEN = project_path("data/300w/helen/testset")


@pytest.fixture(scope="module")
def face(data_root):
    """A HELEN test image with its 68 annotated points (0-based pixels)."""
    pts = sorted(HELEN.glob("*.pts"))[0]
    image = next(p for p in (pts.with_suffix(".jpg"), pts.with_suffix(".png")) if p.exists())
    return read_image(image), read_pts(pts)


def test_a_calibration_maps_raw_boxes_onto_their_targets():
    rng = np.random.default_rng(0)
    raw = rng.uniform(50, 100, (20, 2))
    side = rng.uniform(40, 80, 20)
    raw_boxes = np.column_stack([raw, raw + side[:, None]])
    centre = raw + side[:, None] / 2 + side[:, None] * [0.05, 0.1]  # moved right by 0.05 and down by 0.1 sides
    target = np.column_stack([centre - 0.6 * side[:, None], centre + 0.6 * side[:, None]])
    cal = BoxCalibration.fit(raw_boxes, target)
    assert (cal.dx, cal.dy, cal.scale_w, cal.scale_h) == pytest.approx((0.05, 0.1, 1.2, 1.2))
    np.testing.assert_allclose(cal.apply(raw_boxes), target, atol=1e-3)
    np.testing.assert_array_equal(BoxCalibration().apply(raw_boxes), raw_boxes.astype(np.float32))
    with pytest.raises(ValueError, match=">= 5"):
        BoxCalibration.fit(raw_boxes[:3], target[:3])


def test_calibrations_round_trip_and_a_missing_one_is_named(tmp_path):
    path = write_calibrations(tmp_path / "boxes.json", {"blazeface": BoxCalibration(0.1, 0.2, 1.1, 1.2, 50)}, "test")
    assert read_calibrations(path)["blazeface"].faces == 50 and read_calibrations(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        read_calibrations(tmp_path / "bad.json")

    class Raw:
        needs_calibration = True

    with pytest.raises(FileNotFoundError, match="dvc repro detectors"):
        FaceDetector("blazeface", Raw(), None)
    with pytest.raises(ValueError, match="unknown detector kind"):
        build_raw("yolo", {})
    with pytest.raises(ValueError, match="bad options"):
        build_raw("dlib_hog", {"upsampel": 1})


def test_hog_finds_the_annotated_face_in_the_study_convention(face):
    image, points = face
    with FaceDetector("hog1", HogDetector(1), None) as det:
        boxes = det.detect(image)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert iou(landmark_box(points), boxes).max() > 0.3


@pytest.mark.skipif(not project_path(DEFAULT_PYTHON).exists(), reason="the MediaPipe environment is not built "
                                                                      "(make mediapipe-env)")
def test_blazeface_boxes_calibrate_onto_hog_boxes(face):
    image, points = face
    hog = HogDetector(1).detect_raw(image)
    det = BlazeFaceDetector("short")
    try:
        raw = det.detect_raw(image)
        assert raw.dtype == np.float32 and raw.shape[1] == 4 and len(raw) >= 1
        best_raw = raw[np.argmax(iou(landmark_box(points), raw))]
        best_hog = hog[np.argmax(iou(landmark_box(points), hog))]
        calibrated = BoxCalibration.fit(np.tile(best_raw, (5, 1)), np.tile(best_hog, (5, 1))).apply(best_raw[None])
        assert iou(best_hog, calibrated)[0] > 0.99
        assert len(det.detect_raw(np.zeros((64, 64, 3), np.uint8))) == 0  # an empty image: no face, no error
    finally:
        det.close()


def _registered():
    from flmlib.detector_config import load_detector_config

    config = load_detector_config()
    return [(name, config.detectors[name]) for name in config.detectors]


def test_the_detector_configuration_is_checked_against_the_study():
    import copy

    import yaml

    from flmlib.config import ConfigError, load_config
    from flmlib.detector_config import parse_detector_config

    raw = yaml.safe_load(project_path("detectors.yaml").read_text())
    study = load_config()
    config = parse_detector_config(raw, "detectors.yaml", study)
    assert config.detectors["blazeface"].options == {"model": "short", "min_confidence": 0.5}
    assert config.detectors["hog1"].options == {"upsample": 1} and config.detector_study.default == "hog1"
    for key, value, message in [("kind", "yolo", r"detectors\.blazeface\.kind"),
                                ("default", "retinaface", "detector_study.default: 'retinaface'"),
                                ("landmarker", "unknown_net", "detector_study.landmarker: 'unknown_net'"),
                                ("test_sets", ["test_wflw"], "test_wflw")]:
        bad = copy.deepcopy(raw)
        if key == "kind":
            bad["detectors"]["blazeface"]["kind"] = value
        else:
            bad["detector_study"][key] = value
        with pytest.raises(ConfigError, match=message):
            parse_detector_config(bad, "detectors.yaml", study)


def _detect_raw(face, name, entry) -> np.ndarray:
    """The registered detector's raw boxes on the test face, (K, 4) (skipped where this machine cannot run it)."""
    try:
        raw = build_raw(entry.kind, entry.options)
    except FileNotFoundError as exc:  # an environment or weight file this machine lacks
        pytest.skip(f"detector {name} cannot run here: {exc}")
    try:
        return raw.detect_raw(face[0])
    finally:
        raw.close()


@pytest.fixture(scope="module")
def raw_boxes(face):
    """``raw_boxes(name, entry)``: :func:`_detect_raw` run once per detector in this module (two tests read each)."""
    found = {}

    def boxes(name, entry) -> np.ndarray:
        if name not in found:
            found[name] = _detect_raw(face, name, entry)
        return found[name]

    return boxes


@pytest.mark.parametrize("name, entry", _registered(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_registered_detector_boxes_the_annotated_face(face, raw_boxes, name, entry):
    """Each detector of detectors.yaml on a real test image: (K, 4) float32 edges, one box on the annotated face."""
    boxes = raw_boxes(name, entry)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) >= 1
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert iou(landmark_box(face[1]), boxes).max() > 0.3


@pytest.mark.parametrize("name, entry", [(n, e) for n, e in _registered() if e.kind != "dlib_hog"],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_a_calibrated_detectors_box_lands_on_hogs(face, raw_boxes, name, entry):
    """With the detectors stage's calibration, a detector's box on the annotated face lands on HOG's box (HOG's own
    boxes are the study's convention: the HOG entries have no calibration)."""
    calibration = read_calibrations().get(name)
    if calibration is None:
        pytest.skip(f"no calibration of {name} yet: it is written by `dvc repro detectors`")
    image, points = face
    boxes = raw_boxes(name, entry)
    best = boxes[np.argmax(iou(landmark_box(points), boxes))]
    hog = HogDetector(1).detect_raw(image)
    assert iou(calibration.apply(best[None])[0], hog).max() > 0.5
