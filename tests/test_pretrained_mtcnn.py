"""The ``mtcnn_onet`` initialiser: MTCNN's O-Net convolutions (from the facenet-pytorch wheel) in the study's ONet.

The reference is facenet-pytorch's own ``ONet`` class, read from the wheel's source file that ``make weights``
unpacks next to the weights (the package itself is never installed: it pins an old torch).
"""
from __future__ import annotations

import ast
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from flmlib.io import read_image, read_pts
from flmlib.nets.onet import ONet
from flmlib.pretrained import apply_init, initialisers, weights_dir
from flmlib.pretrained import mtcnn_onet

REFERENCE = "facenet_pytorch_mtcnn.py"
FACE = "300w/helen/testset/296814969_3"


def reference_onet_class(path):
    """facenet-pytorch's ``ONet`` class, executed on its own from the wheel's ``models/mtcnn.py`` (whose module-level
    relative import of ``.utils.detect_face`` cannot run outside the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ONet"), None)
    assert node is not None, f"{path}: no ONet class"
    namespace = {"torch": torch, "nn": nn, "np": np, "os": os}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["ONet"]


@pytest.fixture(scope="module")
def reference():
    """facenet-pytorch's O-Net with its pretrained weights (eval mode)."""
    weights, source = weights_dir() / mtcnn_onet.FILE, weights_dir() / REFERENCE
    if not (weights.is_file() and source.is_file()):
        pytest.skip(f"{weights} or {source} is absent: run `make weights` (it unpacks them from the facenet-pytorch"
                    " wheel)")
    net = reference_onet_class(source)(pretrained=False)
    net.load_state_dict(mtcnn_onet.load_source(weights))
    return net.eval()


@pytest.fixture
def loaded(reference):
    """A seeded fresh ONet, its state before loading, the loaded model and the report."""
    torch.manual_seed(0)
    model = ONet()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = mtcnn_onet.initialise(model)
    return fresh, model.eval(), report


def reference_run(reference, x):
    """``(conv feature map after prelu4, (box offsets, 10 point numbers, face probabilities))`` of the reference on
    ``(B, 3, 48, 48)`` RGB 0..255, normalised as facenet-pytorch's detect_face does."""
    maps = []
    hook = reference.prelu4.register_forward_hook(lambda module, args, out: maps.append(out))
    try:
        with torch.no_grad():
            outputs = reference((x - 127.5) * 0.0078125)
    finally:
        hook.remove()
    return maps[0], outputs


def mtcnn_heads_on_our_features(reference, features):
    """MTCNN's dense layers applied to our ``(B, 128, 3, 3)`` features through our own ``Flatten`` order (c, y, x):
    ``dense5``'s weight is rearranged from the TF/Caffe order (x, y, c) that facenet-pytorch's
    ``permute(0, 3, 2, 1)`` produces."""
    w = reference.dense5.weight.view(256, 3, 3, 128).permute(0, 3, 2, 1).reshape(256, 1152)
    with torch.no_grad():
        h = reference.prelu5(F.linear(torch.flatten(features, 1), w, reference.dense5.bias))
        return reference.dense6_2(h), reference.dense6_3(h), reference.softmax6_1(reference.dense6_1(h))


def our_features(model, x):
    with torch.no_grad():
        return model.features(model.normalise(x))


def face_crop(data_root):
    """A 48x48 RGB crop of a HELEN test face (the square box around its landmarks, resampled with area averaging as
    MTCNN's third stage does) and its five MTCNN points (eye centres, nose tip, mouth corners) in box units."""
    image = read_image(data_root / f"{FACE}.jpg")
    points = read_pts(data_root / f"{FACE}.pts")
    lo, hi = points.min(0), points.max(0)
    side = int(round(float((hi - lo).max())))
    x0, y0 = np.round((lo + hi) / 2 - side / 2).astype(int)
    assert x0 >= 0 and y0 >= 0 and x0 + side <= image.shape[1] and y0 + side <= image.shape[0]
    patch = torch.from_numpy(image[y0:y0 + side, x0:x0 + side].copy()).permute(2, 0, 1)[None].float()
    five = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])
    return F.interpolate(patch, size=(48, 48), mode="area"), (five - [x0, y0]) / side


def test_is_a_known_initialiser():
    assert "mtcnn_onet" in initialisers()


def test_loads_every_conv_and_prelu_tensor_of_the_features(loaded, reference):
    fresh, model, _ = loaded
    source = reference.state_dict()
    feature_params = {name for name, _ in model.named_parameters() if name.startswith("features.")}
    mapping = mtcnn_onet.tensor_map()
    assert set(mapping) == feature_params  # nothing of ours missing
    assert set(mapping.values()) == {f"{layer}.{p}" for layer in ("conv1", "conv2", "conv3", "conv4")
                                     for p in ("weight", "bias")} | {f"prelu{i}.weight" for i in range(1, 5)}
    state = model.state_dict()
    for ours, theirs in mapping.items():
        assert not torch.equal(state[ours], fresh[ours]), f"{ours} was not overwritten"
        assert torch.equal(state[ours], source[theirs]), f"{ours} differs from {theirs}"
    for name in fresh:
        if name not in mapping:  # fc and head stay as initialised
            assert torch.equal(state[name], fresh[name]), f"{name} changed"


def test_report_lists_the_loaded_tensors(loaded):
    _, _, report = loaded
    assert report["loaded"] == mtcnn_onet.tensor_map() and len(report["loaded"]) == 12
    assert report["loaded"]["features.0.weight"] == "conv1.weight"
    assert report["loaded"]["features.10.weight"] == "prelu4.weight"
    assert report["skipped"] == ["dense5.weight", "dense5.bias", "prelu5.weight", "dense6_1.weight",
                                 "dense6_1.bias", "dense6_2.weight", "dense6_2.bias", "dense6_3.weight",
                                 "dense6_3.bias"]
    assert report["fresh"] == ["fc.1.weight", "fc.1.bias", "fc.3.weight", "head.weight", "head.bias"]
    assert report["file"] == str(weights_dir() / mtcnn_onet.FILE) and report["sha256"] == mtcnn_onet.SHA256


def test_apply_init_by_name(reference):
    torch.manual_seed(0)
    model = ONet()
    assert apply_init(model, "mtcnn_onet")["loaded"] == mtcnn_onet.tensor_map()
    assert torch.equal(model.features[9].weight, reference.conv4.weight)


def check_reproduces_reference(model, reference, x):
    ref_maps, ref_out = reference_run(reference, x)
    ours = our_features(model, x)
    # No transposition: facenet-pytorch's kernels already work on ordinary (non-transposed) NCHW images.
    assert ours.shape == ref_maps.shape == (len(x), 128, 3, 3)
    torch.testing.assert_close(ours, ref_maps, rtol=0, atol=1e-5)
    # facenet-pytorch's permute(0, 3, 2, 1) before dense5 is only the TF/Caffe flattening order.
    for mine, theirs in zip(mtcnn_heads_on_our_features(reference, ours), ref_out):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    return ours, ref_out


def test_reproduces_mtcnn_on_a_seeded_random_image(loaded, reference):
    _, model, _ = loaded
    x = torch.randint(0, 256, (2, 3, 48, 48), generator=torch.Generator().manual_seed(1234)).float()
    ours, ref_out = check_reproduces_reference(model, reference, x)
    assert ours.abs().max() > 0.1  # a real comparison, not two maps of zeros
    # Flattening our (c, y, x) map in place of facenet-pytorch's (x, y, c) order would not reproduce MTCNN.
    with torch.no_grad():
        naive = reference.dense6_3(reference.prelu5(reference.dense5(torch.flatten(ours, 1))))
    assert (naive - ref_out[1]).abs().max() > 0.05


def test_reproduces_mtcnn_on_a_real_face(loaded, reference, data_root):
    _, model, _ = loaded
    x, five = face_crop(data_root)
    _, (_, points, prob) = check_reproduces_reference(model, reference, x)
    # MTCNN's known answer on this crop: a face, and its 5 points (x0..x4, y0..y4 in box units) where they are.
    assert prob[0, 1] > 0.999
    predicted = torch.stack([points[0, :5], points[0, 5:]], 1).numpy()
    assert np.abs(predicted - five).max() < 0.03
    # The same crop transposed or in BGR: MTCNN is less sure, which is how the conventions were settled.
    _, (_, _, prob_t) = reference_run(reference, x.transpose(2, 3))
    _, (_, _, prob_bgr) = reference_run(reference, x.flip(1))
    assert prob_t[0, 1] < prob_bgr[0, 1] < prob[0, 1]


def test_rejects_models_that_do_not_fit(reference):
    with pytest.raises(ValueError, match="needs the study's ONet"):
        mtcnn_onet.initialise(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="normalises with"):
        mtcnn_onet.initialise(ONet(pixel_mean=120.0))
    model = ONet()
    model.features[3] = nn.Conv2d(32, 48, 3)
    with pytest.raises(ValueError, match="shapes do not fit.*features.3.weight"):
        mtcnn_onet.initialise(model)
    model = ONet()
    model.features[1] = nn.ReLU()
    with pytest.raises(ValueError, match="features.1 is ReLU, expected PReLU"):
        mtcnn_onet.initialise(model)
