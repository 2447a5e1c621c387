"""int8 landmarkers: ONNX Runtime static quantization of a trained model, and what it costs in accuracy and gains
in speed against the float model, measured in one run.

:func:`quantize_model` exports a model file (``models/<id>.pt``) to ONNX (:mod:`flmlib.export`) and quantizes it
statically (QDQ format, int8 weights per output channel on 7 bits unless ``--full-range``, uint8 activations: see
:func:`quantize_model` for why) with activation ranges calibrated on
the network inputs of ``calibration_faces`` random *training* faces (the plain face box of each, as at inference);
no test face is used for calibration.

``python -m flmlib.quantize --model models/onet.pt`` then, on every test set of params.yaml (the prepared crops
and boxes the comparison uses):

* accuracy: AUC@0.08 of RMSE / sqrt(w·h) of the box for float and int8, the paired difference (int8 minus float)
  with its person-level bootstrap 95% CI, and the largest point difference between the two in image pixels;
* speed: ms per face of the network alone (ONNX Runtime, the same inputs), float and int8 at batch 256 and 1, on 1
  and 2 threads, in alternating rounds (medians), with the CPU model and its vector instructions.

* the whole landmarkers, image + box -> points: the float model, its int8 model (a ``cnn`` method whose checkpoint is
  the ``.onnx`` file) and the study's reference method (dlib), timed in one run by :mod:`flmlib.speed`, when
  ``--model`` is a model of params.yaml.

It writes ``reports/quantize.json`` and prints a table. The pipeline's leaderboard has no int8 method yet.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flmlib.export import INPUT_NAME, onnx_bytes, onnx_session
from flmlib.report import cpu_label

#: Largest point difference (box units) a test of the quantized model accepts against float: 0.02 box units is
#: about one pixel of a 48-pixel face box.
TOLERANCE_BOX_UNITS = 0.02


def network_inputs(split: dict, input_size: int, rows: np.ndarray | None = None) -> np.ndarray:
    """``(N, 3, s, s) float32`` 0..255: the plain face box of each context crop of a prepared split, as the network
    sees it at inference (:func:`flmlib.augment.central_box`)."""
    import torch

    from flmlib.augment import central_box

    crops = split["crops"] if rows is None else split["crops"][rows]
    tensor = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
    return central_box(tensor, input_size, float(split["context_factor"])).numpy()


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over a stack of network inputs, a batch at a time."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_model(model_path: str | Path, calibration: np.ndarray, out_path: str | Path,
                   full_range: bool = False) -> tuple[Path, bytes]:
    """Write the int8 ONNX model of ``model_path`` to ``out_path``; returns it and the float ONNX bytes.

    ``calibration``: ``(N, 3, s, s)`` float32 network inputs (training faces) for the activation ranges.
    ``full_range``: weights on the full int8 range instead of 7 bits. On an x86 CPU without VNNI (AVX2, AVX-512
    without VNNI) ONNX Runtime multiplies uint8 activations by int8 weights with an instruction whose 16-bit pair
    sums saturate (255 · 127 · 2 > 32767), so a full-range model gives wrong points there (O-Net: up to 0.32 box
    units off on an AVX2 CPU, against 0.04 with 7-bit weights). 7 bits (ONNX Runtime's ``reduce_range``) cannot
    saturate, so the default file runs correctly on any CPU; ``full_range`` is for CPUs with VNNI only.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from flmlib.models import load_trained

    model, config = load_trained(model_path)
    float_bytes = onnx_bytes(model, config)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.onnx"
        float_path.write_bytes(float_bytes)
        quantize_static(str(float_path), str(out_path), _Calibration(calibration.astype(np.float32)),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, reduce_range=not full_range)
    return out_path, float_bytes


def run_session(session, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """``(N, 2 P)`` outputs of an ONNX Runtime session over ``images`` in batches."""
    return np.concatenate([session.run(None, {INPUT_NAME: images[i : i + batch]})[0]
                           for i in range(0, len(images), batch)])


def _median_ms_per_face(session, images: np.ndarray, batch: int, repeats: int) -> list[float]:
    times = []
    chunk = images[:batch]
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {INPUT_NAME: chunk})
        times.append((time.perf_counter() - start) * 1000 / len(chunk))
    return times


def speed(float_bytes: bytes, int8_path: Path, images: np.ndarray, rounds: int = 7, repeats: int = 20) -> dict:
    """ms per face of the network alone, float and int8, batch 256 and 1, 1 and 2 threads: medians over
    ``rounds`` alternating rounds of ``repeats`` calls each (after one untimed call per session)."""
    out = {}
    for threads in (1, 2):
        sessions = {"float": onnx_session(float_bytes, threads), "int8": onnx_session(int8_path, threads)}
        for batch in (256, 1):
            samples = {name: [] for name in sessions}
            for name, session in sessions.items():
                _median_ms_per_face(session, images, batch, 1)
            for _ in range(rounds):
                for name, session in sessions.items():  # alternating: a slow spell of the machine hits both
                    samples[name] += _median_ms_per_face(session, images, batch, repeats)
            for name, values in samples.items():
                out.setdefault(f"threads_{threads}", {}).setdefault(f"batch_{batch}", {})[name] = \
                    round(float(np.median(values)), 4)
            row = out[f"threads_{threads}"][f"batch_{batch}"]
            row["int8_speedup"] = round(row["float"] / row["int8"], 2)
    return out


def accuracy(float_bytes: bytes, int8_path: Path, study, prepared_dir: Path, input_size: int) -> dict:
    """Per test set: AUC@0.08 (rmse_box) of float and int8, the paired difference with its CI, and the largest
    point difference in image pixels."""
    from flmlib.crops import box_units_to_image
    from flmlib.metrics import THRESHOLDS, auc, paired_bootstrap_auc_diff, rmse_box
    from flmlib.prepare import load_split

    sessions = {"float": onnx_session(float_bytes), "int8": onnx_session(int8_path)}
    out = {}
    for test_set in study.test_sets:
        split = load_split(prepared_dir / f"{test_set}.npz")
        images = network_inputs(split, input_size)
        points = {name: box_units_to_image(run_session(s, images).reshape(len(images), -1, 2), split["boxes"])
                  for name, s in sessions.items()}
        errors = {name: rmse_box(p, split["landmarks_image"], split["boxes"], nonfinite="fail")
                  for name, p in points.items()}
        diff, (lo, hi) = paired_bootstrap_auc_diff(errors["int8"], errors["float"], THRESHOLDS[0],
                                                   study.compare.n_resamples, study.compare.seed,
                                                   groups=split["person"])
        out[test_set] = {"faces": int(len(images)),
                         "auc_float": auc(errors["float"], THRESHOLDS[0]), "auc_int8": auc(errors["int8"], THRESHOLDS[0]),
                         "auc_int8_minus_float": diff, "ci95": [lo, hi],
                         "max_point_difference_px": float(np.abs(points["int8"] - points["float"]).max())}
    return out


def landmarker_speed(params_path: str | Path, model_id: str, int8_path: Path, prepared: Path, rounds: int = 5) -> dict:
    """The whole landmarkers (image + box -> 68 points) of ``model_id``, of its int8 model and of the study's
    reference method (dlib), timed in one run by :func:`flmlib.speed.run` (alternating rounds, batched and single).

    The int8 model runs as a ``cnn`` method whose checkpoint is the ``.onnx`` file (ONNX Runtime), added under the id
    ``<model_id>_int8`` to a temporary copy of the params file.
    """
    import yaml

    from flmlib import speed

    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    int8_id = f"{model_id}_int8"
    raw["methods"][int8_id] = {"kind": "cnn", "trained_on": f"as {model_id} (int8 weights and activations)",
                               "options": {"checkpoint": str(Path(int8_path).resolve())}}
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        return speed.run([raw["reference"], model_id, int8_id], prepared, params, rounds=rounds)


def markdown(result: dict) -> str:
    rows = ["| test set | AUC@0.08 float | int8 | int8 − float [95% CI] | largest point difference (px) |",
            "|---|---|---|---|---|"]
    for test_set, r in result["accuracy"].items():
        rows.append(f"| {test_set} | {r['auc_float']:.4f} | {r['auc_int8']:.4f} | {r['auc_int8_minus_float']:+.4f} "
                    f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {r['max_point_difference_px']:.2f} |")
    rows += ["", "| threads | batch | float ms/face | int8 ms/face | int8 speed-up |", "|---|---|---|---|---|"]
    for threads, batches in result["speed"].items():
        for batch, r in batches.items():
            rows.append(f"| {threads.split('_')[1]} | {batch.split('_')[1]} | {r['float']:.3f} | {r['int8']:.3f} | "
                        f"{r['int8_speedup']:.2f}x |")
    landmarkers = result.get("landmarker_speed")
    if landmarkers:
        rows += ["", "| landmarker (image + box -> points) | ms/face batched | ms/face single | x reference (batched / "
                     "single) |", "|---|---|---|---|"]
        for method, r in landmarkers["methods"].items():
            ratio = r.get("ratio_to_reference", {})
            rows.append(f"| {method} | {r['batched']['ms_per_face']:.3f} | {r['single']['ms_per_face']:.3f} | "
                        f"{ratio.get('batched', float('nan')):.1f} / {ratio.get('single', float('nan')):.1f} |")
    env = result["environment"]
    rows += ["", f"{result['model']}, int8 weights on {result.get('weight_bits', 8)} bits, ONNX Runtime "
             f"{env['onnxruntime']}, network alone (no crop cutting), medians of alternating rounds; CPU "
             f"{cpu_label(env)}. AUC of RMSE / sqrt(w·h) of the box; the CI resamples persons."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from flmlib.bench import environment
    from flmlib.config import load_config
    from flmlib.models import load_trained
    from flmlib.prepare import load_split

    parser = argparse.ArgumentParser(description="int8 (ONNX Runtime static quantization) against float: accuracy "
                                                 "on every test set and speed, in one run.")
    parser.add_argument("--model", default="models/onet.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", default="prepared")
    parser.add_argument("--calibration-faces", type=int, default=512)
    parser.add_argument("--out", default="reports/quantize.json")
    parser.add_argument("--int8-out", default=None, help="int8 ONNX file (default: next to --out)")
    parser.add_argument("--full-range", action="store_true",
                        help="8-bit weights instead of 7: for CPUs with VNNI only (on others ONNX Runtime's int8 "
                             "products saturate and the points go wrong)")
    args = parser.parse_args(argv)
    study, prepared = load_config(args.params), Path(args.prepared)
    try:
        model, _ = load_trained(args.model)
        train = load_split(prepared / "train.npz")
    except (FileNotFoundError, ValueError) as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        sys.exit(2)
    rows = np.random.default_rng(0).choice(len(train["face_id"]), min(args.calibration_faces, len(train["face_id"])),
                                           replace=False)
    calibration = network_inputs(train, model.input_size, np.sort(rows))
    int8_path = Path(args.int8_out or Path(args.out).with_name(Path(args.model).stem + ".int8.onnx"))
    int8_path, float_bytes = quantize_model(args.model, calibration, int8_path, full_range=args.full_range)
    test_images = network_inputs(load_split(prepared / f"{next(iter(study.test_sets))}.npz"), model.input_size)
    result = {"model": args.model, "int8_file": str(int8_path), "calibration_faces": int(len(calibration)),
              "weight_bits": 8 if args.full_range else 7,
              "environment": environment(),
              "accuracy": accuracy(float_bytes, int8_path, study, prepared, model.input_size),
              "speed": speed(float_bytes, int8_path, test_images)}
    model_id = Path(args.model).stem
    if model_id in study.models and Path(args.model).resolve() == Path(study.model_path(model_id)).resolve():
        result["landmarker_speed"] = landmarker_speed(args.params, model_id, int8_path, prepared)
    else:
        print(f"quantize: {args.model} is not a model of {args.params}: the landmarkers are not timed")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
