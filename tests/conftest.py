"""Shared fixtures: the project root and a check that the DVC data has been pulled."""
from pathlib import Path

import numpy as np

import pytest

from flmlib.paths import PROJECT_ROOT

DATA = PROJECT_ROOT / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The pulled data folder; `make test` runs `dvc pull` first, so a missing folder is an error, not a skip."""
    if not (DATA / "300w").is_dir():
        pytest.fail(f"{DATA} is missing: run `make test` (it pulls the data) or `dvc pull`")
    return DATA


def write_pts(path: Path, points, header_n=None) -> Path:
    """Write a 300-W .pts file with 1-based coordinates."""
    n = len(points) if header_n is None else header_n
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {n}\n{{\n{body}\n}}\n")
    return path


def coordinate_ramps(h: int, w: int) -> np.ndarray:
    """``(h, w, 3) float32`` image whose channels 0 and 1 hold each pixel's own x and y: any area average or
    bilinear sample of it returns the image coordinates it was taken at."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x, y, np.zeros_like(x)], axis=-1)


def write_png_bomb(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A ~70-byte PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def constant_onet(units: np.ndarray):
    """An O-Net whose output is ``units`` ``(68, 2)`` box units for any input: head weights zero, bias the points."""
    import torch

    from flmlib.models import build_model

    model = build_model("onet").eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.as_tensor(units.reshape(-1), dtype=torch.float32))
    return model


def save_model_file(path: Path, model, mean=None) -> Path:
    """Write ``model`` as a model file of 96 px context crops (``mean``: the ``(68, 2)`` alignment mean of a second
    pass trained on aligned crops); returns ``path``."""
    import types

    from flmlib.train import TrainConfig, model_config, save_model

    split = types.SimpleNamespace(crop_size=96, context_factor=2.0, align_mean=mean)
    save_model(path, model, model_config(TrainConfig(), split, model))
    return path
