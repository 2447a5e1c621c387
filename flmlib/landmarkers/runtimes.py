"""How a landmark CNN is run: PyTorch (eager or ``torch.compile``, fp32 or bf16 autocast) or ONNX Runtime.

Every runtime maps network inputs ``(n, 3, s, s) float32`` RGB 0..255 (one chunk) to the network's output
``(n, 136) float32`` box units, as a numpy array on the CPU.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

BACKENDS = ("torch", "compile", "onnx")
#: ``bf16`` runs the torch backends under ``torch.autocast`` (bfloat16 convolutions and matmuls, float32 output):
#: faster on CPUs with AVX-512 BF16 / AMX, at the cost of ~1e-3 box units of rounding (the benchmark measures it),
#: but several times slower on CPUs without them (emulated). ``auto`` picks bf16 only where the hardware runs it
#: natively (:func:`resolve_precision`).
PRECISIONS = ("fp32", "bf16", "auto")

#: CPU flags of native bfloat16 arithmetic (``/proc/cpuinfo``): AVX-512 BF16, AMX.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (an empty set where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for a torch runtime on ``device``: ``auto`` is bf16 on a CUDA GPU that supports it and on
    a CPU with native bf16 (:data:`NATIVE_BF16_FLAGS`) that oneDNN is allowed to use (``ONEDNN_MAX_CPU_ISA`` or
    ``ATEN_CPU_CAPABILITY`` capped below AVX-512 turn it off), fp32 elsewhere; ``fp32`` and ``bf16`` stay as they are."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; torch runtimes take {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu" or not NATIVE_BF16_FLAGS & cpu_flags():
        return "fp32"
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        onednn_bf16 = False
    return "bf16" if onednn_bf16 else "fp32"


def cpp_compiler() -> str | None:
    """The C++ compiler ``torch.compile`` would build CPU kernels with (``$CXX``, else g++, c++ or clang++), or
    ``None`` when there is none on the PATH."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for path in map(shutil.which, names) if path), None)


class TorchRuntime:
    """A torch model (``compile=True``: compiled with ``torch.compile`` on first use) on ``device``.

    On a CPU without a C++ compiler, ``compile=True`` warns and runs the model eagerly (:attr:`compiled` says which).
    ``forward`` replaces the model call (the benchmark times layout variants with it); it must compute exactly what
    the model computes.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32", compile: bool = False,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model = model.to(device).eval()
        self.device, self.precision = device, resolve_precision(precision, device)
        if compile and device.type == "cpu" and forward is None and cpp_compiler() is None:
            warnings.warn("torch.compile needs a C++ compiler on the CPU (g++, c++ or clang++; none on the PATH): "
                          "running the model eagerly", RuntimeWarning, stacklevel=2)
            compile = False
        self.compiled = compile and forward is None
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
