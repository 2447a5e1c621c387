"""``flm mask``: put a face filter from :mod:`flmlib.masks` on every face found in images.

    flm mask IMAGE_OR_DIR... --mask NAME [--method ID] [--upsample N] [--feather F] --out DIR
    flm mask --list

Faces are found and landmarked exactly as ``flm predict`` does (:class:`flmlib.predictor.Predictor`: dlib HOG
detector, then the chosen landmarker), and each image is written as ``DIR/<name>.png`` with the mask on every face.
Missing files, files that are not images and images without a face are reported on stderr and skipped; the exit
codes are those of :mod:`flmlib.cli` (0 ok, 1 some inputs skipped, 2 bad command line, 3 model not loaded).

To hook it into ``flm``: ``mask_cli.add_parser(sub)`` on the subparsers object of :func:`flmlib.cli.build_parser`
(``args.func`` is then :func:`run`).
"""
from __future__ import annotations

import argparse
import math

from flmlib.cli import (EXIT_INPUT_SKIPPED, EXIT_MODEL, EXIT_OK, EXIT_USAGE, MAX_UPSAMPLE, _codes_text, _error,
                        _wrap, checked_inputs, checkpoint_path, landmarked_images, method_ids)
from flmlib.masks import DEFAULT_FEATHER, MASKS, list_masks


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``mask`` subcommand to an ``argparse`` subparsers object; returns its parser (``func`` = :func:`run`).

    Mask names, ``--upsample`` and ``--feather`` are checked by :func:`run`, not by argparse, so that a bad value
    is an exit code (2) with a message listing what is allowed rather than a ``SystemExit``."""
    methods = method_ids()
    names = ", ".join(MASKS)
    parser = subparsers.add_parser(
        "mask", help="put a face filter (mask) on every face in images",
        description=_wrap(
            "Find faces with dlib's HOG detector, place 68 landmarks on each with any method of the study"
            f" ({', '.join(methods)}; default {methods[0]}), and draw a mask of the study's own library ({names})"
            " over every face: the mask is warped piecewise-affinely onto the landmarks and alpha-blended with a"
            " feathered edge. Writes OUT/<name>.png per input image. Missing files, files that are not images and"
            " images without a face are reported on stderr and skipped; the others are still processed."
        ),
        epilog=_codes_text() + "\n\nexamples:\n  flm mask --list\n"
               "  flm mask data/300w/helen/testset --mask sunglasses --method dlib --out masked/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR",
                        help="image files, or folders whose image files (not recursive) are all used")
    parser.add_argument("--mask", dest="mask", default=None, metavar="NAME", help=f"the mask: one of {names}")
    parser.add_argument("--list", action="store_true", help="print the mask library (name and description) and exit")
    parser.add_argument("--method", "--model", dest="method", choices=methods, default=methods[0],
                        help="landmarker, a method id of params.yaml (default: %(default)s, as for flm predict)")
    parser.add_argument("--checkpoint", default=None,
                        help="model file of a method trained by the study (default: the study's models/<method>.pt)")
    parser.add_argument("--device", default="auto",
                        help="torch device of a trained model: auto, cpu, cuda (default: %(default)s)")
    parser.add_argument("--upsample", type=int, default=None,
                        help=f"HOG detector upsampling, 0..{MAX_UPSAMPLE} (default: prepare.upsample from params.yaml)")
    parser.add_argument("--feather", type=float, default=DEFAULT_FEATHER,
                        help="edge softness: blur sigma as a fraction of the face's outer-eye-corner distance"
                             " (0 = hard edge; default: %(default)s)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder, created if needed (required)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes that read and detect images (default: one per core; 0: all in one process)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.set_defaults(func=run)
    return parser


def _check_arguments(args: argparse.Namespace) -> str | None:
    """Why the command line cannot run (None when it can); the checks that need no model or file."""
    if args.mask is None:
        return f"--mask NAME is required (one of {', '.join(MASKS)}; `flm mask --list` describes them)"
    if args.mask not in MASKS:
        return f"unknown mask {args.mask!r}; known masks: {', '.join(MASKS)}"
    if not args.inputs:
        return "no input image or folder given"
    if args.out is None:
        return "--out DIR is required (the folder the masked images are written to)"
    if args.upsample is not None and not 0 <= args.upsample <= MAX_UPSAMPLE:
        return f"--upsample must be 0..{MAX_UPSAMPLE} (each step doubles the image side), got {args.upsample}"
    if args.workers is not None and args.workers < 0:
        return f"--workers must be >= 0, got {args.workers}"
    if not (math.isfinite(args.feather) and args.feather >= 0):
        return f"--feather must be a number >= 0, got {args.feather}"
    return None


def _load_predictor(args: argparse.Namespace):
    """``(predictor, None)`` or ``(None, exit code)`` after reporting why the landmarker cannot be used."""
    from flmlib.config import load_config
    from flmlib.predictor import Predictor

    try:
        spec = load_config().method_spec(args.method)
    except KeyError as exc:
        _error(str(exc.args[0]) if exc.args else str(exc))
        return None, EXIT_USAGE
    if args.checkpoint is not None and spec.kind != "cnn":
        _error(f"--checkpoint is for methods trained by the study; {args.method} ({spec.kind}) brings its own model")
        return None, EXIT_USAGE
    kwargs = {}
    if spec.kind == "cnn":  # a model trained by the study: its file and device
        kwargs = {"checkpoint": checkpoint_path(args.checkpoint, spec.options["checkpoint"]), "device": args.device}
    try:
        return Predictor.from_name(args.method, upsample=args.upsample, **kwargs), None
    except (OSError, ValueError, RuntimeError) as exc:
        hint = (f" (train it with `make repro`, or `.venv/bin/dvc repro train@{spec.model}`; or use --method dlib)"
                if spec.kind == "cnn" and args.checkpoint is None and isinstance(exc, FileNotFoundError) else "")
        _error(f"cannot load the {args.method} landmarker: {exc}{hint}")
        return None, EXIT_MODEL


def run(args: argparse.Namespace) -> int:
    """Run ``flm mask``; returns the exit code (0 ok, 1 some inputs skipped, 2 bad command line, 3 model not
    loaded; see :data:`flmlib.cli.EXIT_CODES`)."""
    if args.list:
        width = max(len(name) for name, _ in list_masks())
        for name, description in list_masks():
            print(f"{name:<{width}}  {description}")
        return EXIT_OK
    problem = _check_arguments(args)
    if problem:
        _error(problem)
        return EXIT_USAGE

    import cv2

    from flmlib.masks import apply_masks

    predictor, code = _load_predictor(args)
    if predictor is None:
        return code
    inputs = checked_inputs(args)
    if inputs is None:
        return EXIT_USAGE
    paths, out, skipped = inputs
    written = 0
    for path, image, stem, faces in landmarked_images(predictor, paths, skipped, args.workers):
        unplaced = [i for i, face in enumerate(faces) if not face.placed]
        if unplaced:  # the other faces still get the mask, but the run did not fully succeed
            _error(f"{path}: {args.method} could not place the points of face(s) {unplaced} of {len(faces)};"
                   " written without a mask on them")
            skipped.count += 1
        masked = apply_masks(image, [face.points for face in faces if face.placed], args.mask, feather=args.feather)
        target = out / f"{stem}.png"
        try:
            if not cv2.imwrite(str(target), cv2.cvtColor(masked, cv2.COLOR_RGB2BGR)):
                raise OSError("OpenCV could not write the PNG")
        except (OSError, cv2.error) as exc:
            _error(f"{path}: cannot write {target} ({exc})")
            skipped.count += 1
            continue
        written += 1
        if not args.quiet:
            print(f"{path}: {args.mask} on {len(faces) - len(unplaced)} face(s) -> {target}")
    if not args.quiet:
        print(f"{written} image(s) written to {out}, {skipped.count} input(s) skipped")
    return EXIT_OK if skipped.count == 0 else EXIT_INPUT_SKIPPED


__all__ = ["add_parser", "run"]
