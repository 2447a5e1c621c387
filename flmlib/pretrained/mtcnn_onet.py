"""MTCNN's own O-Net convolutions as the starting point of the study's O-Net (``init: mtcnn_onet``).

The weights are those that the ``facenet-pytorch`` wheel ships (``facenet_pytorch/data/onet.pt``, converted by its
author from davidsandberg/facenet's TensorFlow port of Zhang et al.'s Caffe/Matlab model). ``make weights``
(``mk/weights-mtcnn.mk``) fetches the pinned wheel with ``pip download --no-deps`` (facenet-pytorch pins an old
torch and is never installed) and unpacks ``weights/mtcnn_onet.pt`` and the reference implementation
``weights/facenet_pytorch_mtcnn.py`` (used by ``tests/test_pretrained_mtcnn.py``).

What is loaded: the four convolutions and the four PReLUs after them (``conv1..4``, ``prelu1..4``) into
``model.features`` (indices 0, 1, 3, 4, 6, 7, 9, 10), as they are. The fully connected part stays freshly
initialised: MTCNN's heads (face/non-face, 4 box offsets, 10 numbers for 5 points) do not fit the 68-point head
(136 outputs), and its ``dense5`` reads the features in another order than our ``fc`` (see (c)).

Conventions, checked against the wheel's code and by running its O-Net (facenet-pytorch 2.6.0) on real faces:
230 images of 300-W's HELEN test set, each a 48x48 crop of the square box around its 68 landmarks resampled as
MTCNN's third stage does (``interpolate(mode="area")``), scored against the true eye centres (mean of each eye's
six points), nose tip (point 30) and mouth corners (48, 54) in box units (fraction of the box side):

(a) Normalisation: ``facenet_pytorch/models/utils/detect_face.py`` feeds every stage ``(im_data - 127.5) *
    0.0078125`` (lines 72, 114, 143), i.e. ``(x - 127.5) / 128`` on 0..255 pixels: exactly our O-Net's
    ``PIXEL_MEAN``/``PIXEL_SCALE`` (both are exact in float32, division by a power of two). The initialiser
    refuses an O-Net built with another normalisation.

(b) Channel order: RGB. detect_face takes PIL images or uint8 arrays as given (``np.uint8(img)``, then
    ``permute(0, 3, 1, 2)``), and the original Matlab code reads RGB with ``imread``. Run on the crops, RGB input
    gives a mean face/non-face logit of 15.4 (P(face) 0.9999) and a mean 5-point error of 0.0248 box units;
    the same crops as BGR give a logit of 11.3 and an error of 0.0335 (RGB has the higher logit on 90% of the
    crops and the smaller error on 74%). A face is still a face in BGR, so the probability alone barely tells;
    the points and the logit do. Our networks take RGB, as the weights expect.

(c) Orientation: Zhang et al.'s Matlab code hands its H x W x C arrays to Caffe, which reads them transposed, so
    the Caffe (and TensorFlow port's) weights work on transposed images (x and y swapped). facenet-pytorch undid
    this in the conversion: ``tensorflow2pytorch.load_tf_conv2d_trans`` permutes the TF kernels (kh, kw, in, out)
    by (3, 2, 1, 0), i.e. to (out, in, kw, kh), spatially transposed, so its convolutions run on ordinary,
    non-transposed NCHW images (detect_face never transposes an image). Its ``ONet.forward`` then does
    ``x.permute(0, 3, 2, 1)`` before ``dense5``: that only re-creates the TF/Caffe flattening order (x, y, c) of
    the 3x3x128 feature map for the converted dense weights; it says nothing about the convolutions. Hence the
    kernels are copied **without** a spatial transposition. Empirically, on the same 230 crops:

    ======================  ===========  ============  ========================
    input to the reference  mean logit   P(face)>0.7   5-pt error (box units)
    ======================  ===========  ============  ========================
    RGB, as is              15.40        100%          0.025
    BGR, as is              11.30        100%          0.034
    RGB, transposed          0.49         43%          0.295
    BGR, transposed         -0.88         17%          0.302
    ======================  ===========  ============  ========================

    (for a transposed input the error is measured against the transposed truth, i.e. in the image the network
    saw). Transposing the kernels for our images would be the same as feeding the reference transposed images
    (``conv(x^T, k) = conv(x, k^T)^T``): a poorer face detector and meaningless points. With the kernels as they
    are, our ``features`` output equals the reference's ``prelu4`` output element for element (tested to 1e-5).
    Were ``dense5`` ever loaded into our ``fc`` (whose ``Flatten`` reads (c, y, x)), its weight would need
    ``w.view(256, 3, 3, 128).permute(0, 3, 2, 1).reshape(256, 1152)`` (the test checks this too).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE
from flmlib.nets.onet import ONet
from flmlib.pretrained import weights_file

#: The unpacked file under ``weights/`` and the wheel it comes from.
FILE = "mtcnn_onet.pt"
SOURCE = "facenet-pytorch==2.6.0: facenet_pytorch/data/onet.pt"
#: sha256 of ``onet.pt`` in facenet-pytorch 2.6.0 (registry files never change; another file is refused).
SHA256 = "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"

#: ``model.features`` index -> MTCNN O-Net layer name (facenet-pytorch's ``ONet`` attribute names).
LAYERS = {0: "conv1", 1: "prelu1", 3: "conv2", 4: "prelu2", 6: "conv3", 7: "prelu3", 9: "conv4", 10: "prelu4"}


def tensor_map() -> dict[str, str]:
    """Our state-dict names -> the source's, for every tensor that is loaded (conv weight/bias, PReLU weight)."""
    out = {}
    for index, layer in LAYERS.items():
        for param in (("weight", "bias") if layer.startswith("conv") else ("weight",)):
            out[f"features.{index}.{param}"] = f"{layer}.{param}"
    return out


def load_source(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The O-Net state dict of facenet-pytorch (default: ``weights/mtcnn_onet.pt``), checked by its sha256.

    Raises:
        FileNotFoundError: the file is absent (run ``make weights``).
        ValueError: another file than facenet-pytorch 2.6.0's ``onet.pt``, or not a state dict.
    """
    path = Path(path) if path is not None else weights_file(FILE)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not that of {SOURCE} ({SHA256}); rerun `make weights`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def initialise(model: nn.Module) -> dict:
    """Load MTCNN's O-Net convolutions and their PReLUs into ``model.features`` (in place); ``fc`` and ``head`` keep
    their fresh initialisation.

    Returns:
        the report: ``file``, ``sha256``, ``loaded`` (our tensor name -> source tensor name), ``skipped`` (source
        tensors not loaded) and ``fresh`` (our tensors left as initialised).
    Raises:
        ValueError: ``model`` is not an :class:`~flmlib.nets.onet.ONet` with the study's layer layout and MTCNN's
        normalisation, or a tensor's shape does not fit.
        FileNotFoundError: ``weights/mtcnn_onet.pt`` is absent (run ``make weights``).
    """
    if not isinstance(model, ONet):
        raise ValueError(f"init mtcnn_onet loads MTCNN's O-Net weights and needs the study's ONet (model: onet), got"
                         f" {type(model).__name__}")
    if (model.pixel_mean, model.pixel_scale) != (PIXEL_MEAN, PIXEL_SCALE):
        raise ValueError(f"init mtcnn_onet: the weights expect (x - {PIXEL_MEAN}) / {PIXEL_SCALE}, but this ONet"
                         f" normalises with pixel_mean={model.pixel_mean!r}, pixel_scale={model.pixel_scale!r}")
    features = model.features
    wrong = [f"features.{i} is {type(features[i]).__name__ if i < len(features) else 'missing'}, expected"
             f" {'Conv2d' if layer.startswith('conv') else 'PReLU'} ({layer})"
             for i, layer in LAYERS.items()
             if not (i < len(features)
                     and isinstance(features[i], nn.Conv2d if layer.startswith("conv") else nn.PReLU))]
    if wrong:
        raise ValueError("init mtcnn_onet: the ONet's layers do not fit MTCNN's O-Net: " + "; ".join(wrong))

    path = weights_file(FILE)
    source = load_source(path)
    mapping = tensor_map()
    ours = model.state_dict()
    missing = [theirs for theirs in mapping.values() if theirs not in source]
    if missing:
        raise ValueError(f"{path}: lacks {missing}; not MTCNN's O-Net")
    misfits = [f"{name} {tuple(ours[name].shape)} vs {theirs} {tuple(source[theirs].shape)}"
               for name, theirs in mapping.items() if ours[name].shape != source[theirs].shape]
    if misfits:
        raise ValueError(f"init mtcnn_onet: shapes do not fit ({'; '.join(misfits)})")

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, theirs in mapping.items():
            # copy_ keeps the parameter's device, dtype and memory layout (channels-last for the O-Net).
            params[name].copy_(source[theirs])
    return {
        "init": "mtcnn_onet",
        "source": SOURCE,
        "file": str(path),
        "sha256": SHA256,
        "loaded": mapping,
        "skipped": [name for name in source if name not in set(mapping.values())],
        "fresh": [name for name in ours if name not in mapping],
    }
