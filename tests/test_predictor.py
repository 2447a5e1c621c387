import numpy as np
import pytest

from flmlib.io import DataError
from flmlib.predictor import FALLBACK_UPSAMPLE, Face, Predictor, default_upsample
from flmlib.paths import PROJECT_ROOT


class RecordingLandmarker:
    """Answers each face's box corners as points and records every batch it is given."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def predict_batch(self, images, boxes_list):
        self.calls.append([len(b) for b in boxes_list])
        return [np.repeat(np.asarray(b, np.float32)[:, None, :2], 68, axis=1) for b in boxes_list]


def fake_detector(image, upsample):
    """One box per 100 px of image width, so that images can hold several faces."""
    n = image.shape[1] // 100
    return np.array([[10 + 100 * i, 10, 90 + 100 * i, 90] for i in range(n)], np.float32).reshape(-1, 4)


def test_default_upsample_follows_params(tmp_path):
    import yaml

    assert default_upsample() == yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["prepare"]["upsample"]
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  upsample: 2\n")
    assert default_upsample(path) == 2
    assert default_upsample(tmp_path / "missing.yaml") == FALLBACK_UPSAMPLE
    path.write_text("prepare:\n  upsample: two\n")
    with pytest.raises(ValueError, match="upsample='two'"):
        default_upsample(path)


def test_all_faces_of_a_call_form_one_batch():
    landmarker = RecordingLandmarker()
    predictor = Predictor(landmarker, upsample=0, detector=fake_detector)
    images = [np.zeros((100, w, 3), np.uint8) for w in (300, 50, 200)]
    faces = predictor(images)
    assert landmarker.calls == [[3, 0, 2]]
    assert [len(f) for f in faces] == [3, 0, 2]
    face = faces[2][1]
    assert isinstance(face, Face) and face.method == "fake"
    np.testing.assert_array_equal(face.box, [110, 10, 190, 90])
    assert face.points.shape == (68, 2) and (face.points == [110, 10]).all()
    record = face.to_dict()
    assert record["box"] == [110.0, 10.0, 190.0, 90.0] and len(record["points"]) == 68


def test_single_image_and_path_forms(data_root):
    path = next(iter(sorted((data_root / "300w/helen/testset").glob("*.jpg"))))
    predictor = Predictor.from_name("dlib", upsample=1)
    from_path = predictor(path)
    from_str = predictor(str(path))
    assert len(from_path) >= 1 and from_path[0].method == "dlib"
    np.testing.assert_array_equal(from_path[0].points, from_str[0].points)
    image = predictor.load(path)
    h, w = image.shape[:2]
    pts = from_path[0].points
    assert pts.shape == (68, 2) and (pts[:, 0] > -1).all() and (pts[:, 0] < w).all() and (pts[:, 1] < h).all()
    assert from_path[0].box.shape == (4,) and from_path[0].box.dtype == np.float32
    assert predictor(np.zeros((80, 80, 3), np.uint8)) == []  # no face in a blank image
    with pytest.raises(DataError, match="missing.jpg"):
        predictor(path.parent / "missing.jpg")
    assert predictor(np.zeros((80, 80), np.uint8)) == []  # a grey array is taken as grey, not refused
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor(np.zeros((80, 80, 2), np.uint8))


def test_api_accepts_grey_rgba_and_pil_and_names_what_it_expects():
    from PIL import Image

    predictor = Predictor(RecordingLandmarker(), upsample=0, detector=fake_detector)
    rgb = np.random.default_rng(0).integers(0, 255, (60, 220, 3), dtype=np.uint8)
    assert len(predictor(rgb)) == 2
    grey = predictor.load(rgb[:, :, 0])
    assert grey.shape == (60, 220, 3) and (grey[:, :, 0] == grey[:, :, 2]).all()
    assert predictor.load(np.dstack([rgb, np.full((60, 220), 255, np.uint8)])).shape == (60, 220, 3)
    assert np.array_equal(predictor.load(Image.fromarray(rgb)), rgb)
    assert len(predictor(Image.fromarray(rgb).convert("L"))) == 2
    with pytest.raises(TypeError, match="image is None; expected a path, a PIL image"):
        predictor(None)
    with pytest.raises(TypeError, match="images is a int"):
        predictor(3)
    with pytest.raises(ValueError, match=r"float64 \(60, 220, 3\)"):
        predictor(rgb.astype(float))


def test_from_name_takes_a_registered_detector(data_root, tmp_path, monkeypatch):
    path = next(iter(sorted((data_root / "300w/helen/testset").glob("*.jpg"))))
    hog0 = Predictor.from_name("dlib", detector="hog0")  # a HOG entry brings its own upsampling
    assert hog0.upsample == 0 and hog0.detector_info == {"name": "hog0", "kind": "dlib_hog", "upsample": 0}
    assert Predictor.from_name("dlib", detector="hog0", upsample=1).upsample == 1  # unless one is given
    assert Predictor.from_name("dlib", upsample=1).detector_info["kind"] == "dlib_hog"
    with pytest.raises(KeyError, match="hog1"):  # the message lists the known ids
        Predictor.from_name("dlib", detector="yolo")
    if not (PROJECT_ROOT / ".venv-mediapipe/bin/python").exists():
        pytest.skip("the MediaPipe environment is not built (make mediapipe-env): BlazeFace not checked")
    from flmlib import face_detectors
    from flmlib.face_detectors import BoxCalibration, write_calibrations

    monkeypatch.setattr(face_detectors, "CALIBRATION_PATH", str(tmp_path / "none.json"))
    with pytest.raises(FileNotFoundError, match="detectors"):  # no calibration before the detectors stage
        Predictor.from_name("dlib", detector="blazeface")
    calibration = write_calibrations(tmp_path / "boxes.json", {"blazeface": BoxCalibration(faces=5)}, "identity")
    monkeypatch.setattr(face_detectors, "CALIBRATION_PATH", str(calibration))
    blazeface = Predictor.from_name("dlib", detector="blazeface")
    assert blazeface.detector_info["name"] == "blazeface" and "BlazeFace" in blazeface.detector_text
    faces = blazeface(path)
    assert len(faces) >= 1 and faces[0].points.shape == (68, 2) and faces[0].placed
