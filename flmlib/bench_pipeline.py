"""Whole pipeline, image in and landmarks out: each registered detector in front of each chosen landmarker, against
MediaPipe Face Mesh (its own BlazeFace detector and mesh), in one run on this machine.

Frames: 640x480 stills, each a seeded test face of ``video.test_set`` placed at the centre with a face box of about
160 px (:func:`flmlib.video.synthetic_clip` without motion), one face per frame. For every frame the pipelines run
one after another (so they share the machine's noise), one thread each; a pipeline's time is detection plus landmarks
of the first face it found. Reported per pipeline: median ms per frame, faces per second (1000 / median), the share
of frames where it found the face, and the inter-ocular NME of its points on those frames (MediaPipe's 468-vertex
mesh mapped to the 68 points, so its jaw is not iBUG's). MediaPipe and BlazeFace both run in a worker process of the
MediaPipe environment, so both times include passing the frame to it (about 1 MB).

Stream pipelines (a webcam's throughput on both cores), the streams alternating pass by pass: a detector in a worker
process one frame ahead of the landmarker ("pipelined"), two such workers each on every other frame ("on 2
workers"), and two Face Mesh workers each on every other frame ("2 processes").

``python -m flmlib.bench_pipeline --methods onet onet_half_40 --out reports/bench_pipeline.json`` (part of
``make bench``; ``--methods`` default: ``video.method`` of params.yaml).
"""
from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Callable, Sequence

import numpy as np

from flmlib.metrics import nme_interocular
from flmlib.report import cpu_label

FRAME_SIZE = (640, 480)
FACE_SIZE = 160.0


def make_frames(study, prepared_dir, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` frames ``(480, 640, 3) uint8`` and their ``(n, 68, 2)`` true points."""
    import pandas as pd

    from flmlib.io import read_image
    from flmlib.paths import project_path
    from flmlib.prepare import load_split
    from flmlib.video import synthetic_clip
    from flmlib.video_stage import pick_faces

    split = load_split(project_path(prepared_dir) / f"{study.video.test_set}.npz")
    faces = pd.read_csv(project_path(prepared_dir) / "faces.csv", usecols=["face_id", "image_path"])
    paths = dict(zip(faces["face_id"], faces["image_path"]))
    frames, truth = [], []
    for _, path, points in pick_faces(split, paths, n, seed):
        clip = synthetic_clip(read_image(path), points, n_frames=1, size=FRAME_SIZE, face_size=FACE_SIZE, shift=0.0,
                              scale=0.0, rotation=0.0)
        frames.append(clip.frames[0])
        truth.append(clip.points[0])
    return frames, np.stack(truth)


class DetectorPipeline:
    """A registered detector, then the landmarker on its first box."""

    def __init__(self, detector, landmarker):
        self.detector, self.landmarker = detector, landmarker

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        boxes = self.detector.detect(frame)
        if len(boxes) == 0:
            return None
        return self.landmarker.predict(frame, boxes[:1])[0]


def pipelined_stream(detectors, landmarker, frames: list[np.ndarray]) -> tuple[float, list]:
    """Landmarks of a stream of frames with detection running ahead in worker processes (BlazeFace): with ``n``
    detectors, detector ``k % n`` gets frame ``k`` and frame ``k + n`` is sent to it before frame ``k`` is landmarked,
    so the workers detect on the other cores meanwhile (one detector: one frame ahead; two: each on every other frame).
    Returns (ms per frame over the stream, points of each frame or None)."""
    n = len(detectors)
    points = [None] * len(frames)
    start = time.perf_counter()
    for k in range(min(n, len(frames))):
        detectors[k].submit(frames[k])
    for k, frame in enumerate(frames):
        detector = detectors[k % n]
        boxes = detector.receive()
        if k + n < len(frames):
            detector.submit(frames[k + n])
        if len(boxes):
            points[k] = landmarker.predict(frame, boxes[:1])[0]
    return (time.perf_counter() - start) * 1000 / len(frames), points


class MeshPipeline:
    """MediaPipe Face Mesh on the whole frame (padded to a square): its detector finds the face, the mesh places it."""

    def __init__(self):
        from flmlib.landmarkers.mediapipe_mesh import DEFAULT_MIN_DETECTION_CONFIDENCE, DEFAULT_PYTHON, MeshWorker
        from flmlib.paths import project_path

        self.worker = MeshWorker(project_path(DEFAULT_PYTHON), DEFAULT_MIN_DETECTION_CONFIDENCE)

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        from flmlib.landmarkers.mediapipe_mesh import mesh_to_ibug68

        side = max(frame.shape[:2])
        square = np.zeros((side, side, 3), np.uint8)
        square[: frame.shape[0], : frame.shape[1]] = frame
        mesh = self.worker.run(square[None])[0]
        return None if not np.isfinite(mesh).all() else mesh_to_ibug68(mesh)

    def close(self) -> None:
        self.worker.close()


class TwoMeshStream:
    """MediaPipe Face Mesh on both cores: two worker processes, each landmarking every other frame of the stream
    (one thread per worker waits on its pipe, so the GIL is free)."""

    def __init__(self, warmup_frame: np.ndarray):
        from concurrent.futures import ThreadPoolExecutor

        self.meshes = [MeshPipeline(), MeshPipeline()]
        self.pool = ThreadPoolExecutor(2)
        for mesh in self.meshes:  # warm-up: worker start and first-call allocations
            mesh(warmup_frame)

    def __call__(self, frames: list[np.ndarray]) -> tuple[float, list]:
        """One pass over the stream: (ms per frame, points of each frame or None)."""
        points: list = [None] * len(frames)

        def share(j: int) -> None:
            for k in range(j, len(frames), 2):
                points[k] = self.meshes[j](frames[k])

        start = time.perf_counter()
        list(self.pool.map(share, (0, 1)))
        return (time.perf_counter() - start) * 1000 / len(frames), points

    def close(self) -> None:
        self.pool.shutdown()
        for mesh in self.meshes:
            mesh.close()


def measure_streams(streams: dict[str, tuple[Callable[[], tuple[float, list]], str]], truth: np.ndarray,
                    rounds: int) -> dict:
    """Stream throughput: each ``streams[name] = (one_pass, note)`` run ``rounds`` times, the streams alternating
    round by round (so they share the machine's noise). Entries as :func:`measure`'s, from the median pass."""
    times: dict[str, list[float]] = {name: [] for name in streams}
    points: dict[str, list] = {}
    for _ in range(rounds):
        for name, (one_pass, _) in streams.items():
            ms, points[name] = one_pass()
            times[name].append(ms)
    return {name: _stream_entry(float(np.median(times[name])), points[name], truth, rounds, note)
            for name, (_, note) in streams.items()}


def _stream_entry(ms: float, points: list, truth: np.ndarray, rounds: int, note: str) -> dict:
    found = [i for i, p in enumerate(points) if p is not None]
    nme = nme_interocular(np.stack([points[i] for i in found]), truth[found], nonfinite="fail")
    return {"ms_per_frame_median": ms, "faces_per_second": 1000.0 / ms, "found_share": len(found) / len(points),
            "nme_interocular": float(nme.mean()), "frames": len(points), "rounds": rounds, "note": note}


def measure(pipelines: dict, frames: list[np.ndarray], truth: np.ndarray, rounds: int = 3) -> dict:
    """Median ms per frame over ``rounds`` passes (pipelines interleaved frame by frame), rate found, NME."""
    times = {name: [] for name in pipelines}
    points = {name: [None] * len(frames) for name in pipelines}
    for frame, _ in zip(frames[:2], range(2)):  # warm-up: worker start, first-call allocations
        for run in pipelines.values():
            run(frame)
    for _ in range(rounds):
        for i, frame in enumerate(frames):
            for name, run in pipelines.items():
                start = time.perf_counter()
                points[name][i] = run(frame)
                times[name].append((time.perf_counter() - start) * 1000)
    out = {}
    for name in pipelines:
        found = [i for i, p in enumerate(points[name]) if p is not None]
        nme = (nme_interocular(np.stack([points[name][i] for i in found]), truth[found], nonfinite="fail")
               if found else np.array([np.nan]))
        median = float(np.median(times[name]))
        out[name] = {"ms_per_frame_median": median, "faces_per_second": 1000.0 / median,
                     "found_share": len(found) / len(frames), "nme_interocular": float(np.mean(nme)),
                     "frames": len(frames), "rounds": rounds}
    return out


def run(study, detector_config, prepared_dir, n_frames: int, rounds: int, seed: int, calibration_path=None,
        methods: Sequence[str] | None = None, stream_rounds: int = 9) -> dict:
    """Every detector of the study followed by each landmarker of ``methods`` (methods of params.yaml; default
    ``video.method``), and MediaPipe Face Mesh, on ``n_frames`` frames (see the module docstring);
    ``calibration_path``: the detectors' box calibrations (default ``models/detector_boxes.json``); ``rounds``
    passes per pipeline frame by frame, ``stream_rounds`` passes per stream pipeline."""
    from flmlib.bench import environment
    from flmlib.face_detectors import build_detector
    from flmlib.landmarkers import build_method

    frames, truth = make_frames(study, prepared_dir, n_frames, seed)
    methods = list(methods or [study.video.method])
    landmarkers = {method: build_method(study.method_spec(method)) for method in methods}
    detectors = {name: build_detector(name, detector_config, calibration_path) for name in detector_config.detectors}
    pipelines = {f"{name} + {method}": DetectorPipeline(det, landmarker)
                 for name, det in detectors.items() for method, landmarker in landmarkers.items()}
    mesh = MeshPipeline()
    pipelines["mediapipe face mesh"] = mesh
    opened: dict = {}  # second detector workers and the two Face Mesh workers, closed at the end
    try:
        results = measure(pipelines, frames, truth, rounds)
        # Detectors in a worker process, pipelined on a stream of frames with one worker and with two, against Face
        # Mesh on two processes.
        streams = {}
        for name, det in detectors.items():
            if not hasattr(det.raw, "submit_raw"):
                continue
            second = opened[name] = build_detector(name, detector_config, calibration_path)
            second.detect(frames[0])  # warm-up: worker start
            for method, landmarker in landmarkers.items():
                streams[f"{name} + {method}, pipelined"] = (
                    partial(pipelined_stream, (det,), landmarker, frames),
                    "stream throughput: detection of the next frame overlaps landmarking of this one")
                streams[f"{name} on 2 workers + {method}, pipelined"] = (
                    partial(pipelined_stream, (det, second), landmarker, frames),
                    "stream throughput: two detector workers, each on every other frame, ahead of the landmarker")
        two_mesh = opened["mediapipe face mesh, 2 processes"] = TwoMeshStream(frames[0])
        streams["mediapipe face mesh, 2 processes"] = (
            partial(two_mesh, frames), "stream throughput: two Face Mesh workers, each on every other frame")
        results.update(measure_streams(streams, truth, stream_rounds))
    finally:
        mesh.close()
        for det in [*detectors.values(), *opened.values()]:
            det.close()
    reference = results["mediapipe face mesh"]["ms_per_frame_median"]
    for entry in results.values():
        entry["speed_vs_mediapipe"] = reference / entry["ms_per_frame_median"]
    return {"frame_size": list(FRAME_SIZE), "face_size_px": FACE_SIZE, "test_set": study.video.test_set,
            "landmarkers": methods, "environment": environment(), "pipelines": results}


def main(argv: list[str] | None = None) -> int:
    from flmlib.config import load_config
    from flmlib.io import write_json
    from flmlib.train import set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--detectors", default="detectors.yaml")
    parser.add_argument("--prepared", default="prepared")
    parser.add_argument("--frames", type=int, default=60, help="frames (each another test face)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the frames")
    parser.add_argument("--stream-rounds", type=int, default=9,
                        help="passes over the frames of each stream pipeline (pipelined, 2 workers, 2 processes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", default=None, help="detector box calibrations (default: the detectors "
                                                            "stage's models/detector_boxes.json)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="landmarkers (methods of params.yaml) after each detector (default: video.method)")
    parser.add_argument("--out", default="reports/bench_pipeline.json")
    args = parser.parse_args(argv)
    set_threads(1)
    from flmlib.detector_config import load_detector_config

    study = load_config(args.params)
    payload = run(study, load_detector_config(args.detectors, study), args.prepared, args.frames, args.rounds,
                  args.seed, args.calibration, args.methods, args.stream_rounds)
    env = payload["environment"]
    print(f"Whole pipeline on {args.frames} 640x480 frames with one face on {cpu_label(env)}, one thread each:")
    for name, e in payload["pipelines"].items():
        print(f"  {name:48s} {e['ms_per_frame_median']:7.2f} ms/frame  {e['faces_per_second']:6.1f} faces/s  "
              f"{e['speed_vs_mediapipe']:5.2f}x MediaPipe  found {e['found_share']:.0%}  NME io {e['nme_interocular']:.4f}")
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
