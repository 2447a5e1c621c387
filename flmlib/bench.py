"""Speed benchmark: O-Net (several inference backends) vs dlib's shape predictor, on the same faces, in one run.

    python -m flmlib.bench [--tiny] [--out reports/bench.json]      (also: make bench)

What it measures, on the 300-W test faces of the ``prepare`` stage (``prepared/test_300w_common.npz`` boxes +
``prepared/faces.csv`` image paths), all on this machine in this process:

* O-Net at batch 1 and batch 256 for each backend — eager PyTorch with contiguous (NCHW) tensors, eager PyTorch
  channels-last (how :class:`flmlib.models.ONet` is built) on all threads and on one thread, ``torch.compile``, and
  ONNX Runtime; eager and compiled PyTorch also with bf16 autocast where the CPU has native bf16 — the network alone (ready ``48 x 48``
  inputs), from the prepared 96 px context crops (resample to the input + network: how the compare stage runs), and
  the whole landmarker with detection excluded (image + box -> 48 px input cut from the image -> network -> image
  pixels);
* dlib's shape predictor per face (image + box -> points; dlib has no batch);
* the HOG detector per image, and both methods end to end with detection included (:class:`flmlib.predictor.Predictor`
  on whole images: detection + landmarks);
* the ratio of O-Net faces/s to dlib faces/s, also with O-Net and dlib in alternating rounds;
* where the landmarker's time goes, and the 96 px context crop against the whole-image pre-shrink it replaced
  (:func:`whole_image_context_crop`), timed in the same run;
* model sizes; the wall time of each DVC stage of the last ``dvc repro``
  (from ``reports/timings/<stage>.json``, where the stages write them).

Times are medians after warm-up calls: per single-face call at batch 1 (O-Net over the first 64 faces, dlib over all)
and per call of 256 faces at batch 256 (the test faces repeated when there are fewer than 256). ``--tiny`` runs a few faces with few repeats in seconds (for the test); its numbers are not results.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from flmlib.detect import detect_faces
from flmlib.io import read_image
from flmlib.landmarkers.cnn import CNNLandmarker as ONetLandmarker
from flmlib.landmarkers.dlib_predictor import DlibShapePredictor, dlib_model_path
from flmlib.landmarkers.runtimes import cpu_flags
from flmlib.models import build_model, load_trained
from flmlib.paths import PROJECT_ROOT, project_path
from flmlib.predictor import Predictor, default_upsample
from flmlib.report import cpu_label

BATCH_SIZES = (1, 256)
TARGET_RATIO = 10.0
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
STAGES_FALLBACK = ("prepare", "train", "compare", "report")


class BenchError(RuntimeError):
    """An input the benchmark needs is missing; the message says which and how to make it."""


# ------------------------------------------------------------------------------------------------------ timing


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def median_per_call(fns: list[Callable[[], object]], repeats: int, warmup: int) -> float:
    """Median wall time of single calls, over every ``fn`` in ``fns`` and ``repeats`` rounds, after ``warmup``
    untimed rounds. Per-call medians shrug off the scheduler spikes of a shared machine better than loop totals."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = []
    for _ in range(repeats):
        for fn in fns:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def rate(seconds_per_face: float) -> dict:
    """``{"ms_per_face", "faces_per_s"}`` from seconds per face."""
    return {"ms_per_face": float(f"{seconds_per_face * 1e3:.4g}"), "faces_per_s": float(f"{1.0 / seconds_per_face:.4g}")}


# -------------------------------------------------------------------------------------------------------- data


def load_faces(prepared: Path, limit: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """The 300-W test faces: per face its image ``(H, W, 3) uint8`` (shared between faces of one image), box
    ``(N, 4)`` and image path.

    Raises:
        BenchError: ``test_300w_common.npz`` or ``faces.csv`` missing, or a face without an image row.
    """
    npz, csv = prepared / "test_300w_common.npz", prepared / "faces.csv"
    for path in (npz, csv):
        if not path.is_file():
            raise BenchError(f"{path} not found: the benchmark runs on the prepared 300-W test faces; run the"
                             " prepare stage first (`dvc repro prepare` or `make repro`)")
    with np.load(npz, allow_pickle=False) as data:
        boxes, face_ids = data["boxes"].astype(np.float32), data["face_id"].astype(str)
    if len(face_ids) == 0:
        raise BenchError(f"{npz} holds no faces")
    table = pd.read_csv(csv, usecols=["face_id", "image_path"]).set_index("face_id")["image_path"]
    missing = [f for f in face_ids if f not in table.index]
    if missing:
        raise BenchError(f"{csv}: no image_path for {len(missing)} test faces, e.g. {missing[0]!r}")
    if limit:
        boxes, face_ids = boxes[:limit], face_ids[:limit]
    paths = [str(project_path(table[f])) for f in face_ids]
    cache: dict[str, np.ndarray] = {}
    for path in paths:
        if path not in cache:
            cache[path] = read_image(path)
    return [cache[p] for p in paths], boxes, paths


def tile(n: int, size: int) -> np.ndarray:
    """Indices ``0..n-1`` repeated (or cut) to length ``size``."""
    return np.resize(np.arange(n), size)


# ------------------------------------------------------------------------------------------------ O-Net variants


def nchw_forward(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The O-Net forward pass on contiguous (NCHW) tensors: the baseline that channels-last is measured against.

    :class:`flmlib.models.ONet` converts its weights and input to channels-last; this copy keeps both contiguous
    and applies the same normalisation and layers, so only the memory layout differs.
    """
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = ((x - model._mean) / model._scale).contiguous()
        return plain.head(plain.fc(plain.features(x)))

    return forward


class Threads:
    """Context manager: run with ``n`` torch intra-op threads and ``n`` OpenCV threads (the crops), then restore."""

    def __init__(self, n: int):
        import cv2

        self.n, self.old, self.old_cv = n, torch.get_num_threads(), cv2.getNumThreads()

    def __enter__(self):
        import cv2

        torch.set_num_threads(self.n)
        cv2.setNumThreads(self.n)

    def __exit__(self, *exc):
        import cv2

        torch.set_num_threads(self.old)
        cv2.setNumThreads(self.old_cv)


def bf16_supported() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX-512 BF16 / AMX); emulated bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def onet_variants(model: torch.nn.Module, config: dict, compile_: bool,
                  all_backends: bool = False) -> list[tuple[str, str, Callable]]:
    """``(name, description, factory)`` per backend; a factory returns ``(landmarker, threads or None)``.

    The first variant, eager channels-last fp32, is the reference the others' points are compared with. By default
    the backends someone might choose (and the 1-thread torch path, which shows that 2 threads are faster);
    ``all_backends`` adds the ones kept only as evidence: NCHW tensors (what channels-last replaced), eager bf16 (slower
    than compiled bf16) and compiled bf16 on one thread.
    """
    from flmlib.export import onnx_bytes, onnx_session

    bf16, variants = bf16_supported(), []

    def add(name: str, description: str, factory: Callable, available: bool = True, evidence: bool = False) -> None:
        if available and (all_backends or not evidence):
            variants.append((name, description, factory))

    add("torch-channels-last", "eager PyTorch fp32, channels-last (as flmlib.models.ONet is built); the reference",
        lambda: (ONetLandmarker(model, config), None))
    add("torch-nchw", "eager PyTorch fp32, contiguous NCHW tensors",
        lambda: (ONetLandmarker(model, config, forward=nchw_forward(model)), None), evidence=True)
    add("torch-channels-last-1thread", "eager PyTorch fp32, channels-last, one thread (torch and OpenCV)",
        lambda: (ONetLandmarker(model, config), 1))
    add("torch-bf16", "eager PyTorch, channels-last, bfloat16 autocast (AVX-512 BF16 / AMX)",
        lambda: (ONetLandmarker(model, config, precision="bf16"), None), available=bf16, evidence=True)
    add("torch-compile", "torch.compile (inductor) of the channels-last model, fp32",
        lambda: (ONetLandmarker(model, config, backend="compile"), None), available=compile_)
    add("torch-compile-bf16", "torch.compile (inductor), bfloat16 autocast",
        lambda: (ONetLandmarker(model, config, backend="compile", precision="bf16"), None),
        available=compile_ and bf16)
    add("torch-compile-bf16-1thread", "torch.compile (inductor), bfloat16 autocast, one thread (torch and OpenCV):"
        " per core, like dlib", lambda: (ONetLandmarker(model, config, backend="compile", precision="bf16"), 1),
        available=compile_ and bf16, evidence=True)
    add("onnxruntime", "ONNX Runtime CPU fp32, exported graph, default threads",
        lambda: (ONetLandmarker(None, config, backend="onnx", session=onnx_session(onnx_bytes(model, config))), None))
    add("onnxruntime-1thread", "ONNX Runtime CPU fp32, one thread (ONNX Runtime, torch and OpenCV)",
        lambda: (ONetLandmarker(None, config, backend="onnx",
                                session=onnx_session(onnx_bytes(model, config), threads=1)), 1))
    return variants


def agreement(points: np.ndarray, reference: np.ndarray) -> dict:
    """Largest and mean point distance in image pixels between two ``(N, 68, 2)`` predictions."""
    distance = np.linalg.norm(points.astype(np.float64) - reference, axis=-1)
    return {"max_px": round(float(distance.max()), 4), "mean_px": round(float(distance.mean()), 5)}


def bench_onet(landmarker: ONetLandmarker, images, boxes, repeats: int, warmup: int, single_faces: int = 64) -> dict:
    """Timings at each batch size in :data:`BATCH_SIZES`: the network alone (48 x 48 inputs ready), from context
    crops (resample to the input + network + image pixels: how the compare stage runs on prepared crops), and the
    whole landmarker from image + box (:meth:`ONetLandmarker.predict_batch`: the input cut from the image, network,
    image pixels), detection excluded.

    Batch 1: median single-face call over the first ``single_faces`` faces. Larger batches: median call over
    ``repeats`` calls of one batch (the faces repeated or cut to the batch size).
    """
    n = len(boxes)
    crops = np.concatenate([landmarker.context_crops(images[i], boxes[i : i + 1]) for i in range(n)])
    out = {}
    for batch in BATCH_SIZES:
        landmarker.batch_size = batch
        if batch == 1:
            inputs = landmarker.network_inputs(crops)
            faces = range(min(n, single_faces))
            network = median_per_call([lambda i=i: landmarker.run_network(inputs[i : i + 1]) for i in faces],
                                      repeats, warmup)
            full = median_per_call([lambda i=i: landmarker.predict(images[i], boxes[i : i + 1]) for i in faces],
                                   repeats, warmup)
            from_crops = median_per_call(
                [lambda i=i: landmarker.predict_context_crops(crops[i : i + 1], boxes[i : i + 1]) for i in faces],
                repeats, warmup)
        else:
            idx = tile(n, batch)
            inputs = landmarker.network_inputs(crops[idx])
            batch_images, batch_boxes = [images[i] for i in idx], [boxes[i : i + 1] for i in idx]
            network = median_seconds(lambda: landmarker.run_network(inputs), repeats, warmup) / batch
            full = median_seconds(lambda: landmarker.predict_batch(batch_images, batch_boxes), repeats, warmup) / batch
            from_crops = median_seconds(lambda: landmarker.predict_context_crops(crops[idx], boxes[idx]),
                                        repeats, warmup) / batch
        out[f"batch_{batch}"] = {"network_only": rate(network), "from_context_crops": rate(from_crops),
                                 "detection_excluded": rate(full)}
    return out


def whole_image_context_crop(image: np.ndarray, box: np.ndarray, size: int, context_factor: float) -> np.ndarray:
    """The baseline context crop: area-shrink the WHOLE image by ``2 * scale`` (a non-integer factor), then warp.

    This was :func:`flmlib.crops.crop_context` before it read only the context region; the benchmark keeps it to
    measure the old and the new crop in the same run. Same geometry, slightly different anti-aliasing filter.
    """
    import cv2

    from flmlib.crops import context_matrix

    matrix = context_matrix(box, size, context_factor)
    scale = min(matrix[0, 0], matrix[1, 1])
    source, to_source = image, np.eye(3)
    if scale < 0.5:
        h, w = image.shape[:2]
        sw, sh = max(1, int(round(w * 2 * scale))), max(1, int(round(h * 2 * scale)))
        source = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        fx, fy = sw / w, sh / h
        to_source = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])
    warp = np.vstack([matrix, [0, 0, 1]]) @ np.linalg.inv(to_source)
    return cv2.warpAffine(source, warp[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def breakdown(landmarker: ONetLandmarker, images, boxes, repeats: int, warmup: int, batch: int = 256) -> dict:
    """Where a batch's time goes, ms per face.

    The landmarker's own steps (cutting the 48 px input from the image, or the context crop and its warp when the
    model's geometry does not allow the direct cut; the network; the conversion to image pixels), plus, for the
    before/after comparison, the 96 px context crop cut by :func:`flmlib.crops.crop_context` and by the baseline
    :func:`whole_image_context_crop`.
    """
    from flmlib.crops import box_units_to_image, crop_context

    idx = tile(len(boxes), batch)
    batch_images, batch_boxes = [images[i] for i in idx], boxes[idx]
    landmarker.batch_size = batch
    size, factor = landmarker.crop_size, landmarker.context_factor
    one_box_each = [b[None] for b in batch_boxes]
    parts: dict[str, Callable] = {}
    if landmarker.cuts_inputs_directly:
        direct = landmarker.input_crops_batch(batch_images, one_box_each)
        inputs = landmarker.input_tensor(direct)
        parts["input_crop_from_image"] = lambda: landmarker.input_crops_batch(batch_images, one_box_each)
        parts["to_tensor"] = lambda: landmarker.input_tensor(direct)
    else:
        crops = landmarker.cut_crops(batch_images, one_box_each, size, factor)
        inputs = landmarker.network_inputs(crops)
        parts["context_crop"] = lambda: landmarker.cut_crops(batch_images, one_box_each, size, factor)
        parts["warp_to_input"] = lambda: landmarker.network_inputs(crops)
    units = landmarker.run_network(inputs)
    parts["network"] = lambda: landmarker.run_network(inputs)
    parts["to_image_pixels"] = lambda: box_units_to_image(units, batch_boxes)
    steps = {name: round(median_seconds(fn, repeats, warmup) / batch * 1e3, 4) for name, fn in parts.items()}
    crop_versions = {
        "whole_image_preshrink_baseline": lambda: [whole_image_context_crop(im, b, size, factor)
                                                   for im, b in zip(batch_images, batch_boxes)],
        "context_region_only": lambda: [crop_context(im, b, size, factor) for im, b in zip(batch_images, batch_boxes)],
    }
    crop_ms = {name: round(median_seconds(fn, repeats, warmup) / batch * 1e3, 4) for name, fn in crop_versions.items()}
    crop_ms["speedup"] = round(crop_ms["whole_image_preshrink_baseline"] / crop_ms["context_region_only"], 2)
    return {"steps": steps, "context_crop": crop_ms}


def profile_network(landmarker: ONetLandmarker, images, boxes, batch: int = 256, rows: int = 12) -> list[dict]:
    """torch profiler over one batch of the whole landmarker: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    idx = tile(len(boxes), batch)
    batch_images, batch_boxes = [images[i] for i in idx], [boxes[i : i + 1] for i in idx]
    landmarker.batch_size = batch
    landmarker.predict_batch(batch_images, batch_boxes)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        landmarker.predict_batch(batch_images, batch_boxes)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [{"op": e.key, "calls": e.count, "self_ms_per_face": round(e.self_cpu_time_total / 1e3 / batch, 4)}
            for e in events]


def bench_dlib(dlib_lm: DlibShapePredictor, images, boxes, repeats: int, warmup: int) -> dict:
    """dlib per face: median single-face call over every face and ``repeats`` rounds."""
    calls = [lambda i=i: dlib_lm.predict(images[i], boxes[i : i + 1]) for i in range(len(boxes))]
    return {"detection_excluded": rate(median_per_call(calls, repeats, max(1, warmup)))}


def interleaved_ratio(landmarker: ONetLandmarker, dlib_lm: DlibShapePredictor, images, boxes, rounds: int,
                      dlib_faces: int = 64, batch: int = 256) -> dict:
    """O-Net (whole landmarker, one batch) and dlib (single faces) timed in alternating rounds, so that both see the
    same background load of a shared machine; medians over rounds of ms per face."""
    idx = tile(len(boxes), batch)
    batch_images, batch_boxes = [images[i] for i in idx], [boxes[i : i + 1] for i in idx]
    landmarker.batch_size = batch
    singles = [lambda i=i: dlib_lm.predict(images[i], boxes[i : i + 1]) for i in range(min(len(boxes), dlib_faces))]
    landmarker.predict_batch(batch_images, batch_boxes)
    onet_times, dlib_times = [], []
    for _ in range(rounds):
        onet_times.append(median_seconds(lambda: landmarker.predict_batch(batch_images, batch_boxes), 1, 0) / batch)
        dlib_times.append(median_per_call(singles, 1, 0))
    onet_s, dlib_s = float(np.median(onet_times)), float(np.median(dlib_times))
    return {"rounds": rounds, "onet": rate(onet_s), "dlib": rate(dlib_s), "ratio": round(dlib_s / onet_s, 2)}


def bench_detection(landmarkers: dict, images: list[np.ndarray], upsample: int, repeats: int, warmup: int) -> dict:
    """HOG time per image, and each landmarker end to end (detect + landmarks on whole images) per face found."""
    faces = [len(detect_faces(im, upsample)) for im in images]
    found = sum(faces)
    hog = median_seconds(lambda: [detect_faces(im, upsample) for im in images], repeats, warmup) / len(images)
    out = {"images": len(images), "faces_found": found, "upsample": upsample,
           "hog_ms_per_image": round(hog * 1e3, 3), "methods": {}}
    for name, landmarker in landmarkers.items():
        predictor = Predictor(landmarker, upsample=upsample)
        seconds = median_seconds(lambda: predictor.predict_many(images), repeats, warmup)
        out["methods"][name] = {**rate(seconds / max(found, 1)), "ms_per_image": round(seconds / len(images) * 1e3, 3)}
    return out


# ------------------------------------------------------------------------------------------------- model sizes


def dlib_model_size(path: Path) -> dict:
    """Parameters of dlib's shape predictor file, by walking dlib's serialisation of it.

    The file holds ``version``, ``initial_shape`` (a float matrix), ``forests`` (cascade levels x trees, each tree
    a list of splits ``(idx1, idx2, thresh)`` and a list of leaf vectors), ``anchor_idx`` and ``deltas`` (a 2-D
    float offset per feature pixel). dlib writes integers as a control byte (low 4 bits: byte count, bit 7: sign)
    and that many little-endian bytes, and a float as two such integers (mantissa, exponent). The walk must end
    exactly at the end of the file, which checks the reading.
    """
    data = path.read_bytes()
    pos = 0

    def integer() -> int:
        nonlocal pos
        control = data[pos]
        size = control & 0x0F
        value = int.from_bytes(data[pos + 1 : pos + 1 + size], "little")
        pos += 1 + size
        return -value if control & 0x80 else value

    def skip_floats(count: int) -> None:
        nonlocal pos
        p = pos
        for _ in range(2 * count):
            p += 1 + (data[p] & 0x0F)
        pos = p

    def matrix() -> int:
        rows, cols = abs(integer()), abs(integer())
        skip_floats(rows * cols)
        return rows * cols

    if integer() != 1:
        raise ValueError(f"{path}: not a version-1 dlib shape predictor")
    floats = matrix()
    levels, trees, splits, leaves = integer(), 0, 0, 0
    for _ in range(levels):
        for _ in range(integer()):
            trees += 1
            n_splits = integer()
            for _ in range(n_splits):
                integer(), integer()
                skip_floats(1)
            splits += n_splits
            n_leaves = integer()
            leaves += n_leaves
            for _ in range(n_leaves):
                floats += matrix()
    anchors = 0
    for _ in range(integer()):
        k = integer()
        anchors += k
        for _ in range(k):
            integer()
    deltas = 0
    for _ in range(integer()):
        k = integer()
        deltas += k
        skip_floats(2 * k)
    if pos != len(data):
        raise ValueError(f"{path}: read {pos} of {len(data)} bytes; not the expected shape predictor layout")
    floats += splits + 2 * deltas  # split thresholds and delta offsets
    return {"file": str(path), "mb_on_disk": round(len(data) / 1e6, 2), "cascade_levels": levels,
            "trees": trees, "splits": splits, "leaves": leaves, "float_parameters": floats,
            "index_parameters": 2 * splits + anchors,
            "parameters": floats + 2 * splits + anchors}


def onet_model_size(model: torch.nn.Module, config: dict, checkpoint: Path | None) -> dict:
    from flmlib.export import onnx_bytes

    n = sum(p.numel() for p in model.parameters())
    out = {"parameters": int(n), "mb_float32": round(n * 4 / 1e6, 3),
           "onnx_mb": round(len(onnx_bytes(model, config)) / 1e6, 3)}
    out["checkpoint"] = str(checkpoint) if checkpoint else None
    out["mb_on_disk"] = round(checkpoint.stat().st_size / 1e6, 3) if checkpoint else None
    return out


# ------------------------------------------------------------------------------------------------ stage timings


def stage_names(timings_dir: Path) -> list[str]:
    """The stages that wrote a timing file (``<timings_dir>/<stage>.json``: prepare, train_<model>, compare,
    report), in pipeline order; the usual ones if none did."""
    order = {name: i for i, name in enumerate(STAGES_FALLBACK)}
    found = [p.stem for p in Path(timings_dir).glob("*.json")]
    return sorted(found, key=lambda s: (order.get(s.split("_")[0], len(order)), s)) or list(STAGES_FALLBACK)


def stage_timings(timings_dir: Path, stages: list[str]) -> dict:
    """Wall time of each stage from ``<timings_dir>/<stage>.json`` (``{"seconds": ...}`` or, for train,
    ``{"session_seconds": ...}``); absent ones are None."""
    out, total, complete = {}, 0.0, True
    for stage in stages:
        path = timings_dir / f"{stage}.json"
        seconds = None
        if path.is_file():
            try:
                record = json.loads(path.read_text())
                # The train stage records its whole notebook session as session_seconds.
                seconds = float(record["seconds"] if "seconds" in record else record["session_seconds"])
            except (ValueError, KeyError, TypeError):
                seconds = None
        out[stage] = seconds
        if seconds is None:
            complete = False
        else:
            total += seconds
    return {"source": str(timings_dir), "stages_seconds": out,
            "study_seconds": round(total, 1) if complete else None,
            "study_seconds_available_stages": round(total, 1),
            "complete": complete,
            "note": "stage wall times as written by each stage's notebook during the last `dvc repro`;"
                    " the study total is their sum (null when a stage has no timing file)"}


# ------------------------------------------------------------------------------------------------- environment


#: CPU flags that decide how fast the networks run: AVX2 / FMA on most x86 CPUs, AVX-512 and its bf16 / VNNI
#: extensions (and AMX) on recent servers.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def vector_isa() -> list[str]:
    """The vector instruction sets of :data:`ISA_FLAGS` this CPU reports (``/proc/cpuinfo``; empty elsewhere)."""
    flags = cpu_flags()
    return [f for f in ISA_FLAGS if f in flags]


#: Environment variables that cap the vector instructions torch (ATen, oneDNN) and OpenCV use: set to time, on a newer
#: CPU, how one with AVX2 only runs (``make bench`` does, for reports/speed_avx2.json).
ISA_LIMIT_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENCV_CPU_DISABLE")


def isa_in_use() -> dict:
    """What torch's own kernels and OpenCV dispatch to in this process (OpenCV marks unused features with ``?``), and
    the ISA-capping variables of :data:`ISA_LIMIT_VARIABLES` that are set."""
    import cv2

    return {"torch": torch.backends.cpu.get_cpu_capability(), "opencv": cv2.getCPUFeaturesLine(),
            "limits": {name: os.environ[name] for name in ISA_LIMIT_VARIABLES if name in os.environ}}


def environment() -> dict:
    import dlib
    import onnxruntime

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"cpu": cpu, "vector_isa": vector_isa(), "isa_in_use": isa_in_use(),
            "cores_available": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "dlib": dlib.__version__, "numpy": np.__version__, "git_commit": commit,
            "load_average_start": [round(v, 2) for v in os.getloadavg()],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# -------------------------------------------------------------------------------------------------------- main


def run(prepared: Path, checkpoint: Path, timings_dir: Path, tiny: bool = False, repeats: int = 5, warmup: int = 2,
        detect_images: int = 40, compile_: bool = True, allow_untrained: bool = False, profile: bool = False,
        methods_to_compare: Sequence[str] = (), reference_method: str = "dlib", all_backends: bool = False,
        log: Callable[[str], None] = print) -> dict:
    """Run every measurement and return the result dict (see the module docstring). ``methods_to_compare``: method
    ids of params.yaml timed side by side (:func:`bench_methods`)."""
    started = time.perf_counter()
    if tiny:
        repeats, warmup, detect_images, compile_ = 1, 0, 2, False
    result: dict = {"mode": "tiny (smoke test; numbers are not results)" if tiny else "full",
                    "environment": environment(), "settings": {"repeats": repeats, "warmup": warmup,
                                                               "batch_sizes": list(BATCH_SIZES)}}
    images, boxes, paths = load_faces(prepared, limit=6 if tiny else 0)
    n_images = len(set(paths))
    result["faces"] = {"set": "300-W test (helen/testset, detected faces of the prepare stage)",
                       "source": str(prepared / "test_300w_common.npz"), "faces": len(boxes), "images": n_images,
                       "batch_256": "the faces repeated to 256" if len(boxes) < 256 else "the first 256 faces"}
    log(f"bench: {len(boxes)} faces from {n_images} images ({result['mode']})")

    weights = "trained"
    if checkpoint.is_file():
        model, config = load_trained(checkpoint)
    elif allow_untrained:
        from types import SimpleNamespace

        from flmlib.train import TrainConfig, model_config

        model = build_model("onet").eval()
        config = model_config(TrainConfig(), SimpleNamespace(crop_size=96, context_factor=2.0), model)
        weights, checkpoint = "untrained (timing only: speed does not depend on the weights)", None
    else:
        raise BenchError(f"{checkpoint} not found: train the model first (`dvc repro train`), or pass"
                         " --allow-untrained to time an untrained O-Net of the same architecture")
    result["onet_weights"] = weights
    result["onet_config"] = {k: config[k] for k in ("input_size", "crop_size", "context_factor")}

    onet: dict = {}
    built: dict[str, tuple[ONetLandmarker, int | None]] = {}
    reference = None
    for name, description, factory in onet_variants(model, config, compile_, all_backends):
        log(f"bench: O-Net {name} ...")
        try:
            start = time.perf_counter()
            landmarker, threads = built[name] = factory()
            with Threads(threads or torch.get_num_threads()):
                timings = bench_onet(landmarker, images, boxes, repeats, warmup)
                landmarker.batch_size = 256
                points = np.concatenate(landmarker.predict_batch(images, [boxes[i : i + 1] for i in range(len(boxes))]))
            reference = points if reference is None else reference
            onet[name] = {"description": description, "threads": threads or torch.get_num_threads(), **timings,
                          "agreement_with_reference": agreement(points, reference),
                          "seconds_including_setup": round(time.perf_counter() - start, 1)}
        except Exception as exc:  # a backend that fails here (e.g. no compiler for torch.compile) is reported
            onet[name] = {"description": description, "error": f"{type(exc).__name__}: {exc}"}
    if "torch-channels-last" in built:
        reference_lm, _ = built["torch-channels-last"]
        log("bench: where the time goes ...")
        result["where_time_goes"] = {
            "backend": "torch-channels-last", "batch": 256, "ms_per_face": breakdown(reference_lm, images, boxes,
                                                                                      repeats, warmup)}
        if profile:
            result["where_time_goes"]["torch_profiler_top_ops"] = profile_network(reference_lm, images, boxes)
    if not compile_:
        onet["torch-compile"] = {"description": "torch.compile (inductor)",
                                 "skipped": "tiny mode" if tiny else "--no-compile"}
    if not bf16_supported():
        onet["torch-compile-bf16"] = {"description": "bfloat16 autocast", "skipped": "no native bf16 on this CPU"}
    result["onet"] = onet

    log("bench: dlib shape predictor ...")
    dlib_lm = DlibShapePredictor()
    result["dlib"] = {"description": "dlib shape_predictor_68_face_landmarks.dat, one face per call, one thread",
                      **bench_dlib(dlib_lm, images, boxes, repeats, warmup)}

    # Ratios use the full landmarker (input crop + network) at batch 256, detection excluded.
    dlib_rate = result["dlib"]["detection_excluded"]["faces_per_s"]
    ok = {k: v for k, v in onet.items() if "batch_256" in v}
    ratios = {k: {f"batch_{b}": round(v[f"batch_{b}"]["detection_excluded"]["faces_per_s"] / dlib_rate, 2)
                  for b in BATCH_SIZES} for k, v in ok.items()}
    best = max(ok, key=lambda k: ok[k]["batch_256"]["detection_excluded"]["faces_per_s"]) if ok else None
    network = {k: round(v["batch_256"]["network_only"]["faces_per_s"] / dlib_rate, 2) for k, v in ok.items()}
    best_network = max(network, key=network.get) if network else None
    result["ratio_onet_to_dlib"] = {
        "definition": "O-Net faces/s (image + box -> points, input crop included) / dlib faces/s (image + box ->"
                      " points, one thread), detection excluded",
        "by_backend": ratios, "best_backend_batch_256": best,
        "best_ratio_batch_256": ratios[best]["batch_256"] if best else None,
        "network_only_batch_256_by_backend": network,
        "best_network_only_backend": best_network,
        "best_network_only_ratio_batch_256": network[best_network] if best_network else None,
        "target": TARGET_RATIO,
        "target_met": bool(best and ratios[best]["batch_256"] >= TARGET_RATIO),
        "interleaved": None,
        "target_met_network_only": bool(best_network and network[best_network] >= TARGET_RATIO),
    }

    if best is not None:
        log(f"bench: O-Net {best} and dlib in alternating rounds ...")
        with Threads(built[best][1] or torch.get_num_threads()):
            result["ratio_onet_to_dlib"]["interleaved"] = interleaved_ratio(built[best][0], dlib_lm, images, boxes,
                                                                            rounds=repeats)

    log("bench: detection included ...")
    upsample = default_upsample()
    unique = list(dict.fromkeys(paths))[:detect_images]
    det_images = [read_image(p) for p in unique]
    methods: dict = {"dlib": dlib_lm}
    threads = None
    if best is not None:
        best_lm, threads = built[best]
        best_lm.batch_size = 256
        methods[f"onet ({best})"] = best_lm
    with Threads(threads or torch.get_num_threads()):
        detection = bench_detection(methods, det_images, upsample, max(1, repeats // 2), min(warmup, 1))
    detection["note"] = ("whole images of the test set: HOG detection + landmarks for every face found; all faces of"
                         " the images go through O-Net in one batch")
    if "dlib" in detection["methods"]:
        dlib_det = detection["methods"]["dlib"]["faces_per_s"]
        detection["ratio_onet_to_dlib"] = {k: round(v["faces_per_s"] / dlib_det, 3)
                                           for k, v in detection["methods"].items() if k != "dlib"}
    result["detection_included"] = detection

    if methods_to_compare:
        result["methods"] = bench_methods(methods_to_compare, images, boxes, max(1, repeats // 2), min(warmup, 1),
                                          reference=reference_method, log=log)
    result["model_size"] = {"onet": onet_model_size(model, config, checkpoint), "dlib": dlib_model_size(dlib_model_path())}
    result["stage_timings"] = stage_timings(timings_dir, stage_names(timings_dir))
    result["environment"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    result["markdown"] = markdown(result)
    return result


def bench_methods(method_ids: Sequence[str], images, boxes, repeats: int, warmup: int, reference: str,
                  params_path: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Every compared method of params.yaml, built by the registry and timed the same way: image + box -> points
    for every face (detection excluded), all faces in one ``predict_batch`` call, median over ``repeats``.

    A method that cannot be built here (a trained model not trained yet, an environment not built) is listed with
    the reason instead of a time. Returns ``{"methods": {id: {...}}, "reference": reference}``; each timed method
    has ``ms_per_face``, ``faces_per_s``, ``ratio_to_reference`` and the threads torch had.
    """
    from flmlib.config import DEFAULT_PARAMS, load_config
    from flmlib.landmarkers import build_method

    study = load_config(params_path or DEFAULT_PARAMS)
    boxes_list = [boxes[i : i + 1] for i in range(len(boxes))]
    out: dict = {}
    for method in method_ids:
        spec = study.method_spec(method)
        log(f"bench: method {method} ({spec.kind}) ...")
        landmarker = None
        try:
            landmarker = build_method(spec)
            seconds = median_seconds(lambda: landmarker.predict_batch(images, boxes_list), repeats, warmup)
        except (OSError, ValueError, RuntimeError) as exc:
            out[method] = {"kind": spec.kind, "skipped": f"{type(exc).__name__}: {exc}"}
            continue
        finally:  # a method with a worker process (MediaPipe) stops it here
            if landmarker is not None and callable(getattr(landmarker, "close", None)):
                landmarker.close()
        out[method] = {"kind": spec.kind, "torch_threads": torch.get_num_threads(), **rate(seconds / len(boxes))}
    ref = out.get(reference, {}).get("faces_per_s")
    for entry in out.values():
        if "faces_per_s" in entry and ref:
            entry["ratio_to_reference"] = round(entry["faces_per_s"] / ref, 2)
    return {"methods": out, "reference": reference,
            "definition": "image + box -> 68 points, every test face in one predict_batch call (methods that work"
                          " one face at a time loop inside), detection excluded; each method with its params.yaml"
                          " options"}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(result: dict) -> str:
    """The README tables: throughput per method/backend/batch, detection included, model sizes, stage times."""
    lines = ["| method | backend | batch | network only, ms/face | from context crops, ms/face |"
             " image + box, ms/face | image + box, faces/s | × dlib | max Δ vs fp32 eager, px |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    dlib = result["dlib"]["detection_excluded"]
    for name, entry in result["onet"].items():
        if "batch_1" not in entry:
            reason = entry.get("error") or entry.get("skipped")
            lines.append(f"| O-Net | {name} | | | | | {reason} | | |")
            continue
        for batch in BATCH_SIZES:
            row = entry[f"batch_{batch}"]
            ratio = result["ratio_onet_to_dlib"]["by_backend"][name][f"batch_{batch}"]
            lines.append(f"| O-Net | {name} | {batch} | {_fmt(row['network_only']['ms_per_face'])} |"
                         f" {_fmt(row['from_context_crops']['ms_per_face'])} |"
                         f" {_fmt(row['detection_excluded']['ms_per_face'])} |"
                         f" {_fmt(row['detection_excluded']['faces_per_s'], 0)} | {ratio:.1f} |"
                         f" {_fmt(entry['agreement_with_reference']['max_px'], 4)} |")
    lines.append(f"| dlib shape predictor | dlib (1 thread) | 1 | — | — | {_fmt(dlib['ms_per_face'])} |"
                 f" {_fmt(dlib['faces_per_s'], 0)} | 1.0 | |")
    inter = result["ratio_onet_to_dlib"].get("interleaved")
    if inter:
        lines += ["", f"Alternating rounds (same background load for both): O-Net"
                  f" {result['ratio_onet_to_dlib']['best_backend_batch_256']} at batch 256"
                  f" {inter['onet']['ms_per_face']:.3f} ms/face, dlib {inter['dlib']['ms_per_face']:.3f} ms/face:"
                  f" {inter['ratio']:.2f}x (median of {inter['rounds']} rounds)."]
    parts = result.get("where_time_goes", {}).get("ms_per_face")
    if parts:
        crop = parts["context_crop"]
        lines += ["", "O-Net landmarker at batch 256 (torch-channels-last), ms per face: "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in parts["steps"].items()) + ".",
                  f"The {result['onet_config']['crop_size']} px context crop (prepare stage): whole-image pre-shrink"
                  f" (baseline) {crop['whole_image_preshrink_baseline']:.3f} ms, context region only"
                  f" {crop['context_region_only']:.3f} ms per face ({crop['speedup']:.1f}x)."]
    det = result["detection_included"]
    lines += ["", f"Detection included (HOG, upsample {det['upsample']}: {_fmt(det['hog_ms_per_image'])} ms per image;"
              f" {det['faces_found']} faces in {det['images']} test images):", "",
              "| method | ms/image | faces/s | × dlib |", "|---|---:|---:|---:|"]
    for name, row in det["methods"].items():
        ratio = 1.0 if name == "dlib" else det.get("ratio_onet_to_dlib", {}).get(name)
        lines.append(f"| {name} | {_fmt(row['ms_per_image'])} | {_fmt(row['faces_per_s'], 1)} | {_fmt(ratio, 2)} |")
    if result.get("methods"):
        block = result["methods"]
        lines += ["", "Every compared method, image + box -> points, detection excluded (all test faces in one call):",
                  "", f"| method | kind | ms/face | faces/s | × {block['reference']} |", "|---|---|---:|---:|---:|"]
        for name, row in block["methods"].items():
            if "skipped" in row:
                lines.append(f"| {name} | {row['kind']} | {row['skipped']} | | |")
            else:
                lines.append(f"| {name} | {row['kind']} | {_fmt(row['ms_per_face'])} | {_fmt(row['faces_per_s'], 0)} |"
                             f" {_fmt(row.get('ratio_to_reference'), 2)} |")
    size = result["model_size"]
    lines += ["", "| model | parameters | MB on disk |", "|---|---:|---:|",
              f"| O-Net | {size['onet']['parameters']:,} | {_fmt(size['onet']['mb_on_disk'])} (.pt),"
              f" {_fmt(size['onet']['onnx_mb'])} (.onnx) |",
              f"| dlib shape predictor | {size['dlib']['parameters']:,} | {_fmt(size['dlib']['mb_on_disk'], 1)} (.dat) |"]
    timing = result["stage_timings"]
    lines += ["", "| DVC stage | wall time, s |", "|---|---:|"]
    lines += [f"| {stage} | {_fmt(seconds, 1)} |" for stage, seconds in timing["stages_seconds"].items()]
    lines.append(f"| these stages together (the predict stages write no timing file) | {_fmt(timing['study_seconds'], 1)} |")
    env = result["environment"]
    lines += ["", f"Machine: {cpu_label(env)},"
              f" {env['cores_available']} cores, git commit {env.get('git_commit')}, torch {env['torch']} with"
              f" {env['torch_threads']} threads; load average {env['load_average_start']} at start,"
              f" {env.get('load_average_end')} at end (a shared machine inflates and scatters the times)."]
    return "\n".join(lines)


def print_table(result: dict) -> None:
    print(result["markdown"])
    verdict = result["ratio_onet_to_dlib"]
    if verdict["best_backend_batch_256"]:
        print(f"\nO-Net ({verdict['best_backend_batch_256']}, batch 256) / dlib, detection excluded:"
              f" {verdict['best_ratio_batch_256']:.1f}x (target {verdict['target']:.0f}x:"
              f" {'met' if verdict['target_met'] else 'missed'}); network alone"
              f" ({verdict['best_network_only_backend']}): {verdict['best_network_only_ratio_batch_256']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flmlib.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few faces, few repeats, no torch.compile: seconds")
    parser.add_argument("--out", default="reports/bench.json", help="JSON output (default: %(default)s); the"
                        " markdown table goes next to it with the suffix .md")
    parser.add_argument("--prepared", default="prepared", help="prepared data folder (default: %(default)s)")
    parser.add_argument("--checkpoint", default="models/onet.pt", help="O-Net model file (default: %(default)s)")
    parser.add_argument("--timings", default="reports/timings", help="stage timing folder (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: %(default)s)")
    parser.add_argument("--detect-images", type=int, default=40,
                        help="test images for the detection-included timing (default: %(default)s)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles for ~1 min)")
    parser.add_argument("--all-backends", action="store_true",
                        help="also time the O-Net backends kept only as evidence (NCHW tensors, eager bf16, compiled"
                             " bf16 on one thread)")
    parser.add_argument("--profile", action="store_true",
                        help="add the torch profiler's top operators of one batch of 256 faces to the JSON")
    parser.add_argument("--methods", nargs="*", default=None, metavar="ID",
                        help="method ids of params.yaml to time side by side (default: every compared method)")
    parser.add_argument("--readme", default=None, metavar="PATH",
                        help="also write the tables between the <!-- bench:start --> and <!-- bench:end --> lines of"
                             " this file (the README's speed section)")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="time an untrained O-Net when the model file is missing (speed does not depend on weights)")
    args = parser.parse_args(argv)
    from flmlib.config import load_config

    study = load_config()
    methods = study.method_ids if args.methods is None else args.methods
    unknown = sorted(set(methods) - set(study.method_ids))
    if unknown:
        parser.error(f"--methods {unknown}: not methods of params.yaml {study.method_ids}")
    try:
        result = run(project_path(args.prepared), project_path(args.checkpoint), project_path(args.timings),
                     tiny=args.tiny, repeats=args.repeats, warmup=args.warmup, detect_images=args.detect_images,
                     compile_=not args.no_compile, allow_untrained=args.allow_untrained, profile=args.profile,
                     methods_to_compare=methods, reference_method=study.reference, all_backends=args.all_backends,
                     log=lambda m: print(m, file=sys.stderr))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    out = project_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    out.with_suffix(".md").write_text(result["markdown"] + "\n")
    if args.readme:
        from flmlib.report import update_readme

        update_readme(project_path(args.readme), result["markdown"], start=BENCH_START, end=BENCH_END)
    print_table(result)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
