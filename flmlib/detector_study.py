"""The detector table: every registered face detector on every annotated test face, one landmarker behind them all.

For each ``detectors:`` entry of ``detectors.yaml`` and each test set of its ``detector_study.test_sets``:

* **detection rate**: share of the test set's annotated faces (all of them, not only those HOG found) that a box of the
  detector matches (IoU with the landmark box >= ``prepare.iou_threshold``, as in prepare), overall and per
  breakdown group (yaw bins on AFLW2000-3D, subsets on 300-W);
* **ms per image**: median wall time of one ``detect`` call on the test images (one thread; BlazeFace's time includes
  passing the image to its worker process);
* **landmark error**: inter-ocular NME of ``detector_study.landmarker`` placed in each detector's boxes, on the faces
  that detector found and on the faces every detector found (the paired, fair comparison).

Before that the stage fits each calibrated detector's :class:`~flmlib.face_detectors.BoxCalibration` on training faces
that both it and HOG (prepare's boxes) found, and writes them to ``models/detector_boxes.json`` for ``flm predict
--detector``. Run as ``python -m flmlib.detector_study --params params.yaml --prepared prepared --out
reports/detectors.json`` (the ``detectors`` stage).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flmlib.dataset import build_index, group_order, in_test_set, yaw_bins
from flmlib.detect import match_detection
from flmlib.face_detectors import CALIBRATION_PATH, BoxCalibration, FaceDetector, build_raw, write_calibrations
from flmlib.io import read_image, write_json
from flmlib.metrics import nme_interocular
from flmlib.paths import portable_path, project_path
from flmlib.report import cpu_label


#: Inter-ocular NME above which a found face counts as a landmarking failure (300-W's customary 0.10).
FAILURE_NME = 0.10


def study_index(study, prepared_dir: str | Path) -> pd.DataFrame:
    """Every annotated face (:func:`flmlib.dataset.build_index`, split as prepare split it) with prepare's HOG box
    (``x0 .. y1``, NaN where HOG missed) and ``detected``."""
    data = study.data
    subsets = tuple(sorted({s for ts in study.test_sets.values() if ts.source == "300w" for s in ts.subsets}))
    index, _ = build_index(project_path(data.root), youtube_test_share=data.youtube_test_share,
                           val_share=data.val_share, seed=data.seed, skip_bad_files=data.skip_bad_files,
                           test_subsets_300w=subsets)
    faces = pd.read_csv(project_path(prepared_dir) / "faces.csv", usecols=["face_id", "detected", "x0", "y0", "x1",
                                                                          "y1"])
    return index.merge(faces, on="face_id", how="left")


def calibrate(raw_detectors: dict, index: pd.DataFrame, n_faces: int, iou_threshold: float, seed: int,
              progress: bool = True) -> dict[str, BoxCalibration]:
    """Fit each detector that needs it on ``n_faces`` training faces HOG found (seeded draw)."""
    needing = {k: d for k, d in raw_detectors.items() if d.needs_calibration}
    if not needing:
        return {}
    pool = index[(index["split"] == "train") & (index["detected"] == True)]  # noqa: E712 (NaN-safe)
    pool = pool.sample(n=min(n_faces, len(pool)), random_state=seed)
    pairs: dict[str, tuple[list, list]] = {k: ([], []) for k in needing}
    for _, face in tqdm(pool.iterrows(), total=len(pool), desc="calibrate", unit="face", disable=not progress):
        image = read_image(face["image_path"])
        target = np.array([face["x0"], face["y0"], face["x1"], face["y1"]], np.float32)
        for name, det in needing.items():
            match = match_detection(det.detect_raw(image), face["landmarks"], iou_threshold)
            if match.box is not None:
                pairs[name][0].append(match.box)
                pairs[name][1].append(target)
    out = {}
    for name, (raw, target) in pairs.items():
        if len(raw) < 5:
            raise ValueError(f"detector {name!r} found only {len(raw)} of {len(pool)} calibration faces")
        out[name] = BoxCalibration.fit(np.stack(raw), np.stack(target))
    return out


def detect_test_faces(detectors: dict[str, FaceDetector], faces: pd.DataFrame, iou_threshold: float,
                      progress: bool = True, desc: str = "detect") -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Run every detector on every image of ``faces`` -> per (face, detector) rows ``found``, box; ms per image."""
    rows, times = [], {name: [] for name in detectors}
    for path, group in tqdm(faces.groupby("image_path", sort=False), desc=desc, unit="image", disable=not progress):
        image = read_image(path)
        for name, det in detectors.items():
            start = time.perf_counter()
            boxes = det.detect(image)
            times[name].append((time.perf_counter() - start) * 1000)
            for _, face in group.iterrows():
                match = match_detection(boxes, face["landmarks"], iou_threshold)
                rows.append({"face_id": face["face_id"], "detector": name, "found": match.box is not None,
                             "box": match.box, "iou": match.iou})
    return pd.DataFrame(rows), times


def landmark_errors(landmarker, faces: pd.DataFrame, found: pd.DataFrame) -> pd.Series:
    """Inter-ocular NME of the landmarker in each found face's box: Series indexed like ``found`` (NaN if missed)."""
    by_id = faces.set_index("face_id")
    errors = pd.Series(np.nan, index=found.index)
    hits = found[found["found"]]
    for path, group in hits.groupby(hits["face_id"].map(by_id["image_path"]), sort=False):
        image = read_image(path)
        pred = landmarker.predict(image, np.stack(group["box"].to_list()))
        gt = np.stack([by_id.at[f, "landmarks"] for f in group["face_id"]])
        errors[group.index] = nme_interocular(pred, gt, nonfinite="fail")
    return errors


def summarise(faces: pd.DataFrame, found: pd.DataFrame, times: dict, groups: pd.Series | None) -> dict:
    """Per detector: rate (overall, per group), ms per image, NME on own finds and on the faces all found."""
    common = found.groupby("face_id")["found"].all()
    common_ids = set(common.index[common])
    out = {}
    for name, rows in found.groupby("detector", sort=False):
        rows = rows.set_index("face_id")
        entry = {"faces": int(len(rows)), "found": int(rows["found"].sum()),
                 "detection_rate": float(rows["found"].mean()),
                 "ms_per_image_median": float(np.median(times[name])),
                 "ms_per_image_p90": float(np.percentile(times[name], 90)),
                 "images": len(times[name]),
                 "nme_interocular_found": float(rows.loc[rows["found"], "nme"].mean()),
                 "failure_rate_found": float((rows.loc[rows["found"], "nme"] > FAILURE_NME).mean()),
                 "nme_interocular_common": float(rows.loc[rows.index.isin(common_ids), "nme"].mean()),
                 "common_faces": len(common_ids)}
        if groups is not None:
            labels = groups.reindex(rows.index)
            entry["detection_rate_by_group"] = {
                g: float(rows.loc[labels == g, "found"].mean()) for g in sorted(set(labels), key=group_order)}
            entry["faces_by_group"] = {g: int((labels == g).sum()) for g in sorted(set(labels), key=group_order)}
        out[name] = entry
    return out


def run(study, detector_config, prepared_dir: str | Path, out_path: str | Path,
        calibration_path: str | Path = CALIBRATION_PATH, faces_csv: str | Path | None = None,
        progress: bool = True) -> dict:
    """The detector table (module docstring) for ``study`` (params.yaml) and ``detector_config`` (detectors.yaml);
    writes ``out_path``, the calibrations and, with ``faces_csv``, one row per face and detector."""
    from flmlib.bench import environment
    from flmlib.landmarkers import build_method

    settings = detector_config.detector_study
    index = study_index(study, prepared_dir)
    raw = {name: build_raw(entry.kind, entry.options) for name, entry in detector_config.detectors.items()}
    try:
        calibrations = calibrate(raw, index, settings.calibration_faces, study.prepare.iou_threshold, settings.seed,
                                 progress)
        write_calibrations(calibration_path, calibrations,
                           f"fitted by the detectors stage on {settings.calibration_faces} training faces HOG found: "
                           "the raw box's centre shift (dx, dy, in raw box sides) and side scales to a HOG box")
        detectors = {name: FaceDetector(name, det, calibrations.get(name)) for name, det in raw.items()}
        landmarker = build_method(study.method_spec(settings.landmarker))
        results, per_face = {}, []
        for test_set_id in settings.test_sets:
            ts = study.test_set(test_set_id)
            faces = index[in_test_set(index, ts.source, tuple(ts.subsets))]
            if settings.limit:
                faces = faces.head(settings.limit)
            found, times = detect_test_faces(detectors, faces, study.prepare.iou_threshold, progress, test_set_id)
            found["nme"] = landmark_errors(landmarker, faces, found)
            groups = None
            if ts.breakdown == "yaw":
                groups = pd.Series(yaw_bins(faces["yaw"].to_numpy(), tuple(ts.yaw_bins)), index=faces["face_id"])
            elif ts.breakdown == "subset":
                groups = pd.Series(faces["subset"].to_numpy(), index=faces["face_id"])
            results[test_set_id] = summarise(faces, found, times, groups)
            per_face.append(found.drop(columns="box").assign(test_set=test_set_id))
    finally:
        for det in raw.values():
            det.close()
    payload = {"landmarker": settings.landmarker, "default_detector": settings.default,
               "iou_threshold": study.prepare.iou_threshold, "calibrations": {k: asdict(v) for k, v in calibrations.items()},
               "environment": environment(), "test_sets": results}
    write_json(out_path, payload)
    if faces_csv is not None:
        pd.concat(per_face, ignore_index=True).to_csv(project_path(faces_csv), index=False)
    return payload


def detector_markdown(payload: dict) -> str:
    """The report's and README's detector table: one row per detector and test set."""
    env = payload.get("environment", {})
    lines = [f"Every annotated face of each test set (not only those HOG found); a face counts as found when a box "
             f"of the detector overlaps its landmark box with IoU >= {payload['iou_threshold']:g}. Landmark error: "
             f"`{payload['landmarker']}` placed in each detector's boxes, mean inter-ocular NME over the faces that "
             "detector found, and over the faces every detector found (the fair comparison). ms per image: median of "
             f"one detect call, one thread, on {cpu_label(env)}. `{payload['default_detector']}` made the study's "
             "detector boxes.", ""]
    for test_set, per in payload["test_sets"].items():
        groups = next(iter(per.values())).get("faces_by_group", {})
        head = ["detector", "found", "rate"] + [f"rate {g} ({n})" for g, n in groups.items()]
        head += ["ms / image", "NME io (found)", f"failures > {FAILURE_NME:g} (found)",
                 f"NME io (all found, n={next(iter(per.values()))['common_faces']})"]
        lines += [f"**{test_set}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, e in per.items():
            row = [f"`{name}`", f"{e['found']} / {e['faces']}", f"{e['detection_rate']:.1%}"]
            row += [f"{r:.1%}" for r in e.get("detection_rate_by_group", {}).values()]
            row += [f"{e['ms_per_image_median']:.1f}", f"{e['nme_interocular_found']:.4f}",
                    f"{e['failure_rate_found']:.1%}", f"{e['nme_interocular_common']:.4f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    cal = payload.get("calibrations", {})
    if cal:
        lines.append("Box calibrations (raw box -> HOG-like box, fitted on training faces both found): " + "; ".join(
            f"`{k}` centre shift ({v['dx']:+.3f}, {v['dy']:+.3f}) sides, scale {v['scale_w']:.3f} x {v['scale_h']:.3f} "
            f"({v['faces']} faces)" for k, v in cal.items()) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from flmlib.config import load_config
    from flmlib.train import set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--detectors", default="detectors.yaml")
    parser.add_argument("--prepared", default="prepared")
    parser.add_argument("--out", default="reports/detectors.json")
    parser.add_argument("--faces-csv", default="reports/detectors_faces.csv")
    parser.add_argument("--calibration", default=CALIBRATION_PATH)
    args = parser.parse_args(argv)
    from flmlib.detector_config import load_detector_config

    set_threads(1)
    study = load_config(args.params)
    payload = run(study, load_detector_config(args.detectors, study), args.prepared, args.out, args.calibration,
                  args.faces_csv)
    for test_set, per in payload["test_sets"].items():
        print(f"{test_set}:")
        for name, e in per.items():
            print(f"  {name:15s} found {e['found']:4d}/{e['faces']:4d} ({e['detection_rate']:.1%})  "
                  f"{e['ms_per_image_median']:7.1f} ms/image  NME io {e['nme_interocular_found']:.4f} (found; "
                  f"{e['failure_rate_found']:.1%} > {FAILURE_NME:g}), "
                  f"{e['nme_interocular_common']:.4f} (the {e['common_faces']} faces all found)")
    print(f"wrote {portable_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
