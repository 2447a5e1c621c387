"""``flm video``: landmarks on every frame of a video, smoothed, drawn (or a mask applied) into a new video.

    flm video IN --out OUT [--method ID] [--checkpoint FILE] [--detector ID] [--mask NAME] [--upsample N]
              [--min-cutoff F] [--beta F] [--d-cutoff F] [--no-smoothing] [-q]

Wire it into ``flm`` with ``add_parser(subparsers)`` (it sets ``func=run``); :func:`run` returns the exit codes of
``flm predict`` (:data:`flmlib.cli.EXIT_CODES`), with the video meanings of :data:`VIDEO_EXIT_CODES`.
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
from pathlib import Path

from flmlib.cli import (EXIT_INPUT_SKIPPED, EXIT_MODEL, EXIT_OK, EXIT_USAGE, MAX_UPSAMPLE, checkpoint_path,
                        load_detector_ids, method_ids)
from flmlib.smoothing import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF

VIDEO_EXIT_CODES = {
    EXIT_OK: "success: the video was written and every frame has landmarks",
    EXIT_INPUT_SKIPPED: "the video was written, but some frames have no landmarks (no face found, or landmarking"
                        " failed)",
    EXIT_USAGE: "bad command line, input that is missing or not a video, or an output that cannot be written",
    EXIT_MODEL: "the landmarker's model could not be loaded (e.g. missing or invalid --checkpoint)",
}


def _error(message: str) -> None:
    print(f"flm: error: {message}", file=sys.stderr)


def _codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in VIDEO_EXIT_CODES.items())


def smoothing_defaults() -> dict[str, float]:
    """One-Euro parameters: params.yaml's ``video`` section (what the video stage measured), else the module's."""
    from flmlib.config import ConfigError, load_config

    try:
        video = load_config().video
        return {"min_cutoff": video.min_cutoff, "beta": video.beta, "d_cutoff": video.d_cutoff}
    except ConfigError:
        return {"min_cutoff": DEFAULT_MIN_CUTOFF, "beta": DEFAULT_BETA, "d_cutoff": DEFAULT_D_CUTOFF}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``video`` subcommand to an ``argparse`` subparsers object; returns its parser."""
    from flmlib.video import CODECS

    methods = method_ids()
    detectors = load_detector_ids()
    smoothing = smoothing_defaults()
    parser = subparsers.add_parser(
        "video", help="landmarks on every frame of a video (tracked, smoothed, drawn or masked)",
        description=textwrap.fill(
            "Find the main face of every frame of IN with a face detector of detectors.yaml (default the study's"
            " dlib HOG; --detector blazeface runs in real time) (the largest face, then the detection"
            " that overlaps the previous frame's box most; a frame where the detector misses it reuses the tracked"
            " box), place 68 landmarks with any method of the study"
            f" ({', '.join(methods)}; default {methods[0]}), smooth them over time with a One-Euro filter, and"
            " write OUT with the points drawn (or, with --mask, the mask applied), same size and frame rate. Prints"
            " the counts and the throughput (frames/s with and without the detector).", width=100),
        epilog=_codes_text() + "\n\nexamples:\n  flm video clip.mp4 --out clip-landmarks.mp4 --method dlib"
               "\n  flm video webcam.mp4 --out fast.mp4 --detector blazeface --method onet_half_40",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="IN", help="input video (anything OpenCV's FFmpeg can decode)")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help=f"output video; its suffix picks the codec ({', '.join(CODECS)})")
    parser.add_argument("--method", "--model", dest="method", choices=methods, default=methods[0],
                        help="landmarker, a method id of params.yaml (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="model file of a method trained by the study (default: its models/<method>.pt)")
    parser.add_argument("--mask", default=None, metavar="NAME",
                        help="apply this mask of flmlib.masks to the face instead of drawing the points")
    parser.add_argument("--detector", choices=detectors, default=None,
                        help="face detector, an id of detectors.yaml (default: its detector_study.default, the"
                             " study's HOG; others need the box calibration of `dvc repro detectors`)")
    parser.add_argument("--upsample", type=int, default=None,
                        help="HOG detector upsampling (default: the detector's, prepare.upsample for the study's)")
    parser.add_argument("--min-cutoff", type=float, default=smoothing["min_cutoff"],
                        help="One-Euro cutoff of a still point, Hz: lower is steadier but lags more"
                             " (default: %(default)s, video.min_cutoff of params.yaml)")
    parser.add_argument("--beta", type=float, default=smoothing["beta"],
                        help="One-Euro speed coefficient, 1/px: the cutoff rises by beta Hz per px/s of speed;"
                             " higher lags less in fast motion (default: %(default)s, for ~60 px between the eyes)")
    parser.add_argument("--d-cutoff", type=float, default=smoothing["d_cutoff"],
                        help="One-Euro cutoff of the speed estimate, Hz (default: %(default)s)")
    parser.add_argument("--no-smoothing", action="store_true", help="draw the raw landmarks (no One-Euro filter)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only (no progress bar, no summary)")
    parser.set_defaults(func=run)
    return parser


def _check_args(args: argparse.Namespace) -> str | None:
    if args.upsample is not None and not 0 <= args.upsample <= MAX_UPSAMPLE:
        return f"--upsample must be 0..{MAX_UPSAMPLE} (each step doubles the image side), got {args.upsample}"
    for flag, value, low_ok in (("--min-cutoff", args.min_cutoff, False), ("--beta", args.beta, True),
                                ("--d-cutoff", args.d_cutoff, False)):
        if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
            return f"{flag} must be a finite number {'>= 0' if low_ok else '> 0'}, got {value}"
    return None


def _check_output(out: Path, inp: Path) -> str | None:
    """Why ``out`` cannot be written (None when it can), checked before any work is done."""
    from flmlib.video import CODECS

    if out.suffix.lower() not in CODECS:
        return f"--out {out}: unknown video suffix {out.suffix!r}; use one of {', '.join(CODECS)}"
    if out.is_dir():
        return f"--out {out} is a folder; give a video file name"
    if out.exists() and inp.exists() and out.resolve() == inp.resolve():
        return f"--out {out} is the input video; choose another output file"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.flm-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"--out {out}: cannot create or write the output file ({exc.strerror or exc})"
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``flm video`` with parsed arguments; returns the exit code (:data:`VIDEO_EXIT_CODES`)."""
    from flmlib.cli import command_predictor
    from flmlib.config import load_config
    from flmlib.video import MaskError, VideoError, open_video, process_video

    problem = _check_args(args)
    if problem:
        _error(problem)
        return EXIT_USAGE
    inp, out = Path(args.input), Path(args.out)
    try:
        open_video(inp).release()
    except VideoError as exc:
        _error(str(exc))
        return EXIT_USAGE
    problem = _check_output(out, inp)
    if problem:
        _error(problem)
        return EXIT_USAGE
    spec = load_config().method_spec(args.method)
    if args.checkpoint is not None and spec.kind != "cnn":
        _error(f"--checkpoint is for methods trained by the study; {args.method} ({spec.kind}) brings its own model")
        return EXIT_USAGE
    kwargs = {"checkpoint": checkpoint_path(args.checkpoint, spec.options["checkpoint"])} if spec.kind == "cnn" else {}
    loaded = command_predictor(args, spec, kwargs)
    if loaded is None:
        return EXIT_MODEL
    predictor = loaded[0]
    smoothing = {"min_cutoff": args.min_cutoff, "beta": args.beta, "d_cutoff": args.d_cutoff,
                 "smooth": not args.no_smoothing}
    try:
        stats = process_video(inp, out, method=predictor, mask=args.mask, smoothing=smoothing,
                              progress=not args.quiet)
    except (VideoError, MaskError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except (ValueError, RuntimeError) as exc:  # a method's worker died, or it rejected a frame
        _error(f"{inp}: landmarking failed: {exc}")
        return EXIT_INPUT_SKIPPED
    missing = stats["frames_without_face"]
    if missing:
        _error(f"{inp}: {missing} of {stats['frames']} frame(s) have no landmarks (no face found by the"
               f" {predictor.detector_text}, and none tracked to bridge from)")
    if not args.quiet:
        print(f"{inp}: {stats['frames']} frames ({stats['width']}x{stats['height']}, {stats['fps']:.2f} fps),"
              f" {stats['frames_with_face']} with a face ({stats['bridged']} detector misses bridged by tracking),"
              f" {missing} without -> {out} ({stats['codec']})")
        print(f"{stats['method']}: {stats['fps_with_detection']:.1f} frames/s with detection,"
              f" {stats['fps_without_detection']:.1f} frames/s landmarks only, {stats['fps_total']:.1f} frames/s"
              f" overall (decoding, drawing and encoding included); {stats['seconds']:.2f} s")
    return EXIT_OK if missing == 0 else EXIT_INPUT_SKIPPED
