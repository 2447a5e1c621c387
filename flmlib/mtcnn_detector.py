"""MTCNN face detection (Zhang et al. 2016): the P-Net / R-Net / O-Net cascade, with the pretrained weights that ship
in the facenet-pytorch wheel (``make weights`` unpacks them into ``weights/``; the package itself, which pins an old
torch, is never installed).

The cascade, as the paper describes it:

1. an image pyramid (scale factor 0.709 from ``12 / min_face`` down to a 12 px short side); P-Net, fully
   convolutional, scores every 12 x 12 window (stride 2) and regresses its box; windows above ``thresholds[0]`` are
   kept, de-duplicated per scale (NMS, IoU 0.5) and across scales (IoU 0.7), regressed and made square;
2. R-Net re-scores each candidate from a 24 x 24 crop (``thresholds[1]``), NMS 0.7, regression, squaring;
3. O-Net re-scores from a 48 x 48 crop (``thresholds[2]``), regression, NMS 0.7 on the smaller box's area.

Inputs are RGB scaled as ``(x - 127.5) / 128``. The weights keep the original Caffe model's flattening order before the
dense layers (width before height), so the feature maps are transposed there, as in the converted model. Boxes come
out as ``(x0, y0, x1, y1)`` image pixels and a score; :mod:`flmlib.face_detectors` maps them onto the study's box
convention with a fitted calibration.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: The wheel's weight files, unpacked by mk/weights-mtcnn.mk (O-Net's is shared with the mtcnn_onet initialiser).
WEIGHT_FILES = {"pnet": "mtcnn_pnet.pt", "rnet": "mtcnn_rnet.pt", "onet": "mtcnn_onet.pt"}


class PNet(nn.Module):
    """Proposal net: fully convolutional, a 12 x 12 window -> face score (2 logits) and box offsets (4)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net: a 24 x 24 crop -> face score and box offsets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(len(x), -1)))  # Caffe's flattening order
        return F.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)


class ONetDetector(nn.Module):
    """Output net: a 48 x 48 crop -> face score, box offsets (and 5 facial points, unused here)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        return F.softmax(self.dense6_1(x), dim=1), self.dense6_2(x)


def _normalise(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` RGB -> ``(N, 3, H, W) float32`` scaled like MTCNN's training data."""
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression of ``(K, 4)`` boxes (``mode="min"``: overlap over the smaller
    box's area, as MTCNN's last stage uses)."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.array(keep, np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply box regression ``(K, 4)`` offsets (fractions of the box's width and height)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box made square around its centre, side = its longer side."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x0, y0 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``(K, size, size, 3) uint8`` crops of integer boxes, zero outside the image (as the cascade was trained)."""
    import cv2

    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
        w, h = x1 - x0 + 1, y1 - y0 + 1
        if w < 2 or h < 2:
            continue
        patch = np.zeros((h, w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
        if sx1 < sx0 or sy1 < sy0:
            continue
        patch[sy0 - y0 : sy1 - y0 + 1, sx0 - x0 : sx1 - x0 + 1] = image[sy0 : sy1 + 1, sx0 : sx1 + 1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


class MTCNN:
    """The three-stage detector. ``min_face``: smallest face side searched, pixels; ``thresholds``: score cut-offs of
    P-Net, R-Net, O-Net; ``factor``: pyramid scale step. ``detect_raw(image) -> (K, 4) float32`` boxes, best first."""

    needs_calibration = True

    def __init__(self, min_face: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, weights: str | Path | None = None):
        from flmlib.pretrained import weights_dir

        folder = Path(weights) if weights is not None else weights_dir()
        self.nets = {}
        for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONetDetector())):
            path = folder / WEIGHT_FILES[name]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: MTCNN's {name} weights are missing; run `make weights` (they are "
                                        "unpacked from the facenet-pytorch wheel)")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.nets[name] = net.eval()
        self.min_face, self.thresholds, self.factor = int(min_face), tuple(thresholds), float(factor)

    @torch.inference_mode()
    def detect_raw(self, image: np.ndarray) -> np.ndarray:
        return self.detect_scored(image)[:, :4].astype(np.float32)

    @torch.inference_mode()
    def detect_scored(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(K, 5)`` rows ``x0, y0, x1, y1, score``, best first."""
        import cv2

        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        empty = np.zeros((0, 5))
        # 1. P-Net over the pyramid
        scale = 12.0 / self.min_face
        candidates = []
        while min(height, width) * scale >= 12:
            h, w = int(np.ceil(height * scale)), int(np.ceil(width * scale))
            resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            prob, reg = self.nets["pnet"](_normalise(resized[None]))
            prob, reg = prob[0, 1].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob > self.thresholds[0])
            if len(ys):
                boxes = np.stack([(2 * xs + 1) / scale, (2 * ys + 1) / scale, (2 * xs + 12) / scale,
                                  (2 * ys + 12) / scale, prob[ys, xs]], axis=1)
                offsets = reg[:, ys, xs].T
                keep = nms(boxes[:, :4], boxes[:, 4], 0.5)
                candidates.append(np.hstack([boxes[keep], offsets[keep]]))
            scale *= self.factor
        if not candidates:
            return empty
        found = np.vstack(candidates)
        found = found[nms(found[:, :4], found[:, 4], 0.7)]
        boxes = np.hstack([_square(_regress(found[:, :4], found[:, 5:9])), found[:, 4:5]])
        # 2. R-Net, 3. O-Net
        for net, size, threshold, mode in (("rnet", 24, self.thresholds[1], "union"),
                                           ("onet", 48, self.thresholds[2], "min")):
            if not len(boxes):
                return empty
            prob, reg = self.nets[net](_normalise(_crops(image, boxes[:, :4], size)))
            score, reg = prob[:, 1].numpy(), reg.numpy()
            keep = score > threshold
            boxes, score, reg = boxes[keep], score[keep], reg[keep]
            if not len(boxes):
                return empty
            if net == "rnet":
                keep = nms(boxes[:, :4], score, 0.7)
                boxes = np.hstack([_square(_regress(boxes[keep, :4], reg[keep])), score[keep, None]])
            else:
                boxes = np.hstack([_regress(boxes[:, :4], reg), score[:, None]])
                boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, mode)]
        return boxes[np.argsort(-boxes[:, 4])]

    def close(self) -> None:
        pass
