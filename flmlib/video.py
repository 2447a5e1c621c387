"""Landmarks on every frame of a video, stable: detect, track one face, place 68 points, smooth them.

Per frame (``(H, W, 3) uint8`` RGB):

1. dlib's HOG detector (:func:`flmlib.detect.detect_faces`) finds the faces;
2. :class:`FaceTracker` follows **one** main face: the largest detection when it has none, afterwards the detection
   with the highest IoU (:func:`flmlib.crops.iou`) with the previous frame's box. When the detector misses it (no
   detection overlaps the previous box by ``min_iou``), the box is *bridged*: rebuilt around the previous frame's
   landmarks with the box-from-landmarks model fitted on the recent detected frames
   (:class:`flmlib.detect.FallbackBoxModel`), or the previous box before any fit. After ``max_bridge`` bridged
   frames in a row the face counts as lost and the largest new detection is taken;
3. a landmarker (:mod:`flmlib.landmarkers`) places the 68 points in that box;
4. a One-Euro filter (:mod:`flmlib.smoothing`) smooths them, with the frame timestamps as its time base (a variable
   frame interval is handled); a frame without points resets it.

:func:`process_video` does this for a video file and writes the result (points drawn, or a mask applied with
:func:`flmlib.masks.apply_mask`); :func:`synthetic_clip` and :func:`stability` measure jitter, error and lag against
a known motion. All coordinates are 0-based image pixels, pixel centres at integers; boxes are ``(x0, y0, x1, y1)``
edges (:mod:`flmlib.crops`).

How the default One-Euro parameters were chosen, with the numbers: :mod:`flmlib.smoothing`.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from flmlib.crops import apply_affine, iou, landmark_box
from flmlib.detect import FallbackBoxModel, detect_faces
from flmlib.smoothing import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, OneEuroFilter

N_POINTS = 68
#: Outer eye corners (iBUG 68): the inter-ocular distance that normalises the stability numbers.
OUTER_EYE_CORNERS = (36, 45)
#: Output suffix -> FourCC codes tried in order (both work with the pip OpenCV's bundled FFmpeg; H.264 does not).
CODECS = {".mp4": ("mp4v",), ".m4v": ("mp4v",), ".mov": ("mp4v",), ".mkv": ("mp4v", "MJPG"), ".avi": ("MJPG", "mp4v")}
#: Frame rate assumed when a file does not state one.
FALLBACK_FPS = 30.0
#: One-Euro parameters used when none are given (chosen and measured: :mod:`flmlib.smoothing`).
DEFAULT_SMOOTHING = {"min_cutoff": DEFAULT_MIN_CUTOFF, "beta": DEFAULT_BETA, "d_cutoff": DEFAULT_D_CUTOFF}

class VideoError(Exception):
    """A video that cannot be read, or an output that cannot be written; the message names the file."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class MaskError(ValueError):
    """The mask module is missing or refused the mask name."""


# ----------------------------------------------------------------------------------------------------- tracking


@dataclass
class FrameLandmarks:
    """One frame's result.

    Attributes:
        index: frame number (0-based); ``time``: its timestamp, s.
        raw: ``(68, 2) float32`` landmarker output, image pixels; NaN when no face.
        smoothed: ``(68, 2) float32`` One-Euro output; NaN when no face.
        box: ``(4,) float32`` the box given to the landmarker; NaN when no face.
        status: ``"detected"`` (the detector found the tracked face), ``"bridged"`` (detector miss, tracked box
            reused) or ``"none"`` (no face yet, or lost).
        detect_s, landmark_s: seconds spent in the detector and in the landmarker (+ filter) for this frame.
    """

    index: int
    time: float
    raw: np.ndarray
    smoothed: np.ndarray
    box: np.ndarray
    status: str
    detect_s: float = 0.0
    landmark_s: float = 0.0

    @property
    def has_points(self) -> bool:
        return bool(np.isfinite(self.smoothed).all())


def _nan_points() -> np.ndarray:
    return np.full((N_POINTS, 2), np.nan, np.float32)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


class FaceTracker:
    """Detector + one-face tracking + landmarker + One-Euro smoothing, one frame at a time (module docstring).

    Args:
        landmarker: object with ``predict(image, boxes (K, 4)) -> (K, 68, 2)`` (:mod:`flmlib.landmarkers`).
        detector: ``(image, upsample) -> (K, 4)`` boxes; dlib's HOG detector by default.
        upsample: detector upsampling (each step doubles the image side).
        min_cutoff, beta, d_cutoff: One-Euro parameters (Hz, 1/px, Hz; :mod:`flmlib.smoothing`). ``smooth=False``
            turns the filter off (smoothed = raw).
        fps: frame rate used for frames given without a timestamp.
        min_iou: a detection continues the track when its IoU with the previous box is at least this.
        max_bridge: detector misses bridged in a row before the face counts as lost.
        box_history: detected frames whose (landmark box, detection box) pairs fit the bridging box model.
    """

    def __init__(self, landmarker, detector: Callable[[np.ndarray, int], np.ndarray] = detect_faces,
                 upsample: int = 1, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 d_cutoff: float = DEFAULT_D_CUTOFF, smooth: bool = True, fps: float = FALLBACK_FPS,
                 min_iou: float = 0.2, max_bridge: int = 15, box_history: int = 30):
        if not (isinstance(max_bridge, int) and max_bridge >= 0):
            raise ValueError(f"max_bridge={max_bridge!r} must be an integer >= 0")
        self.landmarker, self.detector, self.upsample = landmarker, detector, int(upsample)
        self.smooth, self.min_iou, self.max_bridge = bool(smooth), float(min_iou), max_bridge
        self.fps = float(fps)
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff, rate=self.fps)
        self._pairs: deque = deque(maxlen=box_history)
        self.reset()

    def reset(self) -> None:
        """Forget the tracked face and the filter state."""
        self.filter.reset()
        self._pairs.clear()
        self._box: np.ndarray | None = None
        self._points: np.ndarray | None = None  # previous frame's raw points (finite) or None
        self._misses = 0
        self._index = 0
        self._t_prev: float | None = None

    def _bridge_box(self) -> np.ndarray:
        if self._points is not None and len(self._pairs) >= 1:
            lm, det = (np.stack(v) for v in zip(*self._pairs))
            box = FallbackBoxModel.fit(lm, det).box_for(self._points)
            if np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]:
                return box
        return self._box

    def step(self, frame: np.ndarray, t: float | None = None) -> FrameLandmarks:
        """Process one ``(H, W, 3) uint8`` RGB frame taken at ``t`` seconds (None: previous + 1 / fps)."""
        if t is None:
            t = 0.0 if self._t_prev is None else self._t_prev + 1.0 / self.fps
        index, self._index, self._t_prev = self._index, self._index + 1, t
        start = time.perf_counter()
        dets = np.asarray(self.detector(frame, self.upsample), np.float32).reshape(-1, 4)
        detect_s = time.perf_counter() - start
        start = time.perf_counter()
        box, status = None, "none"
        if len(dets):
            if self._box is None:
                box = dets[int(np.argmax(_area(dets)))]
            else:
                overlaps = iou(self._box, dets)
                best = int(np.argmax(overlaps))
                if overlaps[best] >= self.min_iou:
                    box = dets[best]
        if box is not None:
            status, self._misses = "detected", 0
        elif self._box is not None and self._misses < self.max_bridge:
            box, status = self._bridge_box(), "bridged"
            self._misses += 1
        raw = _nan_points()
        if box is not None:
            raw = np.asarray(self.landmarker.predict(frame, box[None].astype(np.float32)), np.float32)[0]
        if box is None or not np.isfinite(raw).all():  # no face, lost, or the method could not place it
            if status == "none":
                self._box, self._points, self._misses = None, None, 0
                self._pairs.clear()
            else:  # keep the box for the next frame, but without points to move it
                self._box, self._points = box.astype(np.float32), None
            self.filter.reset()
            smoothed = _nan_points()
        else:
            if status == "detected":
                self._pairs.append((landmark_box(raw), box.astype(np.float32)))
            self._box, self._points = box.astype(np.float32), raw
            smoothed = self.filter(raw, t).astype(np.float32) if self.smooth else raw.copy()
        landmark_s = time.perf_counter() - start
        out_box = np.full(4, np.nan, np.float32) if box is None else np.asarray(box, np.float32).copy()
        return FrameLandmarks(index, float(t), raw, smoothed, out_box, status, detect_s, landmark_s)


@dataclass
class Track:
    """:func:`track_landmarks`' result: per-frame arrays (``T`` frames) and the time spent.

    ``raw``, ``smoothed``: ``(T, 68, 2) float32``; ``boxes``: ``(T, 4) float32`` (NaN: no face); ``status``:
    ``(T,)`` strings (:class:`FrameLandmarks`); ``times``: ``(T,)`` s; ``detect_s``, ``landmark_s``: totals, s.
    """

    raw: np.ndarray
    smoothed: np.ndarray
    boxes: np.ndarray
    status: np.ndarray
    times: np.ndarray
    detect_s: float = 0.0
    landmark_s: float = 0.0

    @property
    def detected(self) -> np.ndarray:
        return self.status == "detected"

    @property
    def bridged(self) -> np.ndarray:
        return self.status == "bridged"


def resolve_landmarker(method, checkpoint: str | Path | None = None):
    """A landmarker from a method id of params.yaml (``checkpoint``: another model file for a trained method), a
    :class:`flmlib.predictor.Predictor` (its landmarker) or a landmarker object (as it is)."""
    if isinstance(method, str):
        from flmlib.config import load_config
        from flmlib.landmarkers import build_landmarker

        spec = load_config().method_spec(method)
        if checkpoint is not None and spec.kind != "cnn":
            raise ValueError(f"a checkpoint is for methods trained by the study; {method} ({spec.kind}) brings its own"
                             " model")
        return build_landmarker(method, **({"checkpoint": checkpoint} if checkpoint is not None else {}))
    return getattr(method, "landmarker", method)


def detector_of(source, detector=None, upsample: int | None = None):
    """The face detector and its upsampling for a tracker: the ones given, else those of ``source`` (a
    :class:`flmlib.predictor.Predictor` carries both), else dlib's HOG detector at ``prepare.upsample`` of
    params.yaml (as the study's results use)."""
    if detector is None:
        detector = getattr(source, "detector", None) or detect_faces
    if upsample is None:
        upsample = getattr(source, "upsample", None)
    if upsample is None:
        from flmlib.predictor import default_upsample

        upsample = default_upsample()
    return detector, upsample


def track_landmarks(frames: Iterable[np.ndarray], landmarker, detector: Callable | None = None,
                    upsample: int | None = None, fps: float = FALLBACK_FPS, timestamps: Sequence[float] | None = None,
                    min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                    d_cutoff: float = DEFAULT_D_CUTOFF, smooth: bool = True, **tracker_options) -> Track:
    """Landmarks of one tracked face on every frame.

    Args:
        frames: ``(H, W, 3) uint8`` RGB frames.
        landmarker: a landmarker, a :class:`~flmlib.predictor.Predictor` (its landmarker, detector and upsampling
            are used unless given) or a method id of params.yaml.
        detector: ``(image, upsample) -> (K, 4)`` boxes (default dlib HOG).
        upsample: detector upsampling (default: the predictor's, else ``prepare.upsample`` of params.yaml).
        fps, timestamps: frame times (``timestamps`` in s; else frame ``i`` at ``i / fps``).
        min_cutoff, beta, d_cutoff, smooth: One-Euro parameters (:class:`FaceTracker`).
        tracker_options: ``min_iou``, ``max_bridge``, ``box_history`` of :class:`FaceTracker`.
    """
    detector, upsample = detector_of(landmarker, detector, upsample)
    tracker = FaceTracker(resolve_landmarker(landmarker), detector, upsample, min_cutoff, beta, d_cutoff, smooth,
                          fps, **tracker_options)
    results = []
    for i, frame in enumerate(frames):
        results.append(tracker.step(frame, None if timestamps is None else float(timestamps[i])))
    if not results:
        empty = np.zeros((0, N_POINTS, 2), np.float32)
        return Track(empty, empty.copy(), np.zeros((0, 4), np.float32), np.zeros(0, "<U8"), np.zeros(0))
    return Track(np.stack([r.raw for r in results]), np.stack([r.smoothed for r in results]),
                 np.stack([r.box for r in results]), np.array([r.status for r in results]),
                 np.array([r.time for r in results]), sum(r.detect_s for r in results),
                 sum(r.landmark_s for r in results))


# ------------------------------------------------------------------------------------------------ video files


def open_video(path: str | Path):
    """``cv2.VideoCapture`` of ``path``; :class:`VideoError` naming it when it is missing or not a video."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise VideoError(path, "no such file")
    if not path.is_file():
        raise VideoError(path, "is not a file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(path, "cannot be opened as a video (not a video file, or a codec OpenCV cannot decode)")
    return cap


def read_frames(path: str | Path) -> tuple[list[np.ndarray], float]:
    """All frames of a video as ``(H, W, 3) uint8`` RGB, and its frame rate (for tests and small clips)."""
    import cv2

    cap = open_video(path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, float(fps) if fps and math.isfinite(fps) and fps > 0 else FALLBACK_FPS


def open_writer(path: str | Path, fps: float, size: tuple[int, int]):
    """``cv2.VideoWriter`` for ``path`` (codec from its suffix, :data:`CODECS`) -> (writer, fourcc).

    Raises:
        VideoError: unknown suffix, a folder that cannot be created, or no codec could open the file.
    """
    import cv2

    path = Path(path)
    codecs = CODECS.get(path.suffix.lower())
    if codecs is None:
        raise VideoError(path, f"unknown video suffix {path.suffix!r}; use one of {', '.join(CODECS)}")
    if path.is_dir():
        raise VideoError(path, "is a folder; give a video file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoError(path, f"cannot create the output folder ({exc.strerror or exc})") from exc
    for code in codecs:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), float(fps), tuple(int(v) for v in size))
        if writer.isOpened():
            return writer, code
        writer.release()
    raise VideoError(path, f"cannot be written (OpenCV could not open it with codec {', '.join(codecs)}; is the folder"
                           " writable?)")


def draw_points(frame_bgr: np.ndarray, points: np.ndarray, colour=(0, 0, 255)) -> np.ndarray:
    """Draw ``(68, 2)`` points as small filled dots on a BGR frame, in place; returns it."""
    import cv2

    radius = max(1, round(max(frame_bgr.shape[:2]) / 400))
    for x, y in points[np.isfinite(points).all(axis=1)]:
        cv2.circle(frame_bgr, (int(round(x)), int(round(y))), radius, colour, -1, lineType=cv2.LINE_AA)
    return frame_bgr


def _mask_function(name: str):
    import importlib

    try:
        masks = importlib.import_module("flmlib.masks")
    except ImportError as exc:
        raise MaskError(f"masks are not available: flmlib.masks cannot be imported ({exc})") from exc
    for attr in ("MASKS", "MASK_NAMES"):
        known = getattr(masks, attr, None)
        if known is not None and name not in known:
            raise MaskError(f"unknown mask {name!r}; known: {', '.join(sorted(known))}")
    return masks.apply_mask


def process_video(in_path: str | Path, out_path: str | Path, method=None, mask: str | None = None,
                  smoothing: dict | None = None, upsample: int | None = None, progress: bool = True,
                  checkpoint: str | Path | None = None, detector: Callable | None = None,
                  **tracker_options) -> dict:
    """Landmarks on every frame of ``in_path``, written to ``out_path`` (same size and frame rate).

    Each frame gets the smoothed points of the tracked face drawn as small red dots, or, with ``mask``, the image
    returned by ``flmlib.masks.apply_mask(image, points, mask)`` (frames without a face are written unchanged).

    Args:
        method: a method id of params.yaml, a landmarker or a :class:`~flmlib.predictor.Predictor`; default the
            one ``flm predict`` uses (the first of params.yaml, the study's O-Net).
        smoothing: One-Euro parameters ``{"min_cutoff", "beta", "d_cutoff"}`` (missing keys: defaults,
            :data:`DEFAULT_SMOOTHING`); ``{"smooth": False}`` turns the filter off.
        upsample: HOG upsampling (default ``prepare.upsample`` of params.yaml).
        progress: show a tqdm progress bar.
        checkpoint: model file of a trained method (default: its params.yaml one).
        detector: replaces dlib's HOG detector (tests).
        tracker_options: ``min_iou``, ``max_bridge``, ``box_history`` of :class:`FaceTracker`.
    Returns:
        counts and throughput: ``frames``, ``frames_with_face`` (points drawn), ``frames_detected``,
        ``bridged`` (detector misses bridged by the tracked box), ``frames_without_face``, ``seconds`` (wall time,
        all included), ``detect_seconds``, ``landmark_seconds`` (landmarker + filter), ``fps_total`` (frames per
        wall second, decoding and writing included), ``fps_with_detection`` (frames / (detect + landmark s)),
        ``fps_without_detection`` (frames / landmark s), plus the input, output, codec, size, frame rate, method,
        smoothing and upsampling used.
    Raises:
        VideoError: ``in_path`` missing or not a decodable video, ``out_path`` not writable (the message names it).
        MaskError: the mask module is missing or does not know ``mask``.
        ValueError / OSError / RuntimeError: the landmarker could not be built (e.g. a missing model file).
    """
    import cv2
    from tqdm import tqdm

    if method is None:
        from flmlib.cli import method_ids

        method = method_ids()[0]
    in_path, out_path = Path(in_path), Path(out_path)
    cap = open_video(in_path)
    try:
        if out_path.exists() and out_path.resolve() == in_path.resolve():
            raise VideoError(out_path, "is the input video; choose another output file")
        apply_mask = _mask_function(mask) if mask is not None else None
        ok, frame = cap.read()
        if not ok:
            raise VideoError(in_path, "no frame could be decoded")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else FALLBACK_FPS
        height, width = frame.shape[:2]
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        unknown = set(smoothing or {}) - {*DEFAULT_SMOOTHING, "smooth"}
        if unknown:
            raise ValueError(f"unknown smoothing parameter(s) {sorted(unknown)};"
                             f" known: {[*DEFAULT_SMOOTHING, 'smooth']}")
        params = {**DEFAULT_SMOOTHING, **(smoothing or {})}
        smooth = bool(params.pop("smooth", True))
        landmarker = resolve_landmarker(method, checkpoint)
        detector, upsample = detector_of(method, detector, upsample)
        tracker = FaceTracker(landmarker, detector, upsample, smooth=smooth, fps=fps, **params, **tracker_options)
        writer, codec = open_writer(out_path, fps, (width, height))
    except BaseException:
        cap.release()
        raise
    counts = {"detected": 0, "bridged": 0, "none": 0}
    detect_s = landmark_s = 0.0
    n = 0
    t_prev = None
    start = time.perf_counter()
    bar = tqdm(total=total or None, unit="frame", desc=in_path.name, disable=not progress, leave=False)
    try:
        while ok:
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            t = msec / 1000.0 if msec is not None and math.isfinite(msec) and msec >= 0 else None
            if t is None or (t_prev is not None and t <= t_prev):  # no usable timestamp: the nominal frame interval
                t = 0.0 if t_prev is None else t_prev + 1.0 / fps
            t_prev = t
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            result = tracker.step(rgb, t)
            detect_s += result.detect_s
            landmark_s += result.landmark_s
            counts[result.status if result.has_points else "none"] += 1
            if result.has_points:
                if apply_mask is not None:
                    try:
                        masked = apply_mask(rgb, result.smoothed, mask)
                    except (KeyError, ValueError) as exc:
                        raise MaskError(f"mask {mask!r}: {exc}") from exc
                    frame = cv2.cvtColor(np.ascontiguousarray(masked, np.uint8), cv2.COLOR_RGB2BGR)
                else:
                    draw_points(frame, result.smoothed)
            writer.write(frame)
            n += 1
            bar.update()
            ok, frame = cap.read()
    finally:
        bar.close()
        cap.release()
        writer.release()
    seconds = time.perf_counter() - start
    if not out_path.is_file() or out_path.stat().st_size == 0:
        raise VideoError(out_path, "nothing was written (is the disk full or the folder read-only?)")
    per = lambda s: n / s if s > 0 else float("inf")  # noqa: E731
    return {
        "input": str(in_path), "output": str(out_path), "codec": codec, "width": width, "height": height,
        "fps": fps, "method": getattr(landmarker, "name", str(method)), "mask": mask, "upsample": int(upsample),
        "smoothing": {**params, "smooth": smooth},
        "frames": n, "frames_with_face": counts["detected"] + counts["bridged"], "frames_detected": counts["detected"],
        "bridged": counts["bridged"], "frames_without_face": counts["none"],
        "seconds": seconds, "detect_seconds": detect_s, "landmark_seconds": landmark_s,
        "fps_total": per(seconds), "fps_with_detection": per(detect_s + landmark_s),
        "fps_without_detection": per(landmark_s),
    }


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = FALLBACK_FPS) -> Path:
    """Write ``(H, W, 3) uint8`` RGB frames as a video (codec from the suffix); returns the path."""
    import cv2

    if not len(frames):
        raise ValueError("no frames to write")
    height, width = frames[0].shape[:2]
    writer, _ = open_writer(path, fps, (width, height))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return Path(path)


# -------------------------------------------------------------------------------------- synthetic clips, metrics


@dataclass
class SyntheticClip:
    """``frames``: ``(T, H, W, 3) uint8`` RGB; ``points``: ``(T, 68, 2) float32`` true landmarks of every frame
    (image pixels); ``matrices``: ``(T, 2, 3)`` the affine map from the source image to each frame; ``fps``."""

    frames: np.ndarray
    points: np.ndarray
    matrices: np.ndarray
    fps: float = FALLBACK_FPS
    motion: dict = field(default_factory=dict)


def synthetic_clip(image: np.ndarray, points: np.ndarray, n_frames: int = 30, size: tuple[int, int] | None = None,
                   face_size: float | None = None, shift: float | tuple[float, float] = 12.0, scale: float = 0.08,
                   rotation: float = 8.0, cycles: float = 1.0, noise: float = 0.0, fps: float = FALLBACK_FPS,
                   seed: int = 0) -> SyntheticClip:
    """A clip of a still face moved, scaled and rotated by known smooth amounts (one ``cv2.warpAffine`` per frame).

    Frame ``k`` (phase ``u = 2 pi cycles k / n_frames``) is the image mapped by ``M_k = T(c + d_k) R(theta_k)
    S(s0 sigma_k) T(-f)``: ``f`` the centre of the landmarks' box, ``c`` the output centre, ``s0`` the base scale,
    ``d_k = (shift_x sin u, shift_y sin(2 u + 1) / 2)``, ``sigma_k = 1 + scale sin(u + 2)``,
    ``theta_k = rotation sin(u + 3)`` (degrees), so the face moves unless every amplitude is 0, and its speed changes
    smoothly. Frame borders are replicated (a mirrored border would add mirrored faces).

    Args:
        image: ``(H, W, 3) uint8`` RGB; ``points``: its ``(68, 2)`` true landmarks.
        size: ``(width, height)`` of the clip (default the image's).
        face_size: ``sqrt(w h)`` of the landmark box in the clip, pixels (default: as in the image).
        shift: amplitude of the translation, pixels (one number or ``(x, y)``).
        scale: relative amplitude of the scaling (0.08: +-8 %); ``rotation``: amplitude in degrees.
        cycles: periods of the motion over the clip.
        noise: standard deviation of Gaussian pixel noise added to each frame (grey levels), like a camera's.
        fps: the clip's frame rate (stored; the motion is defined per frame).
    """
    import cv2

    image = np.ascontiguousarray(image)
    points = np.asarray(points, np.float64)
    height, width = image.shape[:2]
    out_w, out_h = (width, height) if size is None else (int(size[0]), int(size[1]))
    box = landmark_box(points).astype(np.float64)
    centre = (box[:2] + box[2:]) / 2
    s0 = 1.0 if face_size is None else face_size / math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    target = np.array([(out_w - 1) / 2, (out_h - 1) / 2]) if size is not None else centre
    sx, sy = (shift, shift) if np.isscalar(shift) else shift
    rng = np.random.default_rng(seed)
    frames = np.empty((n_frames, out_h, out_w, 3), np.uint8)
    truth = np.empty((n_frames, N_POINTS, 2), np.float32)
    matrices = np.empty((n_frames, 2, 3))
    for k in range(n_frames):
        u = 2 * math.pi * cycles * k / n_frames
        d = np.array([sx * math.sin(u), sy * 0.5 * math.sin(2 * u + 1)])
        sigma = s0 * (1 + scale * math.sin(u + 2))
        theta = math.radians(rotation * math.sin(u + 3))
        rot = sigma * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        m = np.hstack([rot, (target + d - rot @ centre)[:, None]])
        frame = cv2.warpAffine(image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if noise > 0:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames[k], truth[k], matrices[k] = frame, apply_affine(points, m), m
    motion = {"shift_px": (sx, sy), "scale": scale, "rotation_deg": rotation, "cycles": cycles, "noise": noise,
              "base_scale": s0}
    return SyntheticClip(frames, truth, matrices, float(fps), motion)


def _residual_change(pred: np.ndarray, truth: np.ndarray, order: int) -> np.ndarray:
    """Per-point length of the ``order``-th frame difference of ``pred - truth`` (frames with NaN drop out)."""
    diff = np.diff(pred.astype(np.float64) - truth.astype(np.float64), n=order, axis=0)
    return np.linalg.norm(diff, axis=-1)  # (T - order, 68), NaN where a frame involved is missing


def _rms(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def estimate_lag(pred: np.ndarray, truth: np.ndarray, max_lag: float = 6.0, step: float = 0.05) -> float:
    """The delay (frames, fractional) that best aligns ``pred``'s motion with ``truth``'s.

    For each shift ``s`` in ``[-1, max_lag]`` the truth is delayed by ``s`` frames (linear interpolation in time)
    and the mean point distance between ``pred`` and the delayed truth is taken after removing each point's constant
    offset (a method's own bias is not lag); the shift with the smallest distance is the lag. Every shift is scored
    on the same frames. NaN when the truth does not move.
    """
    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    n = len(truth)
    first, last = int(math.ceil(max_lag)), n - 2  # frames k with k - s inside [0, n - 1] for every s
    if last - first < 3:
        raise ValueError(f"{n} frames are too few to estimate a lag of up to {max_lag} frames")
    ks = np.arange(first, last + 1)
    if np.nanmax(np.abs(truth - truth.mean(axis=0))) < 1e-3:  # a still face: no motion to align, no lag to measure
        return float("nan")
    shifts = np.arange(-1.0, max_lag + step / 2, step)
    costs = []
    for s in shifts:
        pos = ks - s
        lo = np.floor(pos).astype(int)
        w = (pos - lo)[:, None, None]
        delayed = truth[lo] * (1 - w) + truth[np.minimum(lo + 1, n - 1)] * w
        res = pred[ks] - delayed
        res = res - np.nanmean(res, axis=0, keepdims=True)
        costs.append(np.nanmean(np.linalg.norm(res, axis=-1)))
    return float(shifts[int(np.nanargmin(costs))])


def stability(raw: np.ndarray, smoothed: np.ndarray, truth: np.ndarray, fps: float = FALLBACK_FPS,
              max_lag: float = 6.0) -> dict:
    """Jitter, error and lag of raw and smoothed landmarks against the true ones, ``(T, 68, 2)`` each.

    Per series (``raw``, ``smoothed``):

    * ``jitter_px``: RMS over points and frames of ``|r_(k+1) - 2 r_k + r_(k-1)|``, the second frame difference of
      the residual ``r = pred - truth``: the frame-to-frame shake, pixels. The true motion cancels, and so do a steady
      bias and a smooth lag (a lag of ``L`` frames only adds ``L`` times the motion's third difference), so this
      measures noise, not lag. White noise of RMS ``e`` px per point gives ``sqrt(6) e``. ``jitter_iod``: divided
      by the mean inter-ocular distance of the truth (points 36-45).
    * ``step_px``: RMS of the first difference ``|r_(k+1) - r_k|`` (the change of the error from frame to frame);
      unlike ``jitter_px`` it grows with lag times acceleration, so a lagging filter can score worse than raw on it.
    * ``error_px``, ``error_iod``: mean point-to-point distance to the truth.
    * ``lag_frames``, ``lag_ms``: :func:`estimate_lag` (0 for a series that follows the truth at once).

    Frames with NaN points (no face) are left out. Also returns ``jitter_reduction`` (raw / smoothed jitter) and
    ``interocular_px``.
    """
    truth = np.asarray(truth, np.float64)
    iod = float(np.mean(np.linalg.norm(truth[:, OUTER_EYE_CORNERS[0]] - truth[:, OUTER_EYE_CORNERS[1]], axis=-1)))
    report = {"frames": int(len(truth)), "fps": float(fps), "interocular_px": iod}
    for name, pred in (("raw", raw), ("smoothed", smoothed)):
        pred = np.asarray(pred, np.float64)
        if pred.shape != truth.shape:
            raise ValueError(f"{name} has shape {pred.shape}, truth {truth.shape}")
        jitter = _rms(_residual_change(pred, truth, 2))
        error = float(np.nanmean(np.linalg.norm(pred - truth, axis=-1)))
        lag = estimate_lag(pred, truth, max_lag)
        report[name] = {"jitter_px": jitter, "jitter_iod": jitter / iod,
                        "step_px": _rms(_residual_change(pred, truth, 1)),
                        "error_px": error, "error_iod": error / iod, "lag_frames": lag, "lag_ms": 1000 * lag / fps,
                        "frames_with_points": int(np.isfinite(pred).all(axis=(1, 2)).sum())}
    report["jitter_reduction"] = report["raw"]["jitter_px"] / report["smoothed"]["jitter_px"]
    return report
