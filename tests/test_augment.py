import numpy as np
import pytest
import torch

from flmlib.augment import (AugmentConfig, augment, box_matrices, central_box, hflip, identity_params, points_to_box_units,
                            sample_params, warp)
from flmlib.bench_train import synthetic_arrays
from flmlib.crops import crop_to_box_units
from flmlib.landmarks68 import MIRROR, MIRROR_PAIRS_1BASED, REGIONS

S, CF, OUT = 96, 2.0, 48


def _batch(n=8, seed=0):
    data = synthetic_arrays(n, seed)
    return torch.from_numpy(np.ascontiguousarray(data["crops"].transpose(0, 3, 1, 2))), torch.from_numpy(data["landmarks"])


# ---- the 68-point mark-up


def test_mirror_is_an_involution_matching_the_guide_pairs():
    assert (MIRROR[MIRROR] == np.arange(68)).all()
    for a, b in MIRROR_PAIRS_1BASED:
        assert MIRROR[a - 1] == b - 1 and MIRROR[b - 1] == a - 1
    # points on the symmetry axis (GUIDE, 1-based): 9, 28-31, 34, 52, 58, 63, 67
    assert list(np.flatnonzero(MIRROR == np.arange(68)) + 1) == [9, 28, 29, 30, 31, 34, 52, 58, 63, 67]
    assert MIRROR[36] == 45  # outer eye corners swap


def test_regions_partition_the_68_points():
    assert sorted(np.concatenate(list(REGIONS.values())).tolist()) == list(range(68))
    assert set(REGIONS) == {"jaw", "brows", "nose", "eyes", "mouth"}


# ---- eval path and flips


def test_without_augmentation_the_output_is_the_central_box():
    crops, points = _batch()
    images, units = augment(crops, points, None)
    assert images.shape == (8, 3, 48, 48) and units.shape == (8, 68, 2)
    assert torch.allclose(images, crops[:, :, 24:72, 24:72].float(), atol=5e-3)
    assert np.allclose(units.numpy(), crop_to_box_units(points.numpy(), S, CF), atol=1e-5)
    assert torch.equal(central_box(crops, OUT, CF), images)  # the inference input is the validation input


def test_flip_twice_is_identity_for_points_and_pixels():
    crops, points = _batch()
    images, units = augment(crops, points, None)
    once_images, once_units = hflip(images, units)
    assert not torch.equal(once_images, images) and not torch.allclose(once_units, units)
    twice_images, twice_units = hflip(once_images, once_units)
    assert torch.equal(twice_images, images)
    assert torch.allclose(twice_units, units, atol=1e-7)


def test_warp_flip_equals_flipping_the_plain_box():
    crops, points = _batch()
    params = identity_params(8)
    params["flip"][:] = True
    mats = box_matrices(params, S, CF)
    flipped_images, flipped_units = warp(crops, mats, OUT), points_to_box_units(points, mats, params["flip"])
    expect_images, expect_units = hflip(*augment(crops, points, None))
    assert torch.allclose(flipped_images, expect_images, atol=5e-3)
    assert torch.allclose(flipped_units, expect_units, atol=1e-5)


# ---- geometry: the matrix on the points is the warp of the pixels


def _blob_image(centres: np.ndarray, sigma: float = 2.0) -> torch.Tensor:
    """One Gaussian blob per channel at ``centres`` (3, 2) crop pixels: ``(1, 3, S, S)`` float 0..255."""
    yy, xx = np.mgrid[0:S, 0:S]
    chans = [np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)) * 255 for cx, cy in centres]
    return torch.tensor(np.stack(chans)[None], dtype=torch.float32)


def test_affine_on_points_matches_marks_found_in_the_warped_image():
    rng = np.random.default_rng(3)
    config = AugmentConfig(flip=0.5, shift=0.08, scale=0.15, rotate=30, brightness=0, contrast=0)
    gen = torch.Generator().manual_seed(5)
    # landmarks 0 (jaw end), 16 (its mirror partner) and 30 (nose tip, on the axis) carry the marks
    marked = [0, 16, 30]
    flips_seen = set()
    for trial in range(6):
        points = torch.tensor(rng.uniform(35, 61, (1, 68, 2)), dtype=torch.float32)
        image = _blob_image(points[0, marked].numpy())
        twin = torch.Generator()
        twin.set_state(gen.get_state())
        flipped = bool(sample_params(1, config, twin)["flip"][0])  # the draw augment() is about to make
        out, units = augment(image, points, config, gen)
        flips_seen.add(flipped)
        yy, xx = np.mgrid[0:OUT, 0:OUT]
        for channel, source in enumerate(marked):
            target = MIRROR[source] if flipped else source  # where source point i went after renumbering
            expect = units[0, target].numpy() * OUT - 0.5  # box units -> output pixel centres
            heat = out[0, channel].numpy()
            heat = np.where(heat > 0.2 * heat.max(), heat, 0)  # keep the blob, drop far-tail interpolation noise
            found = np.array([(heat * xx).sum(), (heat * yy).sum()]) / heat.sum()
            assert np.abs(found - expect).max() < 0.35, (trial, source, found, expect)
    assert flips_seen == {True, False}


# ---- no padding


def _extreme_params(config: AugmentConfig) -> dict:
    """Every corner of the allowed range: max scale, +-max rotation, +-max shift on both axes, both flips."""
    combos = [(a, sx, sy, f) for a in (-1, 1) for sx in (-1, 1) for sy in (-1, 1) for f in (False, True)]
    n = len(combos)
    params = identity_params(n)
    params["angle"] = torch.tensor([a * np.radians(config.rotate) for a, *_ in combos], dtype=torch.float64)
    params["scale"] = torch.full((n,), 1 + config.scale, dtype=torch.float64)
    params["shift_x"] = torch.tensor([sx * config.shift for _, sx, _, _ in combos], dtype=torch.float64)
    params["shift_y"] = torch.tensor([sy * config.shift for _, _, sy, _ in combos], dtype=torch.float64)
    params["flip"] = torch.tensor([f for *_, f in combos])
    return params


def test_rotated_samples_contain_no_padding():
    config = AugmentConfig(flip=0.5, shift=0.1, scale=0.15, rotate=30, brightness=0, contrast=0)
    config.check(S, CF, OUT)
    ones = torch.ones(16, 3, S, S)
    # grid_sample pads with zeros, so any padding pixel would pull an output below 1
    out = warp(ones, box_matrices(_extreme_params(config), S, CF), OUT)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)
    out, _ = augment(torch.ones(64, 3, S, S), torch.full((64, 68, 2), 47.5), config, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)


def test_the_padding_check_can_fail_and_the_config_check_rejects_such_limits():
    too_far = AugmentConfig(flip=0, shift=0.3, scale=0.3, rotate=40, brightness=0, contrast=0)
    out = warp(torch.ones(16, 3, S, S), box_matrices(_extreme_params(too_far), S, CF), OUT)
    assert out.min() < 0.99  # the same probe does see padding when the box leaves the crop
    with pytest.raises(ValueError, match="context crop"):
        too_far.check(S, CF, OUT)
    with pytest.raises(ValueError, match="context crop"):
        augment(torch.ones(2, 3, S, S), torch.zeros(2, 68, 2), too_far, torch.Generator())


def test_bad_strengths_are_rejected():
    for bad in (dict(flip=1.5), dict(rotate=-1.0), dict(contrast=1.0), dict(shift=float("nan"))):
        with pytest.raises(ValueError):
            AugmentConfig(**bad).check(S, CF, OUT)


# ---- photometric, switches, seeds


def test_brightness_and_contrast():
    crops, points = _batch()
    plain, _ = augment(crops, points, None)
    gen = torch.Generator().manual_seed(0)
    bright, _ = augment(crops, points, AugmentConfig.off().__class__(**{**AugmentConfig.off().as_dict(), "brightness": 0.2}), gen)
    diff = (bright - plain).mean(dim=(1, 2, 3))
    assert diff.abs().max() > 1 and diff.abs().max() <= 0.2 * 255 + 1e-3
    assert bright.min() >= 0 and bright.max() <= 255
    gen = torch.Generator().manual_seed(0)
    contrast, _ = augment(crops, points, AugmentConfig(**{**AugmentConfig.off().as_dict(), "contrast": 0.5}), gen)
    ratio = contrast.std(dim=(1, 2, 3)) / plain.std(dim=(1, 2, 3))
    assert (ratio - 1).abs().max() > 0.05 and ((ratio > 0.45) & (ratio < 1.55)).all()


def test_switched_off_augmentation_is_the_plain_box_and_seeds_repeat():
    crops, points = _batch()
    off, off_units = augment(crops, points, AugmentConfig.off(), torch.Generator().manual_seed(1))
    plain, plain_units = augment(crops, points, None)
    assert torch.allclose(off, plain) and torch.allclose(off_units, plain_units)
    a = augment(crops, points, AugmentConfig(), torch.Generator().manual_seed(7))
    b = augment(crops, points, AugmentConfig(), torch.Generator().manual_seed(7))
    c = augment(crops, points, AugmentConfig(), torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_sample_params_ranges():
    config = AugmentConfig(flip=0.5, shift=0.05, scale=0.1, rotate=15, brightness=0.1, contrast=0.2)
    p = sample_params(4000, config, torch.Generator().manual_seed(0))
    assert p["angle"].abs().max() <= np.radians(15) and p["angle"].abs().max() > np.radians(14)
    assert p["scale"].min() >= 1 / 1.1 - 1e-12 and p["scale"].max() <= 1.1 + 1e-12
    assert 0.45 < p["flip"].double().mean() < 0.55
    assert p["shift_x"].abs().max() <= 0.05 and p["contrast"].min() >= 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_runs_on_the_gpu():
    crops, points = _batch()
    a = augment(crops.cuda(), points.cuda(), AugmentConfig(), torch.Generator().manual_seed(0))
    b = augment(crops, points, AugmentConfig(), torch.Generator().manual_seed(0))
    assert a[0].is_cuda and torch.allclose(a[0].cpu(), b[0], atol=1e-2)
