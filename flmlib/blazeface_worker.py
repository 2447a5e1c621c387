"""MediaPipe BlazeFace worker: face detection in the mediapipe environment (``.venv-mediapipe``), never the study's.

Started by :class:`flmlib.face_detectors.BlazeFaceDetector` as ``<mediapipe python> -I blazeface_worker.py
--model short|full --min-detection-confidence C``, by file path, like the Face Mesh worker, whose framing it shares
(:mod:`flmlib.landmarkers.mediapipe_worker`, imported as a plain module so neither ``flmlib`` nor torch loads here).

Protocol (frames as in the Face Mesh worker):

* start-up: ``(3,) int64`` ``[PROTOCOL_VERSION, 5, os.getpid()]``;
* request: one ``(H, W, 3) uint8`` RGB image;
* reply: ``(K, 5) float32`` rows ``x0, y0, x1, y1, score``: BlazeFace's boxes in image pixels with pixel centres at
  integers (so the image spans -0.5 .. W-0.5), best score first; ``K = 0`` when it finds no face.

``short`` is BlazeFace's short-range model (faces within about 2 m of a phone camera, 128 px input); ``full`` the
full-range one (192 px, smaller faces). Both ship in the mediapipe 0.10.21 wheel.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The framing helpers live beside the Face Mesh worker; a plain-module import keeps flmlib's package out of here.
sys.path.insert(0, str(Path(__file__).resolve().parent / "landmarkers"))
from mediapipe_worker import _protocol_stdout, serve  # noqa: E402

PROTOCOL_VERSION = 1
ROW = 5
MODELS = {"short": 0, "full": 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="short")
    parser.add_argument("--min-detection-confidence", type=float, default=0.5)
    args = parser.parse_args(argv)

    out = _protocol_stdout()
    os.environ.setdefault("GLOG_minloglevel", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    import numpy as np
    from mediapipe.python.solutions import face_detection

    detector = face_detection.FaceDetection(model_selection=MODELS[args.model],
                                            min_detection_confidence=args.min_detection_confidence)

    def detect(image):
        """``(H, W, 3) uint8`` RGB image -> ``(K, 5) float32`` rows ``x0, y0, x1, y1, score``, best first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"request must be an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        found = detector.process(np.ascontiguousarray(image)).detections or []
        rows = []
        for det in found:
            box = det.location_data.relative_bounding_box
            # normalised coordinates put the image's outer edges at 0 and 1
            x0, y0 = box.xmin * width - 0.5, box.ymin * height - 0.5
            rows.append((x0, y0, x0 + box.width * width, y0 + box.height * height, det.score[0]))
        rows.sort(key=lambda r: -r[4])
        return np.array(rows, np.float32).reshape(-1, ROW)

    serve(out, np.array([PROTOCOL_VERSION, ROW, os.getpid()], np.int64), detect)
    detector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
