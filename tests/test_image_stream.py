"""Reading and detecting images in worker processes, in input order."""
import cv2
import numpy as np

from flmlib.detect import detect_faces
from flmlib.image_stream import detected_images


def _images(tmp_path, n=5):
    paths = []
    for k in range(n):
        path = tmp_path / f"im{k}.png"
        cv2.imwrite(str(path), np.full((40 + k, 50, 3), 20 * k, np.uint8))
        paths.append(path)
    return paths


def test_workers_keep_input_order_and_match_one_process(tmp_path):
    paths = _images(tmp_path)
    (tmp_path / "bad.jpg").write_text("not an image")
    paths.insert(2, tmp_path / "bad.jpg")
    here = list(detected_images(paths, detect_faces, 0, workers=0))
    there = list(detected_images(paths, detect_faces, 0, workers=2, window=1))
    assert [d.path for d in there] == paths == [d.path for d in here]
    assert there[2].error is not None and "bad.jpg" in there[2].error and there[2].image is None
    for a, b in zip(here, there):
        assert (a.error is None) == (b.error is None)
        if a.error is None:
            assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes) and a.boxes.shape[1] == 4


def failing_detector(image, upsample):
    raise RuntimeError("detector crashed")


def test_a_detector_failure_names_the_image_and_the_others_go_on(tmp_path):
    paths = _images(tmp_path, 3)
    out = list(detected_images(paths, failing_detector, 0, workers=2))
    assert len(out) == 3 and all("face detection failed" in d.error and str(d.path) in d.error for d in out)
    # a detector that cannot be sent to a worker runs in this process
    out = list(detected_images(paths, lambda image, upsample: np.zeros((0, 4)), 0, workers=2))
    assert [d.boxes.shape for d in out] == [(0, 4)] * 3
