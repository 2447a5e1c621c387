"""flm video: tracking one face, smoothing, stability measures, writing videos, and the command line.

Real frames are a HELEN test face moved by :func:`flmlib.video.synthetic_clip` (240 x 240, so dlib's HOG detector
takes ~40 ms a frame); the tracking logic and the mask path use a scripted detector and landmarker.
"""
import argparse
import sys
import types

import numpy as np
import pytest

from flmlib.crops import iou
from flmlib.io import read_image, read_pts
from flmlib.video import (FaceTracker, MaskError, VideoError, process_video, read_frames, stability, synthetic_clip,
                          track_landmarks, write_video)
from flmlib.video_cli import add_parser, run

FACE = "2968560214_1"
N_FRAMES = 24
BLANK = 10  # frame replaced by a blank one in the video file
CLIP = dict(size=(240, 240), face_size=100, noise=4.0, shift=8.0, scale=0.04, rotation=4.0, cycles=1.0)


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def face(data_root):
    stem = data_root / "300w" / "helen" / "testset" / FACE
    return read_image(stem.with_suffix(".jpg")), read_pts(stem.with_suffix(".pts"))


@pytest.fixture(scope="module")
def dlib_landmarker():
    from flmlib.landmarkers import build_landmarker

    return build_landmarker("dlib")


@pytest.fixture(scope="module")
def clip(face):
    return synthetic_clip(*face, n_frames=30, **CLIP)


@pytest.fixture(scope="module")
def video_file(face, tmp_path_factory):
    """A 24-frame mp4 of the moving face with frame BLANK all black."""
    frames = synthetic_clip(*face, n_frames=N_FRAMES, **CLIP).frames.copy()
    frames[BLANK] = 0
    return write_video(tmp_path_factory.mktemp("video") / "face.mp4", frames, fps=25.0)


def cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    return run(parser.parse_args(["video", *map(str, argv)]))


# ----------------------------------------------------------------------- scripted detector and landmarker


#: (68, 2) box units: a fixed point layout inside the box.
TEMPLATE = np.stack([np.linspace(0.2, 0.8, 68), 0.5 + 0.3 * np.sin(np.linspace(0, 6, 68))], -1)


class TemplateLandmarker:
    """Puts TEMPLATE into each box (points move exactly with the box)."""

    name = "template"

    def predict(self, image, boxes):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        size = boxes[:, None, 2:] - boxes[:, None, :2]
        return (boxes[:, None, :2] + TEMPLATE[None] * size).astype(np.float32)


class ScriptedDetector:
    """Returns the boxes listed for each call in turn (then nothing)."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def __call__(self, image, upsample):
        boxes = self.script[self.calls] if self.calls < len(self.script) else []
        self.calls += 1
        return np.asarray(boxes, np.float32).reshape(-1, 4)


def box(x, y, side):
    return [x, y, x + side, y + side]


# ------------------------------------------------------------------------------------------------ tracking


def test_tracker_follows_the_main_face_and_bridges_misses():
    small, big, far_bigger = box(10, 10, 40), box(100, 60, 80), box(300, 50, 120)
    script = [
        [small, big],  # 0: the largest face is taken
        [far_bigger, box(104, 62, 80)],  # 1: the tracked face, not the largest detection
        [],  # 2: detector miss -> bridged
        [far_bigger],  # 3: only another face -> still a miss for the tracked one
        [], [],  # 4, 5: misses beyond max_bridge=3 -> lost
        [small, far_bigger],  # 6: a new track starts on the largest
    ]
    tracker = FaceTracker(TemplateLandmarker(), ScriptedDetector(script), upsample=0, max_bridge=3)
    frames = [tracker.step(np.zeros((240, 480, 3), np.uint8)) for _ in script]
    assert [f.status for f in frames] == ["detected", "detected", "bridged", "bridged", "bridged", "none", "detected"]
    np.testing.assert_allclose(frames[0].box, big)
    np.testing.assert_allclose(frames[1].box, box(104, 62, 80))
    for k in (2, 3, 4):  # the tracked box, rebuilt from the previous points
        assert iou(frames[k].box, np.array([box(104, 62, 80)]))[0] > 0.95
        assert frames[k].has_points
    assert not frames[5].has_points and np.isnan(frames[5].box).all()
    np.testing.assert_allclose(frames[6].box, far_bigger)
    np.testing.assert_array_equal(frames[6].smoothed, frames[6].raw)  # the filter restarted with the new track


def test_track_landmarks_arrays_and_no_face_before_the_first_detection():
    script = [[], [], [box(50, 50, 60)], [box(52, 50, 60)]]
    track = track_landmarks([np.zeros((200, 200, 3), np.uint8)] * 4, TemplateLandmarker(),
                            detector=ScriptedDetector(script), upsample=0, fps=25.0)
    assert track.raw.shape == track.smoothed.shape == (4, 68, 2) and track.boxes.shape == (4, 4)
    assert list(track.status) == ["none", "none", "detected", "detected"]
    assert np.isnan(track.smoothed[:2]).all() and np.isfinite(track.smoothed[2:]).all()
    np.testing.assert_allclose(track.times, np.arange(4) / 25.0)


def test_smoothing_lowers_jitter_on_synthetic_clip_without_much_lag(clip, dlib_landmarker):
    track = track_landmarks(clip.frames, dlib_landmarker, upsample=1, fps=clip.fps)
    assert track.detected.all()
    report = stability(track.raw, track.smoothed, clip.points, clip.fps)
    raw, smooth = report["raw"], report["smoothed"]
    assert smooth["jitter_px"] < raw["jitter_px"] / 1.5  # default One-Euro parameters; measured x2.5
    assert abs(raw["lag_frames"]) <= 0.5  # the landmarker itself does not lag
    assert 0 <= smooth["lag_frames"] <= 2.0  # measured 1.2 frames on such clips
    assert smooth["error_iod"] < raw["error_iod"] + 0.02  # the lag costs little error
    assert raw["error_iod"] < 0.1  # dlib does find the face


# ------------------------------------------------------------------------------------ synthetic clips, metrics


def test_synthetic_clip_truth_follows_the_pixels():
    image = np.zeros((120, 160, 3), np.uint8)
    yy, xx = np.mgrid[0:120, 0:160]
    image[..., 1] = (250 * np.exp(-((xx - 60.0) ** 2 + (yy - 50.0) ** 2) / (2 * 2.0**2))).astype(np.uint8)
    points = np.tile(np.array([[60.0, 50.0]], np.float32), (68, 1))
    points[1:] += np.random.default_rng(0).uniform(-30, 30, (67, 2)).astype(np.float32)  # a spread "face"
    clip = synthetic_clip(image, points, n_frames=8, shift=10, scale=0.1, rotation=15)
    assert clip.frames.shape == (8, 120, 160, 3) and clip.points.shape == (8, 68, 2)
    for frame, truth in zip(clip.frames, clip.points):
        weight = frame[..., 1].astype(np.float64)
        centroid = np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()
        np.testing.assert_allclose(centroid, truth[0], atol=0.3)  # the blob sits where the truth says


def test_stability_measures_known_noise_and_lag(clip):
    truth = clip.points.astype(np.float64)
    rng = np.random.default_rng(0)
    raw = truth + rng.normal(0, 0.5, truth.shape)
    delayed = truth[:-2]  # follows the truth 2 frames late, without noise
    report = stability(raw[2:], delayed, truth[2:], fps=30.0)
    assert report["raw"]["lag_frames"] == pytest.approx(0, abs=0.2)
    assert report["smoothed"]["lag_frames"] == pytest.approx(2, abs=0.2)
    assert report["raw"]["jitter_px"] == pytest.approx(np.sqrt(6) * 0.5 * np.sqrt(2), rel=0.1)  # white noise
    assert report["smoothed"]["jitter_px"] < report["raw"]["jitter_px"] / 3  # only lag x the motion's 3rd difference
    assert report["raw"]["error_px"] == pytest.approx(0.5 * np.sqrt(np.pi / 2), rel=0.1)  # Rayleigh mean
    assert report["interocular_px"] > 40 and report["raw"]["jitter_iod"] < 0.05
    assert report["jitter_reduction"] > 3


# ---------------------------------------------------------------------------------------------- video files


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_write_and_read_video_roundtrip(tmp_path, suffix):
    frames = [np.full((48, 64, 3), 20 * k, np.uint8) for k in range(6)]
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=12.0)
    back, fps = read_frames(path)
    assert len(back) == 6 and back[0].shape == (48, 64, 3) and fps == pytest.approx(12.0)


def test_process_video_writes_readable_video_and_bridges_blank_frame(video_file, dlib_landmarker, tmp_path):
    out = tmp_path / "sub" / "out.mp4"
    stats = process_video(video_file, out, method=dlib_landmarker, upsample=1, progress=False)
    frames, fps = read_frames(out)
    source, _ = read_frames(video_file)
    assert len(frames) == stats["frames"] == N_FRAMES
    assert frames[0].shape == source[0].shape == (240, 240, 3) and fps == pytest.approx(25.0)
    assert stats["codec"] == "mp4v" and stats["method"] == "dlib"
    assert stats["bridged"] == 1 and stats["frames_with_face"] == N_FRAMES and stats["frames_without_face"] == 0
    assert stats["frames_detected"] == N_FRAMES - 1
    assert 0 < stats["fps_with_detection"] < stats["fps_without_detection"]
    assert stats["detect_seconds"] > 0 and stats["landmark_seconds"] > 0
    red = lambda f: int(((f[..., 0] > 150) & (f[..., 1] < 90) & (f[..., 2] < 90)).sum())  # noqa: E731
    assert red(frames[3]) > red(source[3]) + 20  # the points are drawn
    assert red(frames[BLANK]) > 20  # on the blank frame too, in the tracked box


def test_process_video_applies_mask(tmp_path, monkeypatch):
    calls = []

    def apply_mask(image, points, name):
        assert image.shape == (120, 160, 3) and image.dtype == np.uint8 and points.shape == (68, 2)
        calls.append(name)
        out = image.copy()
        out[:40, :40] = (0, 0, 255)  # blue corner
        return out

    monkeypatch.setitem(sys.modules, "flmlib.masks", types.SimpleNamespace(apply_mask=apply_mask, MASKS={"blue": 0}))
    video = write_video(tmp_path / "in.avi", [np.full((120, 160, 3), 128, np.uint8)] * 5, fps=10.0)
    detector = ScriptedDetector([[box(40, 30, 60)]] * 3)  # a face on frames 0-2 only, then lost after 0 bridges
    stats = process_video(video, tmp_path / "out.avi", method=TemplateLandmarker(), mask="blue", progress=False,
                          detector=detector, upsample=0, max_bridge=0)
    frames, _ = read_frames(tmp_path / "out.avi")
    assert calls == ["blue"] * 3 and stats["frames_with_face"] == 3 and stats["frames_without_face"] == 2
    assert frames[0][:40, :40, 2].mean() > 200 and frames[4][:40, :40, 2].mean() < 160  # masked, then unchanged
    with pytest.raises(MaskError, match="unknown mask 'red'"):
        process_video(video, tmp_path / "out2.avi", method=TemplateLandmarker(), mask="red", progress=False,
                      detector=detector, upsample=0)


def test_process_video_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="missing.mp4: no such file"):
        process_video(tmp_path / "missing.mp4", tmp_path / "out.mp4", method=TemplateLandmarker())
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4: cannot be opened as a video"):
        process_video(text, tmp_path / "out.mp4", method=TemplateLandmarker())
    video = write_video(tmp_path / "in.avi", [np.zeros((32, 32, 3), np.uint8)] * 2)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(VideoError, match="out.mp4: cannot create the output folder"):
        process_video(video, blocker / "out.mp4", method=TemplateLandmarker(), detector=ScriptedDetector([]),
                      progress=False)


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli("--help")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--method", "--detector", "--mask", "--upsample", "--min-cutoff", "--beta", "--d-cutoff",
                 "exit codes"):
        assert flag in text


def test_cli_missing_input_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    assert cli(missing, "--out", tmp_path / "out.mp4", "--method", "dlib") == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_unwritable_output_exits_2(video_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli(video_file, "--out", blocker / "out.mp4", "--method", "dlib") == 2
    assert "out.mp4" in capsys.readouterr().err
    assert cli(video_file, "--out", tmp_path / "out.gif", "--method", "dlib") == 2  # no codec for that suffix
    assert cli(video_file, "--out", video_file, "--method", "dlib") == 2  # would overwrite the input


def test_cli_bad_values_exit_2(video_file, tmp_path):
    assert cli(video_file, "--out", tmp_path / "o.mp4", "--method", "dlib", "--min-cutoff", "0") == 2
    assert cli(video_file, "--out", tmp_path / "o.mp4", "--method", "dlib", "--upsample", "9") == 2


def test_cli_model_that_cannot_load_exits_3(video_file, tmp_path, capsys):
    from flmlib.config import load_config

    cnn = next(m for m in load_config().method_ids if load_config().method_spec(m).kind == "cnn")
    assert cli(video_file, "--out", tmp_path / "o.mp4", "--method", cnn, "--checkpoint", tmp_path / "no.pt") == 3
    assert "cannot load" in capsys.readouterr().err


def test_cli_runs_dlib(video_file, tmp_path, capsys):
    out = tmp_path / "out.avi"
    assert cli(video_file, "--out", out, "--method", "dlib", "--upsample", "1", "--beta", "0.1") == 0
    printed = capsys.readouterr().out
    assert "1 detector misses bridged" in printed and "frames/s with detection" in printed
    frames, _ = read_frames(out)
    assert len(frames) == N_FRAMES and frames[0].shape == (240, 240, 3)


@pytest.mark.skipif(not __import__("flmlib.paths", fromlist=["x"]).project_path(".venv-mediapipe/bin/python").exists(),
                    reason="the MediaPipe environment is not built (make mediapipe-env)")
def test_cli_detector_option_runs_blazeface_with_its_calibration(video_file, tmp_path, capsys, monkeypatch):
    from flmlib import face_detectors
    from flmlib.face_detectors import BoxCalibration, write_calibrations

    args = [video_file, "--method", "dlib", "--detector", "blazeface"]
    monkeypatch.setattr(face_detectors, "CALIBRATION_PATH", str(tmp_path / "none.json"))
    assert cli(*args, "--out", tmp_path / "a.avi") == 3  # no calibration yet: named, nothing written
    assert "dvc repro detectors" in capsys.readouterr().err and not (tmp_path / "a.avi").exists()
    calibration = write_calibrations(tmp_path / "boxes.json", {"blazeface": BoxCalibration(faces=5)}, "identity")
    monkeypatch.setattr(face_detectors, "CALIBRATION_PATH", str(calibration))
    out = tmp_path / "b.avi"
    code = cli(*args, "--out", out)
    printed = capsys.readouterr()
    assert code in (0, 1) and len(read_frames(out)[0]) == N_FRAMES
    assert "HOG" not in printed.err  # a frame without a face names BlazeFace, not the default detector
    with pytest.raises(SystemExit) as usage:  # an unknown detector is a command-line error (exit 2)
        cli(video_file, "--out", tmp_path / "c.avi", "--detector", "yolo")
    assert usage.value.code == 2 and "hog1" in capsys.readouterr().err


def test_cli_detector_option_takes_a_hog_entry_upsampling(video_file, tmp_path, capsys, monkeypatch):
    """`--detector hog0` detects with detectors.yaml's hog0 entry (HOG at upsample 0), and `--upsample` overrides it."""
    from flmlib import video

    used = []

    def recording(*args, method, **kwargs):
        used.append(method)
        return process_video(*args, method=method, **kwargs)

    monkeypatch.setattr(video, "process_video", recording)  # video_cli imports it when it runs
    assert cli(video_file, "--out", tmp_path / "o.avi", "--method", "dlib", "--detector", "hog0") in (0, 1)
    assert "frames/s with detection" in capsys.readouterr().out
    assert cli(video_file, "--out", tmp_path / "p.avi", "--method", "dlib", "--detector", "hog0", "--upsample",
               "1") in (0, 1)
    assert [(p.detector_info["name"], p.upsample) for p in used] == [("hog0", 0), ("hog0", 1)]
