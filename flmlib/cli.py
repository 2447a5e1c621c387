"""``flm``: the study's command-line tool (console script registered in pyproject.toml).

    flm predict IMAGE_OR_DIR... [--method ID] [--checkpoint models/<id>.pt] [--out DIR]
    flm export --format onnx [--checkpoint models/onet.pt] [--out models/onet.onnx]

``predict`` writes, per input image, ``<out>/<stem>.json`` (image size, method, boxes, 68 points per face) and
``<out>/<stem>.png`` (the image with boxes and points drawn). Bad inputs are reported on stderr and skipped; the
exit code says whether everything went through (see :data:`EXIT_CODES`).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


EXIT_OK = 0
EXIT_INPUT_SKIPPED = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_MODEL = 3
EXIT_CODES = {
    EXIT_OK: "success (predict: every input processed, at least one face in each image)",
    EXIT_INPUT_SKIPPED: "some inputs were skipped: missing file, not an image, or no face found (the others were written)",
    EXIT_USAGE: "bad command line (including an --out folder that cannot be written or is an input folder)",
    EXIT_MODEL: "the model could not be loaded or exported (e.g. missing or invalid --checkpoint)",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Largest --upsample: each step doubles the image side for the HOG detector (4 = 16x the pixels).
MAX_UPSAMPLE = 4
#: Images whose faces go through the network together; bounds memory when a folder holds thousands of images.
CHUNK = 64

DEFAULT_CHECKPOINT = "models/onet.pt"
COORDINATES = ("0-based image pixels, pixel centres at integers; box = (x0, y0, x1, y1) edges; points = 68 (x, y)"
               " in the iBUG 68-point order")


def _error(message: str) -> None:
    print(f"flm: error: {message}", file=sys.stderr)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def checkpoint_path(value: str | None, default: str = DEFAULT_CHECKPOINT) -> Path:
    """``--checkpoint``: as given (relative to the working directory), or the study's model file when not given."""
    from flmlib.paths import PROJECT_ROOT

    return Path(value).resolve() if value else PROJECT_ROOT / default


def _codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Arguments -> image paths (folders give their image files, sorted, not recursive) and error messages."""
    paths, errors = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif not path.exists():
            errors.append(f"{path}: no such file or folder")
        else:
            paths.append(path)
    return paths, errors


def output_stems(paths: Sequence[Path]) -> list[str]:
    """One distinct output name per input: the file stem, and for a stem that repeats (``a.jpg``, ``a.png``, or two
    folders' ``a.jpg``) ``a-2``, ``a-3``, ... skipping every name another input already has (``a-2.jpg``).
    Names are compared case-insensitively, as on macOS and Windows file systems."""
    taken = {p.stem.lower() for p in paths}
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem.lower() in used:
            n += 1
            stem = f"{path.stem}-{n}"
            if stem.lower() in taken:  # another input's own name: keep looking
                stem = path.stem
                continue
        used.add(stem.lower())
        stems.append(stem)
    return stems


def check_output_folder(out: Path, inputs: Sequence[str], paths: Sequence[Path]) -> str | None:
    """Why ``out`` cannot take the outputs (None when it can): it is an input folder (annotated PNGs would replace
    or join the inputs), it would overwrite an input image, or it cannot be created or written."""
    resolved = out.resolve()
    for item in inputs:
        if Path(item).is_dir() and Path(item).resolve() == resolved:
            return f"--out {out} is an input folder: outputs would replace or join the input images; choose another"
    inside = {p.resolve() for p in paths if p.resolve().parent == resolved}
    if inside:
        return f"--out {out} holds input images ({sorted(inside)[0].name}, ...) that outputs could overwrite"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".flm-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"--out {out}: cannot create or write the output folder ({exc.strerror or exc})"
    return None


def annotate(image: np.ndarray, faces) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB copy with each face's box (green) and 68 points (red) drawn, as BGR for cv2."""
    import cv2

    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    scale = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 200, 0), scale)
        for x, y in face.points[np.isfinite(face.points).all(axis=1)]:  # an unplaced face has only its box
            cv2.circle(out, (int(round(x)), int(round(y))), scale + 1, (0, 0, 255), -1, lineType=cv2.LINE_AA)
    return out


def to_json(record: dict) -> str:
    """Indented JSON with each list of plain numbers (a box, a point) kept on one line."""
    text = json.dumps(record, indent=1, allow_nan=False)  # a NaN must never reach a .json file
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


def face_record(path: Path, image: np.ndarray, faces, method: str, detector: dict, model: str | None) -> dict:
    """The JSON written for one image; ``detector`` describes the face detector (id, kind and options)."""
    height, width = image.shape[:2]
    return {"image": str(path), "width": width, "height": height, "method": method, "model": model,
            "detector": detector, "coordinates": COORDINATES,
            "faces": [{k: v for k, v in face.to_dict().items() if k != "method"} for face in faces]}


class SkipCount:
    """How many inputs a command skipped (each one is named on stderr when it is counted)."""

    def __init__(self, count: int = 0):
        self.count = count


def checked_inputs(args: argparse.Namespace) -> tuple[list[Path], Path, SkipCount] | None:
    """The input images of ``args.inputs`` and the output folder ``args.out``, checked: ``(paths, out, skipped)``
    with the inputs that do not exist or are not images named on stderr and counted in ``skipped``; ``None`` (after
    naming the problem) when the output folder cannot be used."""
    paths, errors = expand_inputs(args.inputs)
    out = Path(args.out)
    problem = check_output_folder(out, args.inputs, paths)
    if problem:
        _error(problem)
        return None
    for message in errors:
        _error(message)
    return paths, out, SkipCount(len(errors))


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def landmarked_images(predictor, paths: Sequence[Path], skipped: SkipCount, workers: int | None = None,
                      progress: bool = False):
    """Read, detect and landmark ``paths``: reading and detection in ``workers`` processes
    (:func:`flmlib.image_stream.detected_images`; ``None`` = every core, 0 = in this process), the landmarker over
    the faces of :data:`CHUNK` images at a time (bounded memory for large folders), in input order.

    Yields ``(path, image, stem, faces)`` for every image with at least one face: ``image`` ``(H, W, 3) uint8`` RGB,
    ``stem`` its distinct output name (:func:`output_stems`), ``faces`` the predictor's faces. An unreadable image, a
    chunk the method failed on and an image without a face are named on stderr and counted in ``skipped``.
    ``progress`` shows a bar with images per second on stderr.
    """
    from tqdm import tqdm

    from flmlib.image_stream import detected_images
    from flmlib.predictor import Face

    stems = output_stems(paths)  # by position: the same file given twice gets two outputs, as before
    stream = zip(stems, detected_images(paths, predictor.detector, predictor.upsample, workers))
    bar = tqdm(total=len(paths), unit="img", desc="images", disable=not progress, mininterval=0.5)
    for chunk in _chunks(stream, CHUNK):
        bar.update(len(chunk))
        for _, item in chunk:
            if item.error is not None:
                _error(item.error)
                skipped.count += 1
        readable = [(stem, item) for stem, item in chunk if item.error is None]
        if not readable:
            continue
        try:
            points = predictor.landmarker.predict_batch([i.image for _, i in readable], [i.boxes for _, i in readable])
        except (ValueError, RuntimeError) as exc:  # RuntimeError: a method's worker process died or timed out
            _error(f"landmarking failed for {', '.join(str(i.path) for _, i in readable)}: {exc}")
            skipped.count += len(readable)
            continue
        for (stem, item), image_points in zip(readable, points):
            if len(item.boxes) == 0:
                _error(f"{item.path}: no face found ({getattr(predictor, 'detector_text', 'the detector')})")
                skipped.count += 1
                continue
            faces = [Face(b, p, predictor.method) for b, p in zip(item.boxes, image_points)]
            yield item.path, item.image, stem, faces
    bar.close()


def _workers_text(workers: int | None, detector=None) -> str:
    from flmlib.image_stream import _picklable, default_workers

    n = default_workers() if workers is None else workers
    if detector is not None and not _picklable(detector):  # e.g. BlazeFace: detects in this process
        n = 0
    return "this process" if n <= 0 else f"{n} process{'es' if n > 1 else ''}"


def detector_predictor(detector_id: str | None, upsample: int | None, method: str, landmarker_kwargs: dict):
    """A :class:`~flmlib.predictor.Predictor` whose detector is ``detectors.<detector_id>`` of detectors.yaml (default:
    ``detector_study.default``, the study's HOG; :meth:`~flmlib.predictor.Predictor.from_name`), and the description
    of the detector written into each JSON file."""
    from flmlib.detector_config import load_detector_config
    from flmlib.predictor import Predictor

    detector_id = detector_id or load_detector_config().detector_study.default
    predictor = Predictor.from_name(method, upsample=upsample, detector=detector_id, **landmarker_kwargs)
    return predictor, predictor.detector_info


def command_predictor(args: argparse.Namespace, spec, landmarker_kwargs: dict):
    """:func:`detector_predictor` for a command's parsed ``--detector``, ``--upsample``, ``--method`` and
    ``--checkpoint``; prints why and returns ``None`` when the landmarker or detector cannot be loaded (with a hint
    when a trained model file is missing)."""
    try:
        return detector_predictor(args.detector, args.upsample, args.method, landmarker_kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        hint = (f" (train it with `make repro`, or `.venv/bin/dvc repro train@{spec.model}`)"
                if spec.kind == "cnn" and args.checkpoint is None and isinstance(exc, FileNotFoundError) else "")
        _error(f"cannot load the {args.method} landmarker: {exc}{hint}")
        return None


def cmd_predict(args: argparse.Namespace) -> int:
    import cv2

    from flmlib.config import load_config

    study = load_config()
    spec = study.method_spec(args.method)
    kwargs = {}
    if args.checkpoint is not None and spec.kind != "cnn":
        _error(f"--checkpoint is for methods trained by the study; {args.method} ({spec.kind}) brings its own model")
        return EXIT_USAGE
    if spec.kind == "cnn":  # a model trained by the study: these options choose its file and runtime
        kwargs = {"checkpoint": checkpoint_path(args.checkpoint, spec.options["checkpoint"]), "backend": args.backend,
                  "device": args.device, "batch_size": args.batch_size}
    loaded = command_predictor(args, spec, kwargs)
    if loaded is None:
        return EXIT_MODEL
    predictor, detector_info = loaded
    inputs = checked_inputs(args)
    if inputs is None:
        return EXIT_USAGE
    paths, out, skipped = inputs
    landmarker = predictor.landmarker
    model_name = str(getattr(landmarker, "source", None) or getattr(landmarker, "model_path", None) or spec.kind)
    written, started = 0, time.perf_counter()
    for path, image, stem, faces in landmarked_images(predictor, paths, skipped, args.workers,
                                                      progress=not args.quiet):
        unplaced = [i for i, face in enumerate(faces) if not face.placed]
        if unplaced:  # written all the same (points null in the JSON), but the run did not fully succeed
            _error(f"{path}: {args.method} could not place the points of face(s) {unplaced} of {len(faces)}")
            skipped.count += 1
        record = face_record(path, image, faces, predictor.method, detector_info, model_name)
        try:
            (out / f"{stem}.json").write_text(to_json(record))
            if not cv2.imwrite(str(out / f"{stem}.png"), annotate(image, faces)):
                raise OSError("OpenCV could not write the PNG")
        except OSError as exc:
            _error(f"{path}: cannot write its outputs to {out} ({exc})")
            skipped.count += 1
            continue
        written += 1
        if args.verbose:
            print(f"{path}: {len(faces)} face(s) -> {out / stem}.json, .png")
    if not args.quiet:
        seconds = time.perf_counter() - started
        print(f"{written} image(s) written to {out}, {skipped.count} input(s) skipped; {len(paths)} image(s) in "
              f"{seconds:.1f} s, {len(paths) / max(seconds, 1e-9):.1f} images/s (reading and detection in "
              f"{_workers_text(args.workers, predictor.detector)})")
    return EXIT_OK if skipped.count == 0 else EXIT_INPUT_SKIPPED


def cmd_export(args: argparse.Namespace) -> int:
    from flmlib.export import export_onnx, max_difference, onnx_session
    from flmlib.models import load_trained
    from flmlib.paths import PROJECT_ROOT

    out = Path(args.out) if args.out else PROJECT_ROOT / "models" / "onet.onnx"
    try:
        model, config = load_trained(checkpoint_path(args.checkpoint))
        path = export_onnx(model, config, out)
        diff = max_difference(model, onnx_session(path))
    except (OSError, ValueError, RuntimeError) as exc:
        _error(f"export failed: {exc}")
        return EXIT_MODEL
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.2f} MB, ONNX, dynamic batch); ONNX Runtime vs PyTorch max |diff| on random input:"
          f" {diff:.2e} box units")
    return EXIT_OK


def method_ids() -> list[str]:
    """The methods params.yaml lists (the study's trained models first); the study's defaults without it."""
    from flmlib.config import ConfigError, load_config

    try:
        return load_config().method_ids
    except ConfigError:
        return ["onet", "dlib"]


def load_detector_ids() -> list[str]:
    """The detector ids of detectors.yaml (for ``--detector``'s choices)."""
    from flmlib.detector_config import load_detector_config

    return list(load_detector_config().detectors)


def build_parser() -> argparse.ArgumentParser:
    from flmlib.landmarkers.base import DEFAULT_BATCH_SIZE  # light: no landmarker (nor torch) is imported

    methods = method_ids()
    parser = argparse.ArgumentParser(
        prog="flm",
        description="68-point facial landmarks with any method of the study (" + ", ".join(methods) + ").",
        epilog=_codes_text(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{predict,mask,video,export}")

    predict = sub.add_parser(
        "predict", help="find faces and their 68 landmarks in images",
        description=_wrap(
            "Find faces with dlib's HOG detector and place 68 landmarks on each, with any method of the study"
            f" ({', '.join(methods)}; default {methods[0]}). For every input image writes OUT/<name>.json (image size, method, per face: box and 68"
            " points, " + COORDINATES + ") and OUT/<name>.png (boxes and points drawn). Missing files, files that"
            " are not images, and images without a face are reported on stderr and skipped; the others are still"
            " processed."
        ),
        epilog=_codes_text() + "\n\nexample:\n  flm predict data/300w/helen/testset --method onet --out out/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                         help="image files, or folders whose image files (not recursive) are all used")
    predict.add_argument("--method", "--model", dest="method", choices=methods, default=methods[0],
                         help="landmarker, a method id of params.yaml (default: %(default)s)")
    predict.add_argument("--checkpoint", default=None,
                         help="model file of a method trained by the study: a .pt written by training, or a .onnx"
                              " written by `flm export` (default: the study's models/<method>.pt)")
    predict.add_argument("--out", default="flm-out", help="output folder, created if needed (default: %(default)s)")
    detectors = list(load_detector_ids())
    predict.add_argument("--detector", choices=detectors, default=None,
                         help="face detector, an id of detectors.yaml (default: its detector_study.default, the"
                              " study's HOG; others need the box calibration of `dvc repro detectors`)")
    predict.add_argument("--upsample", type=int, default=None,
                         help="HOG detector upsampling (default: the detector's, prepare.upsample for the study's)")
    predict.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                         help="inference engine of a trained model: PyTorch or ONNX Runtime (default: %(default)s)")
    predict.add_argument("--device", default="auto",
                         help="torch device of a trained model: auto, cpu, cuda (default: %(default)s)")
    predict.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                         help="faces per forward pass of a trained model (default: %(default)s)")
    predict.add_argument("--workers", type=int, default=None,
                         help="processes that read and detect images while the landmarker runs (default: one per"
                              " core; 0: all in one process)")
    predict.add_argument("-q", "--quiet", action="store_true", help="print errors only (no progress bar, no summary)")
    predict.add_argument("-v", "--verbose", action="store_true", help="also print one line per image written")
    predict.set_defaults(func=cmd_predict)

    from flmlib import mask_cli, video_cli

    mask_cli.add_parser(sub)
    video_cli.add_parser(sub)

    export = sub.add_parser(
        "export", help="export the O-Net model file to ONNX",
        description=_wrap(
            "Write the trained O-Net as ONNX (input 'images' (B, 3, 48, 48) float32 RGB 0..255, output 'points'"
            " (B, 136) box units, dynamic batch B; the model config is stored in the file's metadata), then check"
            " ONNX Runtime against PyTorch on a random batch and print the largest difference."
        ),
        epilog=_codes_text(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: %(default)s)")
    export.add_argument("--checkpoint", default=None,
                        help=f"trained model file (default: the study's {DEFAULT_CHECKPOINT} in the project folder)")
    export.add_argument("--out", default=None,
                        help="output file (default: models/onet.onnx in the project folder)")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flm``; returns the exit code (see :data:`EXIT_CODES`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if getattr(args, "workers", None) is not None and args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if getattr(args, "upsample", None) is not None and not 0 <= args.upsample <= MAX_UPSAMPLE:
        parser.error(f"--upsample must be 0..{MAX_UPSAMPLE} (each step doubles the image side), got {args.upsample}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
