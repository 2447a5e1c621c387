"""MTCNN face detection: the study's P-, R- and O-Net agree with facenet-pytorch's own classes on the same weights,
and the cascade finds an annotated face."""
import ast
import os

import numpy as np
import pytest
import torch
from torch import nn

from flmlib.crops import iou, landmark_box
from flmlib.io import read_image, read_pts
from flmlib.mtcnn_detector import MTCNN, WEIGHT_FILES, ONetDetector, PNet, RNet, nms
from flmlib.pretrained import weights_dir

REFERENCE = weights_dir() / "facenet_pytorch_mtcnn.py"
NEEDS_WEIGHTS = pytest.mark.skipif(
    not (REFERENCE.is_file() and all((weights_dir() / f).is_file() for f in WEIGHT_FILES.values())),
    reason="MTCNN's weights or facenet-pytorch's source are absent: run `make weights`")


def reference_class(name: str):
    """facenet-pytorch's class ``name`` executed on its own from the wheel's models/mtcnn.py (its module-level relative
    import cannot run outside the package)."""
    tree = ast.parse(REFERENCE.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    namespace = {"torch": torch, "nn": nn, "np": np, "os": os}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(REFERENCE), "exec"), namespace)
    return namespace[name]


@NEEDS_WEIGHTS
@pytest.mark.parametrize("ours, theirs, key, size", [(PNet, "PNet", "pnet", 31), (RNet, "RNet", "rnet", 24),
                                                     (ONetDetector, "ONet", "onet", 48)])
def test_each_net_matches_facenet_pytorchs_on_the_same_weights(ours, theirs, key, size):
    state = torch.load(weights_dir() / WEIGHT_FILES[key], weights_only=True)
    mine, ref = ours().eval(), reference_class(theirs)(pretrained=False).eval()
    mine.load_state_dict(state)
    ref.load_state_dict(state)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = mine(x), ref(x)
    # facenet's nets return (box offsets, scores[, points]); the study's return (scores, offsets)
    torch.testing.assert_close(a[0], b[-1] if key == "onet" else b[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a[1], b[0], atol=1e-5, rtol=1e-4)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 2, 6, 6.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [0, 2]  # the small box lies inside the best one


@NEEDS_WEIGHTS
def test_the_cascade_finds_an_annotated_face(data_root):
    pts = sorted((data_root / "300w/helen/testset").glob("*.pts"))[0]
    image, points = read_image(pts.with_suffix(".jpg")), read_pts(pts)
    scored = MTCNN().detect_scored(image)
    assert scored.shape[1] == 5 and (np.diff(scored[:, 4]) <= 0).all()
    assert iou(landmark_box(points), scored[:, :4]).max() > 0.4
    assert len(MTCNN().detect_raw(np.full((80, 80, 3), 127, np.uint8))) == 0  # a flat image has no face
