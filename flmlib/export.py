"""ONNX export of a trained landmark network, and ONNX Runtime sessions for it.

The exported graph is the whole ``nn.Module.forward``: input ``images`` ``(B, 3, s, s) float32`` RGB pixels 0..255
(the network normalises them itself), output ``points`` ``(B, 136) float32`` box units, with a dynamic batch
dimension ``B``. The model config of the ``.pt`` file (crop size, context factor, normalisation, ...) is stored as
JSON in the ONNX metadata under :data:`CONFIG_KEY`, so an ``.onnx`` file is usable on its own
(:meth:`flmlib.landmarkers.ONetLandmarker.from_onnx`).

torch 2.14's default exporter (``dynamo=True``) needs the ``onnxscript`` package; this module uses the TorchScript
exporter (``dynamo=False``), which needs nothing beyond ``onnx`` and exports this plain conv/pool/PReLU/linear
network exactly.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

CONFIG_KEY = "flmlib_config"
INPUT_NAME, OUTPUT_NAME = "images", "points"
OPSET = 17


def onnx_bytes(model: torch.nn.Module, config: dict, opset: int = OPSET) -> bytes:
    """Export ``model`` (CPU copy, eval mode) to ONNX bytes with a dynamic batch and ``config`` in the metadata."""
    import onnx

    size = int(config["input_size"])
    model = model.to("cpu").eval()
    example = torch.full((2, 3, size, size), 127.0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The model's input-shape check is a Python branch the tracer cannot record; it is fixed by the export's
        # declared input shape, so the warnings about it (and the legacy exporter's deprecation notice) are noise.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config, sort_keys=True, default=str)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(model: torch.nn.Module, config: dict, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model`` as an ONNX file (see :func:`onnx_bytes`), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_bytes(model, config, opset))
    return path


def onnx_config(path: str | Path) -> dict:
    """The model config stored in an ONNX file written by :func:`export_onnx`.

    Raises:
        ValueError: the file has no flmlib config (not written by this module).
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: the file is not an ONNX model
        raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    for entry in proto.metadata_props:
        if entry.key == CONFIG_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path}: ONNX file has no {CONFIG_KEY!r} metadata; export it with `flm export`")


def onnx_session(model: bytes | str | Path, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU for ONNX bytes or a file path.

    ``threads``: intra-op threads (``None`` keeps ONNX Runtime's default, one per physical core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's InvalidProtobuf, Fail, ...: a model it cannot run
        what = source if isinstance(source, str) else "ONNX bytes"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{what}: ONNX Runtime cannot load it ({reason})") from None


def max_difference(model: torch.nn.Module, session, batch: int = 8, seed: int = 0) -> float:
    """Largest absolute difference (box units) between PyTorch and ONNX Runtime on random 0..255 inputs."""
    size = model.input_size if hasattr(model, "input_size") else session.get_inputs()[0].shape[-1]
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, 3, size, size), generator=generator) * 255
    with torch.inference_mode():
        expected = model.to("cpu").eval()(images).numpy()
    got = session.run(None, {INPUT_NAME: images.numpy()})[0]
    return float(np.abs(got - expected).max())
