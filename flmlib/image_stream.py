"""Read and detect many images in worker processes, in input order, while the caller landmarks and writes.

On a folder of photos almost all the time goes to decoding and to the HOG detector (about 100 ms per 640x480 image
at upsample 1, against about 1 ms per face for a small CNN), and both run on one core per call. :func:`detected_images`
spreads them over ``workers`` processes and hands the results back in input order through a bounded window, so
the main process can batch the landmarker over many faces and write outputs while the workers go on.

``workers=0`` does everything in the calling process (the same results, one core). A detector that cannot be sent
to another process (a lambda, a bound method of an object that does not pickle) is run in the calling process too.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from flmlib.io import DataError, read_image


@dataclass
class DetectedImage:
    """One input: ``image`` ``(H, W, 3) uint8`` RGB and ``boxes`` ``(K, 4) float32`` edges, or ``error`` (why the
    file could not be read; image and boxes are then None)."""

    path: Path
    image: np.ndarray | None
    boxes: np.ndarray | None
    error: str | None = None


def default_workers() -> int:
    """Processes for reading and detecting: every core this process may use."""
    return len(os.sched_getaffinity(0))


def _read_and_detect(path: Path, detector: Callable, upsample: int) -> DetectedImage:
    try:
        image = read_image(path)
    except DataError as exc:
        return DetectedImage(path, None, None, str(exc))
    try:
        boxes = np.asarray(detector(image, upsample), np.float32).reshape(-1, 4)
    except (RuntimeError, ValueError) as exc:  # the detector failed on this image: name it, go on with the others
        return DetectedImage(path, None, None, f"{path}: face detection failed ({type(exc).__name__}: {exc})")
    return DetectedImage(path, image, boxes)


def _init_worker() -> None:
    # One thread per worker process: the processes already use every core.
    import cv2

    cv2.setNumThreads(1)


def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - any failure means "run it here"
        return False


def detected_images(paths: Sequence[Path], detector: Callable[[np.ndarray, int], np.ndarray], upsample: int,
                    workers: int | None = None, window: int = 16) -> Iterator[DetectedImage]:
    """Yield a :class:`DetectedImage` per path, in the order of ``paths``.

    Args:
        detector: ``(image, upsample) -> (K, 4)`` boxes (e.g. :func:`flmlib.detect.detect_faces`).
        workers: worker processes (``None``: every core; 0: none, all in this process).
        window: images in flight per worker (bounds the memory held by finished, not yet consumed images).
    """
    workers = default_workers() if workers is None else int(workers)
    paths = [Path(p) for p in paths]
    if workers <= 0 or len(paths) < 2 or not _picklable(detector):
        for path in paths:
            yield _read_and_detect(path, detector, upsample)
        return
    context = mp.get_context("forkserver" if os.name == "posix" else "spawn")
    with context.Pool(min(workers, len(paths)), initializer=_init_worker) as pool:
        pending = []
        for path in paths:
            pending.append(pool.apply_async(_read_and_detect, (path, detector, upsample)))
            if len(pending) >= window * workers:
                yield pending.pop(0).get()
        for result in pending:
            yield result.get()
