import numpy as np
import pytest

from flmlib.detect import FallbackBoxModel, detect_faces, match_detection
from flmlib.io import read_image, read_pts


def _square_face(x0, y0, size):
    """68 points spread over a square, enough for a landmark box."""
    t = np.linspace(0, 1, 68)
    return np.stack([x0 + size * t, y0 + size * (1 - t)], axis=1).astype(np.float32)


def test_match_picks_the_overlapping_detection():
    landmarks = _square_face(100, 100, 50)
    detections = np.array([[0, 0, 40, 40], [105, 95, 155, 150], [300, 300, 350, 350]], np.float32)
    match = match_detection(detections, landmarks, threshold=0.3)
    np.testing.assert_array_equal(match.box, detections[1])
    # landmark box (100, 100, 150, 150) against (105, 95, 155, 150): overlap 45 x 50 = 2250 of a union of 3000
    assert match.iou == pytest.approx(0.75)


def test_match_below_threshold_or_empty_is_a_miss():
    landmarks = _square_face(100, 100, 50)
    far = match_detection(np.array([[140, 140, 200, 200]], np.float32), landmarks, threshold=0.3)
    assert far.box is None and 0 < far.iou < 0.3
    none = match_detection(np.zeros((0, 4), np.float32), landmarks, threshold=0.3)
    assert none.box is None and none.iou == 0.0


def test_fallback_box_model_recovers_a_known_relation():
    rng = np.random.default_rng(0)
    lm_boxes = np.column_stack([rng.uniform(0, 100, 20), rng.uniform(0, 100, 20)])
    sizes = rng.uniform(40, 120, 20)
    lm_boxes = np.column_stack([lm_boxes, lm_boxes + sizes[:, None]])
    centre = (lm_boxes[:, :2] + lm_boxes[:, 2:]) / 2 + np.array([0.0, 0.1]) * sizes[:, None]
    half = 0.45 * sizes[:, None]
    det = np.column_stack([centre - half, centre + half])
    model = FallbackBoxModel.fit(lm_boxes, det)
    assert abs(model.dx) < 1e-9 and abs(model.dy - 0.1) < 1e-9 and abs(model.scale - 0.9) < 1e-9
    face = _square_face(0, 0, 100)
    np.testing.assert_allclose(model.box_for(face), [5, 15, 95, 105], atol=1e-4)


def test_hog_detector_finds_a_real_face(data_root):
    pts = sorted((data_root / "300w/helen/testset").glob("*.pts"))[0]
    image, landmarks = read_image(pts.with_suffix(".jpg")), read_pts(pts)
    boxes = detect_faces(image, upsample=1)
    assert boxes.shape[1] == 4 and len(boxes) >= 1
    assert match_detection(boxes, landmarks, 0.3).box is not None


def test_hog_detector_on_a_blank_image_finds_nothing():
    assert detect_faces(np.zeros((120, 120, 3), np.uint8), upsample=0).shape == (0, 4)
