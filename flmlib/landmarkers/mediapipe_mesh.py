"""MediaPipe Face Mesh (468-vertex mesh, mediapipe 0.10.21 legacy ``solutions.face_mesh``) as a 68-point method.

**Environment.** mediapipe 0.10.21 needs numpy<2 and protobuf<5, which the study's environment cannot hold
(numpy 2.4.6, protobuf 7.36.2). It lives in its own environment, ``.venv-mediapipe/`` (``make mediapipe-env``, from
``envs/mediapipe.lock``), and runs in a persistent worker process started with that environment's python:
:mod:`flmlib.landmarkers.mediapipe_worker`, run by file path. This module never imports mediapipe.

**Box protocol.** Every method of the comparison gets the same face box. For each box this module cuts a square crop
centred on the box, side ``crop_factor`` times the box's longer side, resampled to ``crop_size`` x ``crop_size``
pixels (edge pixels replicated outside the image), runs the mesh on the crop (MediaPipe's own face detector then
finds the face inside it, and its mesh model places the 468 vertices), and maps the vertices back to image pixels.
A crop where MediaPipe finds no face, or finds one whose centre lies outside the given box (another person in the
crop), gives an all-NaN face. See :data:`DEFAULT_CROP_FACTOR` for the choice of the crop.

**468 -> 68 mapping.** :data:`MESH_TO_IBUG68` is the hand-picked correspondence published by Peizhi Yan in
https://github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks (``mediapipe2dlib/mp2dlib.py``, MIT licence; linked from
google-ai-edge/mediapipe issue #4490), written out here as a table. Each iBUG point is one mesh vertex or the mean of
two; the rows that average two vertices are :data:`AVERAGED_ROWS`. The mesh is a 3D face model's surface, so the
mapped points are *approximations* of the iBUG definitions: above all, points 0-16 follow the mesh's face oval,
which is **not** iBUG's jaw line (the 300-W jaw is the visible cheek / chin silhouette, the oval is a fixed set of
surface vertices), and the brows and nose bridge are fixed vertices, not annotated contours. The method's spec says
``points: mapped`` so the report flags it; its 51 inner points (17-67) are the fairer comparison.

Coordinates: images are ``(H, W, 3) uint8`` RGB; boxes ``(K, 4)`` float ``(x0, y0, x1, y1)`` edges in image pixels;
points are 0-based image pixels with pixel centres at integers (:mod:`flmlib.crops` conventions).
"""
from __future__ import annotations

import io
import os
import select
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from flmlib.landmarkers.base import MethodSpec, check_batch
from flmlib.paths import project_path

#: Vertices of the (unrefined) MediaPipe face mesh.
N_MESH = 468
#: The mediapipe environment's interpreter (relative to the project root); ``make mediapipe-env`` builds it.
DEFAULT_PYTHON = ".venv-mediapipe/bin/python"
#: Crop side / longer box side. MediaPipe's detector (BlazeFace short range, 128 px input) is trained on photos in
#: which the face fills part of the frame, and the mesh model wants a margin round the face (it enlarges the
#: detection 1.5x). Measured with boxes around the annotated points (inter-ocular NME, 51 inner points):
#: HELEN test 1.25-2.0 all find 230/230 faces (NME 0.0356 at 1.5, 0.0365 at 2.0), 2.5-3.0 lose 1-2 faces to
#: other people in the crop; on AFLW2000-3D faces with |yaw| 30-60, 2.0 misses 3.9% against 5.3% at 1.5 and 6.0%
#: at 1.25. 2.0 is the most reliable detection for a ~0.001 NME cost, works for dlib's slightly smaller boxes
#: alike, and equals the study's context factor.
DEFAULT_CROP_FACTOR = 2.0
#: Crop side in pixels. At factor 2 the face spans about half the crop (~128 px), so the mesh model's 192 px ROI
#: (1.5x the face) samples the crop near its native resolution: more pixels would not add detail.
DEFAULT_CROP_SIZE = 256
#: MediaPipe's own default threshold of its face detector.
DEFAULT_MIN_DETECTION_CONFIDENCE = 0.5
#: Crops per request to the worker: bounds the pipe traffic and memory (64 crops of 256 px = 12.6 MB).
DEFAULT_BATCH_SIZE = 64
#: Seconds to wait for the worker to start (import mediapipe, build the graph) or to answer one request.
DEFAULT_TIMEOUT = 300.0

#: The worker script, run by file path with the mediapipe environment's python.
WORKER_SCRIPT = Path(__file__).with_name("mediapipe_worker.py")

# iBUG 68 point (0-based row) -> MediaPipe mesh vertex(es); two vertices mean "their midpoint". Transcribed from
# PeizhiYan/Mediapipe_2_Dlib_Landmarks (see module docstring); the comments give iBUG's 1-based numbers.
#: ``MESH_TO_IBUG68[i]``: the mesh vertex indices whose mean is iBUG point ``i`` (0-based).
MESH_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # face oval standing in for the jaw, 1-17 (subject's right ear -> chin -> left ear)
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 18-22, left brow 23-27 (subject's sides), outer end first on the image's left
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 28-31 (top to tip), lower nose 32-36
    (168, 6), (197, 195), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 37-42 (outer corner, upper lid, inner corner, lower lid), left eye 43-48 (inner corner first)
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lip 49-60 (right corner, upper lip to left corner, lower lip back)
    (61,), (39,), (37,), (0,), (267,), (269,), (291,),
    (321,), (314,), (17,), (84,), (91,),
    # inner lip 61-68 (right inner corner, upper inner lip, left inner corner, lower inner lip)
    (78,), (82,), (13,), (312,), (308,),
    (317,), (14,), (87,),
)
#: ``(68, 2) int64``: :data:`MESH_TO_IBUG68` as a table; a one-vertex row repeats its vertex, so every row is the
#: mean of its two columns.
MESH_INDEX = np.array([row if len(row) == 2 else row * 2 for row in MESH_TO_IBUG68], np.int64)
#: 0-based iBUG rows that average two different mesh vertices: 3, 4, 12 (face oval), 27, 28 (nose bridge).
AVERAGED_ROWS = tuple(i for i, row in enumerate(MESH_TO_IBUG68) if len(set(row)) > 1)

_LEN = struct.Struct("<Q")
_STDERR_TAIL = 4000


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """``(..., 468, 2)`` mesh vertices -> ``(..., 68, 2) float32`` iBUG points (same units; NaN stays NaN)."""
    mesh = np.asarray(mesh, np.float32)
    if mesh.shape[-2:] != (N_MESH, 2):
        raise ValueError(f"mesh must be (..., {N_MESH}, 2), got shape {mesh.shape}")
    return mesh[..., MESH_INDEX, :].mean(axis=-2)


# ------------------------------------------------------------------------------------------------- crop geometry


def crop_matrix(box: np.ndarray, crop_factor: float, crop_size: int) -> np.ndarray:
    """Affine ``(2, 3)`` float64 map from image pixels to crop pixels for one ``(4,)`` box.

    The crop is the square of side ``crop_factor * max(w, h)`` centred on the box, mapped edge to edge onto
    ``crop_size`` pixels; both frames put pixel centres at integers, so the crop's edge ``-0.5`` is the square's edge.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = crop_factor * max(x1 - x0, y1 - y0)
    scale = crop_size / side
    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    return np.array([[scale, 0.0, -scale * left - 0.5], [0.0, scale, -scale * top - 0.5]])


def cut_crop(image: np.ndarray, box: np.ndarray, crop_factor: float, crop_size: int) -> np.ndarray:
    """``(crop_size, crop_size, 3) uint8`` crop of ``image`` around ``box`` (:func:`crop_matrix`); outside the
    image the edge pixels are replicated, so the detector sees no artificial black border.

    Shrinking by more than 2x samples the square at ``n`` times ``crop_size`` first and averages ``n x n`` blocks
    (INTER_AREA by a whole factor keeps the edge-to-edge frame), so a large face is not aliased.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    n = max(1, int(crop_factor * max(x1 - x0, y1 - y0) / crop_size))
    crop = cv2.warpAffine(image, crop_matrix(box, crop_factor, crop_size * n), (crop_size * n, crop_size * n),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop if n == 1 else cv2.resize(crop, (crop_size, crop_size), interpolation=cv2.INTER_AREA)


def crop_to_image(points: np.ndarray, box: np.ndarray, crop_factor: float, crop_size: int) -> np.ndarray:
    """``(..., 2)`` crop pixels of ``box``'s crop -> image pixels (inverse of :func:`crop_matrix`), float32."""
    m = crop_matrix(box, crop_factor, crop_size)
    points = np.asarray(points, np.float64)
    return ((points - m[:, 2]) / m[0, 0]).astype(np.float32)


# ------------------------------------------------------------------------------------------------- worker client


class MeshWorker:
    """Client of one worker process of the MediaPipe environment (started lazily, reused, thread-safe): by default the
    Face Mesh worker (:mod:`~flmlib.landmarkers.mediapipe_worker`); another worker script that speaks the same framing
    (BlazeFace's, :mod:`flmlib.blazeface_worker`) with ``script``, ``args`` and ``row_size``.

    The worker's stderr (MediaPipe's logging) goes to a temporary file, never to the protocol pipe and never to a pipe
    nobody reads (which would stall the worker once full); its tail is quoted when the worker fails.

    Args:
        python: the MediaPipe environment's interpreter.
        min_detection_confidence: passed to the worker as ``--min-detection-confidence``.
        timeout: seconds to wait for any answer before the worker counts as hung.
        script: the worker script, run by file path.
        args: further command-line arguments of the worker.
        row_size: the second number of the worker's start-up frame ``[protocol, row_size, pid]`` (468 mesh vertices
            for Face Mesh), checked so that a wrong script fails at start.
    """

    def __init__(self, python: Path, min_detection_confidence: float, timeout: float = DEFAULT_TIMEOUT,
                 script: Path = WORKER_SCRIPT, args: Sequence[str] = (), row_size: int = N_MESH):
        self.python, self.script, self.row_size = Path(python), Path(script), int(row_size)
        self.args = ["--min-detection-confidence", repr(float(min_detection_confidence)), *args]
        self.timeout = float(timeout)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._lock = threading.Lock()
        self._finalizer = None

    @property
    def running(self) -> bool:
        """True while a worker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, if any."""
        return self._proc.pid if self.running else None

    def _start(self) -> None:
        if not self.python.exists():
            raise FileNotFoundError(missing_python_message(self.python))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MPLBACKEND")}
        # mediapipe imports matplotlib; a Jupyter kernel's MPLBACKEND (matplotlib_inline) does not exist there.
        env["MPLBACKEND"] = "Agg"
        self._stderr = tempfile.TemporaryFile()
        # -I: isolated mode, so no PYTHONPATH / user site-packages of the study's environment (numpy 2) leaks in.
        self._proc = subprocess.Popen([str(self.python), "-I", str(self.script), *self.args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        # Ends the worker when this client is garbage-collected or the interpreter exits (weakref.finalize runs at
        # exit), so no orphan process outlives the study's.
        self._finalizer = weakref.finalize(self, _stop_process, self._proc, self._stderr)
        hello = self._read_frame("starting")
        if hello.shape != (3,) or int(hello[1]) != self.row_size:
            self._fail(f"answered its start with {hello!r}, expected [protocol, {self.row_size}, pid]")

    def send(self, array: np.ndarray) -> None:
        """Send one request (starting the worker if needed); :meth:`receive` reads its answer. One request in flight
        at a time per worker."""
        with self._lock:
            self._send(array)

    def receive(self, doing: str = "answering") -> np.ndarray:
        """The answer to the request sent last (``doing`` describes it in a timeout or crash message)."""
        with self._lock:
            return self._receive(doing)

    def run(self, crops: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3) uint8`` RGB crops -> ``(N, 468, 2) float32`` crop pixels, NaN rows where no face (the
        Face Mesh worker). Request and answer under one lock, so threads sharing the worker get their own answers.

        Raises:
            RuntimeError: the worker died or did not answer within ``timeout`` s (message has its stderr tail).
        """
        with self._lock:
            self._send(crops)
            out = self._receive(f"processing {len(crops)} crops")
        if out.shape != (len(crops), N_MESH, 2):
            raise RuntimeError(f"MediaPipe worker answered {len(crops)} crops with an array of shape {out.shape}")
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """End the worker (closes its input, waits up to 10 s, then kills it). A later :meth:`run` starts anew."""
        with self._lock:
            self._cleanup()

    # -- internals

    def _cleanup(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer, self._proc, self._stderr = None, None, None

    def _send(self, array: np.ndarray) -> None:
        if not self.running:
            self._cleanup()
            self._start()
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        data = buf.getvalue()
        try:
            self._proc.stdin.write(_LEN.pack(len(data)))
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self._fail(f"stopped reading its input ({exc})")

    def _receive(self, doing: str) -> np.ndarray:
        if self._proc is None:
            raise RuntimeError(f"MediaPipe worker ({self.script.name}): an answer was asked for before any request")
        return self._read_frame(doing)

    def _read_exact(self, n: int, doing: str) -> bytes:
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail(f"gave no answer within {self.timeout:g} s while {doing}", kill=True)
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                self._fail(f"exited while {doing}")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read_frame(self, doing: str) -> np.ndarray:
        (length,) = _LEN.unpack(self._read_exact(_LEN.size, doing))
        return np.load(io.BytesIO(self._read_exact(length, doing)), allow_pickle=False)

    def _fail(self, what: str, kill: bool = False):
        proc, stderr = self._proc, self._stderr
        if kill:
            proc.kill()
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        tail = ""
        if stderr is not None:
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - _STDERR_TAIL))
            tail = stderr.read().decode("utf-8", "replace").strip()
        self._cleanup()
        raise RuntimeError(f"MediaPipe worker ({self.python} {self.script.name}) {what}; exit status {rc}; "
                           f"its stderr ends with:\n{tail or '(nothing)'}")


def _stop_process(proc: subprocess.Popen, stderr) -> None:
    """Close the worker's input (it exits on end of input), wait briefly, kill if needed; close the stderr file."""
    try:
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
    finally:
        if stderr is not None:
            stderr.close()


def missing_python_message(python: Path) -> str:
    """The error message for an absent mediapipe interpreter."""
    return (f"{python}: the MediaPipe environment's python is missing; run `make mediapipe-env` in the project "
            f"root to build .venv-mediapipe from envs/mediapipe.lock")


# ------------------------------------------------------------------------------------------------- the landmarker


class MediaPipeMeshLandmarker:
    """MediaPipe Face Mesh on a crop around each box, mapped to the 68 iBUG points (module docstring).

    Args:
        spec: the method's spec (``points`` should be ``"mapped"``).
        python: the mediapipe environment's interpreter (must exist).
        crop_factor: crop side / longer box side, >= 1 (the box is inside the crop).
        crop_size: crop side in pixels, >= 64.
        min_detection_confidence: MediaPipe's face detector threshold, in (0, 1).
        batch_size: crops per worker request, >= 1.
        timeout: seconds to wait for the worker's start or for one request's answer.
    """

    def __init__(self, spec: MethodSpec, python: str | Path = DEFAULT_PYTHON,
                 crop_factor: float = DEFAULT_CROP_FACTOR, crop_size: int = DEFAULT_CROP_SIZE,
                 min_detection_confidence: float = DEFAULT_MIN_DETECTION_CONFIDENCE,
                 batch_size: int = DEFAULT_BATCH_SIZE, timeout: float = DEFAULT_TIMEOUT):
        if not float(crop_factor) >= 1.0:
            raise ValueError(f"method {spec.id!r}: crop_factor={crop_factor!r} must be >= 1 (the box must fit)")
        if int(crop_size) != crop_size or crop_size < 64:
            raise ValueError(f"method {spec.id!r}: crop_size={crop_size!r} must be a whole number of pixels >= 64")
        if not 0.0 < float(min_detection_confidence) < 1.0:
            raise ValueError(f"method {spec.id!r}: min_detection_confidence={min_detection_confidence!r} "
                             f"must lie in (0, 1)")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"method {spec.id!r}: batch_size={batch_size!r} must be a whole number >= 1")
        if not float(timeout) > 0:
            raise ValueError(f"method {spec.id!r}: timeout={timeout!r} must be > 0 seconds")
        self.spec = spec
        self.python = project_path(python)
        if not self.python.exists():
            raise FileNotFoundError(missing_python_message(self.python))
        self.crop_factor = float(crop_factor)
        self.crop_size = int(crop_size)
        self.batch_size = int(batch_size)
        self.worker = MeshWorker(self.python, float(min_detection_confidence), float(timeout))

    @property
    def name(self) -> str:
        """The method id (``spec.id``)."""
        return self.spec.id

    def predict(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB image and ``(K, 4)`` boxes -> ``(K, 68, 2) float32`` image pixels (NaN: no face)."""
        return self.predict_batch([image], [boxes])[0]

    def predict_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]:
        """Many images, each with its ``(K_i, 4)`` boxes -> list of ``(K_i, 68, 2) float32`` image pixels.

        The crops of all images go to the worker together, ``batch_size`` per request.
        """
        return [mesh_to_ibug68(m) for m in self.predict_mesh_batch(images, boxes_list)]

    def predict_mesh(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(K, 468, 2) float32`` mesh vertices in image pixels for each box (NaN: no face)."""
        return self.predict_mesh_batch([image], [boxes])[0]

    def predict_mesh_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]:
        """:meth:`predict_batch` before the 68-point mapping: list of ``(K_i, 468, 2) float32`` image pixels."""
        images, boxes_list = check_batch(images, boxes_list)
        jobs = [(i, box) for i, boxes in enumerate(boxes_list) for box in boxes]
        meshes = np.full((len(jobs), N_MESH, 2), np.nan, np.float32)
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            crops = np.stack([cut_crop(images[i], box, self.crop_factor, self.crop_size) for i, box in chunk])
            found = self.worker.run(crops)
            for j, (_, box) in enumerate(chunk):
                meshes[start + j] = crop_to_image(found[j], box, self.crop_factor, self.crop_size)
        # MediaPipe picks the most confident face in the crop; when that is someone else (its centre outside the
        # box we asked about), the box's own face was not found.
        boxes_all = np.array([box for _, box in jobs], np.float32).reshape(-1, 4)
        centre = mesh_to_ibug68(meshes).mean(axis=1)
        with np.errstate(invalid="ignore"):
            outside = ((centre < boxes_all[:, :2]) | (centre > boxes_all[:, 2:])).any(axis=1)
        meshes[outside] = np.nan
        counts = np.cumsum([0] + [len(b) for b in boxes_list])
        return [meshes[a:b] for a, b in zip(counts[:-1], counts[1:])]

    def close(self) -> None:
        """End the worker process (a later prediction starts a new one)."""
        self.worker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build(spec: MethodSpec, *, python: str | Path = DEFAULT_PYTHON, crop_factor: float = DEFAULT_CROP_FACTOR,
          crop_size: int = DEFAULT_CROP_SIZE, min_detection_confidence: float = DEFAULT_MIN_DETECTION_CONFIDENCE,
          batch_size: int = DEFAULT_BATCH_SIZE, timeout: float = DEFAULT_TIMEOUT) -> MediaPipeMeshLandmarker:
    """The landmarker of ``spec`` (options as :class:`MediaPipeMeshLandmarker`; ``python`` relative to the project
    root). The worker starts on the first prediction.

    Raises:
        FileNotFoundError: ``python`` does not exist (the message says to run ``make mediapipe-env``).
        ValueError: an option out of range (the message names it and its value).
    """
    return MediaPipeMeshLandmarker(spec, python=python, crop_factor=crop_factor, crop_size=crop_size,
                                   min_detection_confidence=min_detection_confidence, batch_size=batch_size,
                                   timeout=timeout)
