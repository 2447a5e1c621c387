"""The video stage: how steady and how fast ``flm video``'s landmarks are, measured on clips with known truth.

A still test face (``video.test_set`` of params.yaml) is moved, scaled and rotated by known smooth amounts into a
``width x height`` clip with camera-like pixel noise (:func:`flmlib.video.synthetic_clip`), so the true points of
every frame are known. The study's video path (:func:`flmlib.video.track_landmarks`: HOG detection at
``prepare.upsample``, the tracker, ``video.method``, the One-Euro filter with ``video``'s parameters) runs on each clip,
and :func:`flmlib.video.stability` scores the raw and the smoothed points:

* jitter: RMS of the second frame difference of the error (the frame-to-frame shake), pixels and inter-ocular units;
* error: mean point-to-point distance to the truth;
* lag: the delay that best aligns the points' motion with the truth's; the smoothing's added lag is smoothed minus
  raw, checked against ``video.max_lag_frames``.

Throughput is frames per second over all clips, with detection (detector + landmarker + filter per frame) and
without it (landmarker + filter only, i.e. the cost per frame when the box is tracked instead of detected).

The face fills :data:`FACE_SHARE` of the clip's height (sqrt(w·h) of its landmark box), as a face at arm's length
from a webcam does. ``python -m flmlib.video_stage`` writes ``reports/video.json``; ``--bench`` measures the same on
fewer frames for ``make bench``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: sqrt(w h) of the face's landmark box as a share of the clip height.
FACE_SHARE = 0.35
#: Numbers averaged over the clips, for the raw and the smoothed series.
SERIES_KEYS = ("jitter_px", "jitter_iod", "error_px", "error_iod", "lag_frames", "lag_ms")


def pick_faces(split: dict, image_paths: dict[str, str], n: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """``n`` seeded test faces: ``(face_id, image path, (68, 2) image-pixel landmarks)``."""
    if len(split["face_id"]) == 0:
        raise ValueError("the test set has no face to make clips from")
    rows = np.random.default_rng(seed).permutation(len(split["face_id"]))[:n]
    return [(str(split["face_id"][r]), image_paths[str(split["face_id"][r])], split["landmarks_image"][r]) for r in rows]


def measure(study, prepared_dir: str | Path, frames: int | None = None, clips: int | None = None,
            progress: bool = True) -> dict:
    """Stability and throughput of ``study.video.method`` on synthetic clips (see the module docstring).

    ``frames`` / ``clips`` override ``video.frames`` / ``video.clips`` (smoke runs and ``make bench``).
    """
    import pandas as pd
    from tqdm import tqdm

    from flmlib.io import read_image
    from flmlib.landmarkers import build_method
    from flmlib.paths import project_path
    from flmlib.prepare import load_split
    from flmlib.video import stability, synthetic_clip, track_landmarks

    setting = study.video
    prepared_dir = Path(prepared_dir)
    n_frames, n_clips = int(frames or setting.frames), int(clips or setting.clips)
    split = load_split(prepared_dir / f"{setting.test_set}.npz")
    faces = pd.read_csv(prepared_dir / "faces.csv", usecols=["face_id", "image_path"])
    image_paths = dict(zip(faces["face_id"], faces["image_path"]))
    landmarker = build_method(study.method_spec(setting.method))
    per_clip, detect_s, landmark_s, total_frames = [], 0.0, 0.0, 0
    for k, (face_id, image_path, points) in enumerate(tqdm(pick_faces(split, image_paths, n_clips, seed=0),
                                                          desc="clips", disable=not progress)):
        clip = synthetic_clip(read_image(project_path(image_path)), points, n_frames=n_frames,
                              size=(setting.width, setting.height), face_size=FACE_SHARE * setting.height,
                              noise=setting.noise, seed=k)
        if k == 0:  # untimed warm-up: first calls allocate buffers and load the detector
            track_landmarks(clip.frames[:3], landmarker, fps=clip.fps, upsample=study.prepare.upsample)
        track = track_landmarks(clip.frames, landmarker, fps=clip.fps, min_cutoff=setting.min_cutoff,
                                beta=setting.beta, d_cutoff=setting.d_cutoff, upsample=study.prepare.upsample)
        report = stability(track.raw, track.smoothed, clip.points, clip.fps)
        report.update({"face_id": face_id, "detected_frames": int(track.detected.sum()),
                       "bridged_frames": int(track.bridged.sum())})
        per_clip.append(report)
        detect_s, landmark_s, total_frames = detect_s + track.detect_s, landmark_s + track.landmark_s, \
            total_frames + len(clip.frames)
    summary = {series: {key: float(np.nanmean([c[series][key] for c in per_clip])) for key in SERIES_KEYS}
               for series in ("raw", "smoothed")}
    added_lag = summary["smoothed"]["lag_frames"] - summary["raw"]["lag_frames"]
    return {
        "method": setting.method,
        "test_set": setting.test_set,
        "clips": n_clips, "frames_per_clip": n_frames, "size": [setting.width, setting.height],
        "face_share_of_height": FACE_SHARE, "noise": setting.noise,
        "one_euro": {"min_cutoff": setting.min_cutoff, "beta": setting.beta, "d_cutoff": setting.d_cutoff},
        "detector": f"dlib HOG, upsample {study.prepare.upsample}",
        **summary,
        "jitter_reduction": summary["raw"]["jitter_px"] / summary["smoothed"]["jitter_px"],
        "added_lag_frames": added_lag,
        "max_lag_frames": setting.max_lag_frames,
        "lag_within_bound": bool(added_lag <= setting.max_lag_frames),
        "fps_with_detection": total_frames / (detect_s + landmark_s),
        "fps_without_detection": total_frames / landmark_s,
        "ms_detect_per_frame": 1000 * detect_s / total_frames,
        "ms_landmarks_per_frame": 1000 * landmark_s / total_frames,
        "per_clip": per_clip,
    }


def video_markdown(results: dict) -> str:
    """The report's video table: raw against smoothed landmarks, and the frame rates."""
    raw, smooth = results["raw"], results["smoothed"]
    rows = ["| landmarks | jitter (px) | jitter / inter-ocular | error (px) | error / inter-ocular | lag (frames) |",
            "|---|---|---|---|---|---|"]
    for name, s in (("raw", raw), ("smoothed (One-Euro)", smooth)):
        rows.append(f"| {name} | {s['jitter_px']:.2f} | {s['jitter_iod']:.4f} | {s['error_px']:.2f} | "
                    f"{s['error_iod']:.4f} | {s['lag_frames']:.2f} |")
    w, h = results["size"]
    bound = "within" if results["lag_within_bound"] else "beyond"
    euro = results["one_euro"]
    return "\n".join(rows) + (
        f"\n\n{results['method']} on {results['clips']} clips of {results['frames_per_clip']} frames ({w}x{h}, a "
        f"{results['test_set']} face moved, scaled and rotated by known amounts, pixel noise sd {results['noise']:g}). "
        f"Jitter: RMS of the second frame difference of the error. Smoothing (min_cutoff {euro['min_cutoff']:g}, beta "
        f"{euro['beta']:g}, d_cutoff {euro['d_cutoff']:g}) cuts jitter {results['jitter_reduction']:.1f}x and adds "
        f"{results['added_lag_frames']:.2f} frames of lag ({bound} the stated bound of {results['max_lag_frames']:g}). "
        f"Throughput: {results['fps_with_detection']:.1f} frames/s with detection ({results['detector']}, "
        f"{results['ms_detect_per_frame']:.1f} ms per frame), {results['fps_without_detection']:.0f} frames/s "
        "without it (landmarks and filter only).")


def main(argv: list[str] | None = None) -> None:
    from flmlib.bench import environment
    from flmlib.config import load_config

    parser = argparse.ArgumentParser(description="Landmark stability and frame rate on synthetic clips (video stage).")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", default="prepared")
    parser.add_argument("--out", default="reports/video.json")
    parser.add_argument("--frames", type=int, default=0, help="frames per clip (default video.frames)")
    parser.add_argument("--clips", type=int, default=0, help="clips (default video.clips)")
    parser.add_argument("--bench", action="store_true", help="make bench: 2 clips of 60 frames, printed")
    args = parser.parse_args(argv)
    study = load_config(args.params)
    if args.bench:
        args.frames, args.clips = args.frames or 60, args.clips or 2
    started = time.perf_counter()
    try:
        results = measure(study, args.prepared, args.frames or None, args.clips or None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"video stage: {exc}", file=sys.stderr)
        sys.exit(2)
    results["environment"] = environment()
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(video_markdown(results))
    print(f"(CPU: {results['environment']['cpu']}, {results['environment']['vector_isa']}; written to {out})")


if __name__ == "__main__":
    main()
