"""A landmark CNN trained by the study, behind the landmarker interface (:mod:`flmlib.landmarkers.base`).

:class:`CNNLandmarker` runs any network of :mod:`flmlib.models` from a model file written by
:func:`flmlib.train.save_model` (``models/<id>.pt``) or an ONNX export. The model file carries its own input spec
(``input_size``, ``crop_size``, ``context_factor``, pixel normalisation), so nothing here is specific to O-Net. The
runtime is PyTorch (eager or ``torch.compile``) or ONNX Runtime.

Preprocessing is the training code's evaluation path. Training sees :func:`flmlib.crops.crop_context` crops
(``crop_size``, ``context_factor`` from the model file) and, without augmentation, the face box resampled to the
network input (:func:`flmlib.augment.central_box`); :meth:`CNNLandmarker.predict_context_crops` runs exactly that on
prepared crops. From an image, when the box covers ``input_size`` whole pixels of the context crop (the study's 96 px
crop at factor 2, 48 px input), :meth:`CNNLandmarker.predict` cuts the network input straight from the image instead:
the same sample positions, a quarter of the pixels, equal to within one grey level. The model normalises its pixels
itself; its box-unit output goes back to image pixels with :func:`flmlib.crops.box_units_to_image`.
"""
from __future__ import annotations


from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from flmlib.crops import box_units_to_image
from flmlib.models import build_from_blob, load_trained, read_model_file
from flmlib.paths import project_path
from flmlib.point_schemes import IBUG68
from flmlib.device import resolve_device
from flmlib.landmarkers.base import DEFAULT_BATCH_SIZE, MethodSpec, check_batch, check_boxes
from flmlib.landmarkers.crop_geometry import BOX_ONLY, CropCutter, CropGeometry
from flmlib.landmarkers.runtimes import BACKENDS, PRECISIONS, OnnxRuntime, TorchRuntime

N_POINTS = 68
#: Where the study's trained O-Net lives (relative to the project root).
DEFAULT_CHECKPOINT = "models/onet.pt"


# ------------------------------------------------------------------------------------------------------ O-Net


def unmirror_box_units(units: np.ndarray) -> np.ndarray:
    """Points predicted on a left-right mirrored input ``(N, 68, 2)`` box units -> the same points on the unmirrored
    input: renumbered with the 68-point mirror permutation, x reflected about the box centre (``x -> 1 - x``; the
    crops are centred on the box, so mirroring the input mirrors the box onto itself)."""
    back = np.array(units[:, IBUG68.mirror], dtype=np.float32)
    back[..., 0] = 1.0 - back[..., 0]
    return back


def check_model_config(config: dict, source: str) -> dict:
    """Check that a model file's config carries the input spec inference needs (``model``, ``input_size``,
    ``crop_size``, ``context_factor``; ``normalisation`` is rebuilt into the model by
    :func:`flmlib.models.load_trained`), with usable values; ``ValueError`` naming ``source`` otherwise."""
    missing = [k for k in ("model", "input_size", "crop_size", "context_factor") if k not in config]
    if missing:
        raise ValueError(f"{source}: model config lacks {missing} (has {sorted(config)})")
    norm = config.get("normalisation")
    if norm is not None:
        mean, scale = np.atleast_1d(np.asarray(norm["mean"], float)), np.atleast_1d(np.asarray(norm["scale"], float))
        if not ((scale > 0).all() and np.isfinite(mean).all()):
            raise ValueError(f"{source}: pixel normalisation mean={norm['mean']}, scale={norm['scale']} is not usable")
    crop, inner = int(config["crop_size"]), float(config["crop_size"]) / float(config["context_factor"])
    if crop <= 0 or inner <= 0:
        raise ValueError(f"{source}: crop_size={config['crop_size']}, context_factor={config['context_factor']} invalid")
    return config


class CNNLandmarker:
    """A trained landmark CNN behind the landmarker interface, batched: a crop geometry
    (:class:`~flmlib.landmarkers.crop_geometry.CropGeometry`, from the model file's input spec) and a runtime
    (:mod:`~flmlib.landmarkers.runtimes`: PyTorch eager or compiled, or ONNX Runtime).

    Args:
        model: the trained network (eval mode), or ``None`` with the ``onnx`` backend.
        config: the model file's config (``input_size``, ``crop_size``, ``context_factor``, ``normalisation``).
        backend: ``torch`` (eager), ``compile`` (``torch.compile`` of the same model, compiled on first use) or
            ``onnx`` (ONNX Runtime; ``session`` must be given, see :meth:`from_checkpoint`).
        device: torch device for the ``torch``/``compile`` backends (the inputs are made there; crops are cut with
            OpenCV on the CPU).
        batch_size: images per forward pass; more faces are split into chunks of this size (of half this size, at
            least 1, with the flip test, whose forward passes also carry each face's mirror image).
        session: an ``onnxruntime.InferenceSession`` of :func:`flmlib.export.onnx_bytes` output.
        forward: replaces the model call of the torch backends (the benchmark times layout variants with it); it
            must compute exactly what ``model`` computes.
        precision: ``fp32``, ``bf16`` (torch backends only) or ``auto`` (bf16 where the hardware runs it natively,
            else fp32; see :data:`PRECISIONS`). :attr:`precision` holds the one in use.
        flip_test: also run the network on each input mirrored left-right and average the two predictions (the
            mirrored one renumbered with the 68-point mirror permutation): the field's "flip test", twice the network
            time for a lower error.
        spec: the method's spec (its id names the predictions); default: a spec named after the model file's
            architecture.
    """

    def __init__(self, model: torch.nn.Module | None, config: dict, backend: str = "torch",
                 device: str | torch.device = "cpu", batch_size: int = DEFAULT_BATCH_SIZE, session=None, source: str = "model",
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None, precision: str = "fp32",
                 spec: MethodSpec | None = None, flip_test: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
        if precision not in PRECISIONS or (precision == "bf16" and backend == "onnx"):
            raise ValueError(f"precision={precision!r} with backend {backend!r}; torch backends take {PRECISIONS},"
                             " onnx takes fp32 (or auto, which is fp32 there)")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if backend == "onnx" and session is None:
            raise ValueError("the onnx backend needs an onnxruntime session (use CNNLandmarker.from_checkpoint)")
        if backend != "onnx" and model is None:
            raise ValueError(f"the {backend} backend needs a torch model")
        self.config = check_model_config(config, source)
        self.spec = spec if spec is not None else MethodSpec(id=str(config["model"]), kind="cnn")
        self.backend, self.batch_size, self.source = backend, batch_size, source
        self.flip_test = bool(flip_test)
        self.device = resolve_device(str(device))
        self.geometry = CropGeometry.from_config(config)
        self.cutter = CropCutter()
        if backend == "onnx":
            self.runtime = OnnxRuntime(session)
        else:
            self.runtime = TorchRuntime(model, self.device, precision, compile=backend == "compile", forward=forward)
        self.model = self.runtime.model if backend != "onnx" else None
        self.precision = self.runtime.precision if backend != "onnx" else "fp32"
        if backend == "compile" and not self.runtime.compiled:  # no C++ compiler: the runtime warned, runs eagerly
            self.backend = "torch"
        self.session = session

    # The input spec, as attributes (the bench and the compare stage read them).
    input_size = property(lambda self: self.geometry.input_size)
    crop_size = property(lambda self: self.geometry.crop_size)
    context_factor = property(lambda self: self.geometry.context_factor)
    cuts_inputs_directly = property(lambda self: self.geometry.cuts_inputs_directly,
                                    doc="Whether the network input can be cut straight from the image.")

    @property
    def name(self) -> str:
        """The method id (``spec.id``)."""
        return self.spec.id

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_CHECKPOINT, device: str = "auto", backend: str = "torch",
                        batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, precision: str = "fp32",
                        spec: MethodSpec | None = None, flip_test: bool = False) -> "CNNLandmarker":
        """Load a model file written by :func:`flmlib.train.save_model` (relative paths: from the project root).

        With ``backend="onnx"`` the network is exported to ONNX in memory (:func:`flmlib.export.onnx_bytes`) and
        run by ONNX Runtime on the CPU with ``threads`` intra-op threads (``None``: ONNX Runtime's default); the
        inputs before it are still made in torch on ``device``.
        """
        path = project_path(path)
        if backend not in BACKENDS:  # before reading the file
            raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
        model, config = load_trained(path, map_location="cpu")
        return cls.from_model(model, config, source=str(path), device=device, backend=backend,
                              batch_size=batch_size, threads=threads, precision=precision, spec=spec,
                              flip_test=flip_test)

    @classmethod
    def from_model(cls, model: torch.nn.Module, config: dict, source: str = "model", device: str = "auto",
                   backend: str = "torch", batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None,
                   precision: str = "fp32", spec: MethodSpec | None = None,
                   flip_test: bool = False) -> "CNNLandmarker":
        """A loaded model and its model-file config (:func:`flmlib.models.load_trained`), run as
        :meth:`from_checkpoint` describes."""
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
        device = resolve_device(str(device))
        model = model.to("cpu" if backend == "onnx" else device)
        session = None
        if backend == "onnx":
            from flmlib.export import onnx_bytes, onnx_session

            session = onnx_session(onnx_bytes(model, config), threads=threads)
            model = None
        return cls(model, config, backend=backend, device=device, batch_size=batch_size, session=session,
                   source=source, precision=precision, spec=spec, flip_test=flip_test)

    @classmethod
    def from_onnx(cls, path: str | Path, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None,
                  spec: MethodSpec | None = None, flip_test: bool = False) -> "CNNLandmarker":
        """Load an ONNX file written by :func:`flmlib.export.export_onnx` (it carries the model config)."""
        from flmlib.export import onnx_config, onnx_session

        path = project_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model file not found")
        return cls(None, onnx_config(path), backend="onnx", batch_size=batch_size,
                   session=onnx_session(path.read_bytes(), threads=threads), source=str(path), spec=spec,
                   flip_test=flip_test)

    # -- the pieces of the pipeline, public so the benchmark can time them separately

    def network_inputs(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Context crops ``(N, S, S, 3) uint8`` -> network inputs ``(N, 3, s, s) float32`` 0..255 on the device
        (:meth:`CropGeometry.network_inputs`, training's evaluation transform)."""
        return self.geometry.network_inputs(crops, self.device)

    @torch.inference_mode()
    def run_network(self, inputs: torch.Tensor) -> np.ndarray:
        """Network inputs ``(N, 3, s, s)`` float 0..255 -> ``(N, 68, 2) float32`` box units, in forward passes of at
        most batch_size images (with :attr:`flip_test`, chunks of ``batch_size // 2`` faces, at least 1, each with its
        mirror image in the same pass, the mirrored points mapped back)."""
        out = []
        # A pass carries no more than batch_size images (2 with the flip test at batch_size 1), so that its activations
        # stay in the CPU's caches (see DEFAULT_BATCH_SIZE); the flip test would otherwise double the pass.
        step = max(1, self.batch_size // 2) if self.flip_test else self.batch_size
        for start in range(0, len(inputs), step):
            chunk = inputs[start : start + step]
            if not self.flip_test:
                out.append(self.runtime(chunk).reshape(-1, N_POINTS, 2))
                continue
            both = self.runtime(torch.cat([chunk, chunk.flip(3)])).reshape(2, len(chunk), N_POINTS, 2)
            out.append((both[0] + unmirror_box_units(both[1])) / 2)
        if not out:
            return np.zeros((0, N_POINTS, 2), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def predict_context_crops(self, crops: np.ndarray, boxes) -> np.ndarray:
        """Landmarks from ready context crops.

        Args:
            crops: ``(N, S, S, 3) uint8`` RGB context crops made by :func:`flmlib.crops.crop_context` with this
                model's ``crop_size`` and ``context_factor`` (e.g. the ``crops`` of a prepared ``.npz``).
            boxes: ``(N, 4)`` the face boxes the crops were cut around, image pixels.
        Returns:
            ``(N, 68, 2) float32`` image pixels.
        Raises:
            ValueError: wrong shapes, or a face whose network output is not finite (the message names its index).
        """
        boxes = check_boxes(boxes)
        if len(crops) != len(boxes):
            raise ValueError(f"{len(crops)} crops but {len(boxes)} boxes")
        if len(boxes) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32)
        return self.points_from_inputs(self.network_inputs(crops), boxes)

    def points_from_inputs(self, inputs: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        """Network inputs ``(N, 3, s, s)`` of ``(N, 4)`` boxes -> ``(N, 68, 2) float32`` image pixels.

        Raises ``ValueError`` when the counts differ, or naming the first face whose network output is not finite.
        """
        if len(inputs) != len(boxes):
            raise ValueError(f"{len(inputs)} network inputs but {len(boxes)} boxes")
        units = self.run_network(inputs)
        bad = ~np.isfinite(units).all(axis=(1, 2))
        if bad.any():
            faces = np.flatnonzero(bad)
            raise ValueError(
                f"{self.name} ({self.source}) gave non-finite landmarks for face index {int(faces[0])}"
                + (f" and {len(faces) - 1} more ({faces[:10].tolist()})" if len(faces) > 1 else "")
                + f" of {len(boxes)}; the model weights may be broken"
            )
        return box_units_to_image(units, boxes).astype(np.float32)

    def context_crops(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(K, S, S, 3) uint8`` context crops of ``boxes`` in ``image`` (:func:`flmlib.crops.crop_context`)."""
        return self.cut_crops([image], [boxes], self.crop_size, self.context_factor)

    def cut_crops(self, images: Sequence[np.ndarray], boxes_list: Sequence, size: int,
                  context_factor: float) -> np.ndarray:
        """``(N, size, size, 3) uint8`` crops of every face of every image, in order (:class:`CropCutter`)."""
        return self.cutter.cut(images, boxes_list, size, context_factor)

    def input_crops(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(K, s, s, 3) uint8`` network inputs cut straight from ``image``: each face box resampled to
        ``input_size`` pixels. One image's faces of :meth:`input_crops_batch`."""
        return self.input_crops_batch([image], [boxes])

    def input_crops_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> np.ndarray:
        """``(N, s, s, 3) uint8`` network inputs of every face of every image, cut straight from the images.

        Each face box is resampled to ``input_size`` pixels: :func:`flmlib.crops.crop_context` at context factor 1,
        i.e. a crop of the box itself. Needs :attr:`cuts_inputs_directly`. The pixels are sampled at the same image
        positions, with the same pre-shrink, as the central part of the context crop that training's evaluation
        path uses; they agree with it to within one grey level (OpenCV's fixed-point interpolation rounds the two
        crops' positions independently), while a quarter of the pixels is cut.
        """
        if not self.cuts_inputs_directly:
            raise ValueError(f"crop_size {self.crop_size} / context_factor {self.context_factor} does not put the"
                             f" face box on {self.input_size} whole pixels; use context_crops + network_inputs")
        return self.cut_crops(images, boxes_list, self.input_size, BOX_ONLY)

    def input_tensor(self, input_crops: np.ndarray) -> torch.Tensor:
        """:meth:`input_crops_batch` output ``(N, s, s, 3) uint8`` -> network inputs ``(N, 3, s, s) float32``
        0..255 on the device (NHWC viewed as channels-last NCHW, the layout the network runs in)."""
        return self.geometry.input_tensor(input_crops, self.device)

    def predict(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB image and ``(K, 4)`` boxes -> ``(K, 68, 2) float32`` image pixels."""
        return self.predict_batch([image], [boxes])[0]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]:
        """Many images, each with its ``(K_i, 4)`` boxes; all faces go through the network together.

        Returns a list of ``(K_i, 68, 2) float32`` image pixels.
        """
        images, boxes_list = check_batch(images, boxes_list)
        counts = [len(b) for b in boxes_list]
        if sum(counts) == 0:
            return [np.zeros((0, N_POINTS, 2), np.float32) for _ in counts]
        boxes = np.concatenate(boxes_list)
        if self.cuts_inputs_directly:
            inputs = self.input_tensor(self.input_crops_batch(images, boxes_list))
        else:
            inputs = self.network_inputs(self.cut_crops(images, boxes_list, self.crop_size, self.context_factor))
        return np.split(self.points_from_inputs(inputs, boxes), np.cumsum(counts)[:-1])


# ------------------------------------------------------------------------------------------------------ build


def build(spec: MethodSpec, checkpoint: str | Path = DEFAULT_CHECKPOINT, **kwargs) -> CNNLandmarker:
    """The landmarker of ``spec`` from ``checkpoint``: a ``.pt`` model file (kwargs: ``device``, ``backend``,
    ``batch_size``, ``threads``, ``precision``), a two-pass model file (:mod:`flmlib.landmarkers.two_pass`, the same
    kwargs) or an exported ``.onnx`` (kwargs: ``batch_size``, ``threads``)."""
    if str(checkpoint).endswith(".onnx"):
        kwargs.pop("backend", None), kwargs.pop("device", None)
        if kwargs.pop("precision", "fp32") not in ("fp32", "auto"):
            raise ValueError(f"{checkpoint}: an ONNX model runs in fp32 only")
        return CNNLandmarker.from_onnx(checkpoint, spec=spec, **kwargs)
    from flmlib.landmarkers.two_pass import TwoPassLandmarker

    path = project_path(checkpoint)
    blob = read_model_file(path)  # read once: a two-pass file holds a first model as well
    if "first_pass" in blob:
        return TwoPassLandmarker.from_blob(blob, str(path), spec=spec, **kwargs)
    return CNNLandmarker.from_model(*build_from_blob(blob, str(path)), source=str(path), spec=spec, **kwargs)
