"""How a landmark CNN is run: PyTorch (eager or ``torch.compile``, fp32 or bf16 autocast) or ONNX Runtime.

Every runtime maps network inputs ``(n, 3, s, s) float32`` RGB 0..255 (one chunk) to the network's output
``(n, 136) float32`` box units, as a numpy array on the CPU.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

BACKENDS = ("torch", "compile", "onnx")
#: ``bf16`` runs the torch backends under ``torch.autocast`` (bfloat16 convolutions and matmuls, float32 output):
#: faster on CPUs with AVX-512 BF16 / AMX, at the cost of ~1e-3 box units of rounding (the benchmark measures it).
PRECISIONS = ("fp32", "bf16")


class TorchRuntime:
    """A torch model (``compile=True``: compiled with ``torch.compile`` on first use) on ``device``.

    ``forward`` replaces the model call (the benchmark times layout variants with it); it must compute exactly what
    the model computes.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32", compile: bool = False,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; torch runtimes take {PRECISIONS}")
        self.model = model.to(device).eval()
        self.device, self.precision = device, precision
        self.forward = forward if forward is not None else (torch.compile(self.model) if compile else self.model)

    @torch.inference_mode()
    def __call__(self, chunk: torch.Tensor) -> np.ndarray:
        # One memory layout for every caller (the model runs channels-last anyway), so a compiled model is not
        # recompiled for inputs that differ only in strides. (The landmarker makes inference tensors, for the same
        # reason.)
        chunk = chunk.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.forward(chunk).float().cpu().numpy()


class OnnxRuntime:
    """An ``onnxruntime.InferenceSession`` of an exported model (:mod:`flmlib.export`), on the CPU, fp32."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, chunk: torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(chunk.detach().cpu().numpy(), np.float32)
        return self.session.run(None, {self.input_name: array})[0]
