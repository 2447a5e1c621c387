"""Batched crop plans (flmlib.landmarkers.crop_plans) cut exactly the pixels of flmlib.crops.crop_affine."""
import numpy as np
import pytest

from flmlib.crops import context_matrix, crop_affine
from flmlib.landmarkers.crop_plans import context_matrices, cut_planned, plan_crops


def similarity(scale, angle_deg, tx, ty):
    a, b = scale * np.cos(np.radians(angle_deg)), scale * np.sin(np.radians(angle_deg))
    return np.array([[a, -b, tx], [b, a, ty]])


def random_cases(rng, n):
    """Images of several sizes (one tiny, which caps the pre-shrink) with similarities and scalings, some of them
    reaching past the image border."""
    images, matrices = [], []
    for i in range(n):
        h, w = (7, 5) if i % 11 == 0 else tuple(rng.integers(40, 400, 2))
        images.append(rng.integers(0, 256, (h, w, 3), np.uint8))
        scale = float(rng.choice([2.0, 1.0, 0.7, 0.3, 0.12, 0.04]) * rng.uniform(0.8, 1.2))
        if i % 3 == 0:  # axis-aligned: the context crops' path
            matrices.append(np.array([[scale, 0, rng.uniform(-30, 10)], [0, scale * rng.uniform(0.8, 1.2), rng.uniform(-30, 10)]]))
        else:
            matrices.append(similarity(scale, rng.uniform(-60, 60), rng.uniform(-40, 20), rng.uniform(-40, 20)))
    return images, np.stack(matrices)


@pytest.mark.parametrize("size", [40, 48, 96])
def test_planned_crops_are_crop_affine_pixel_for_pixel(size):
    rng = np.random.default_rng(size)
    images, matrices = random_cases(rng, 120)
    plans = plan_crops(np.array([im.shape[:2] for im in images]), matrices, size)
    assert plans.shrink.min() == 1 and plans.shrink.max() >= 8  # both ends of the pre-shrink are exercised
    for i, (image, matrix) in enumerate(zip(images, matrices)):
        np.testing.assert_array_equal(cut_planned(image, plans, i), crop_affine(image, matrix, size), err_msg=f"case {i}")


def test_planned_crops_keep_a_float_image_float():
    xs, ys = np.meshgrid(np.arange(64, dtype=np.float32), np.arange(50, dtype=np.float32))
    ramp = np.dstack([xs, ys, np.zeros_like(xs)])
    matrix = similarity(0.5, 20, 3, -4)
    crop = cut_planned(ramp, plan_crops(np.array([ramp.shape[:2]]), matrix[None], 24), 0)
    assert crop.dtype == np.float32
    np.testing.assert_array_equal(crop, crop_affine(ramp, matrix, 24))


def test_context_matrices_are_context_matrix_bit_for_bit():
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 400, (50, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 200, (50, 2))], axis=1).astype(np.float32)
    for size, factor in [(96, 2.0), (40, 1.0), (80, 2.0)]:
        batched = context_matrices(boxes, size, factor)
        assert np.array_equal(batched, np.stack([context_matrix(b, size, factor) for b in boxes]))


def test_a_box_with_no_area_is_named():
    with pytest.raises(ValueError, match=r"box 1 \(10.0, 10.0, 10.0, 30.0\) has no area"):
        context_matrices(np.array([[0, 0, 20, 20], [10, 10, 10, 30]], np.float32), 48, 1.0)


def test_counts_must_agree():
    with pytest.raises(ValueError, match="2 image shapes but 1 matrices"):
        plan_crops(np.array([[10, 10], [20, 20]]), similarity(1, 0, 0, 0)[None], 8)


def test_no_faces_plan_nothing():
    plans = plan_crops(np.zeros((0, 2), np.int64), np.zeros((0, 2, 3)), 48)
    assert plans.shrink.shape == (0,) and plans.regions.shape == (0, 4) and plans.warps.shape == (0, 2, 3)


def test_a_crop_placed_absurdly_far_away_reads_what_crop_affine_reads():
    """Edges beyond int64 are held where the region clamps saturate anyway: the same pixels, no overflow."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (60, 80, 3), np.uint8)
    matrices = np.array([[[1.0, 0.0, 1e20], [0.0, 1.0, 1e20]], [[1.0, 0.0, -1e20], [0.0, 1.0, -1e20]],
                         similarity(1e-25, 30, -1e3, 5), similarity(0.5, 10, 3e19, -2e19)])
    plans = plan_crops(np.array([image.shape[:2]] * len(matrices)), matrices, 16)
    for i, matrix in enumerate(matrices):
        np.testing.assert_array_equal(cut_planned(image, plans, i), crop_affine(image, matrix, 16), err_msg=f"case {i}")


@pytest.mark.parametrize("bad", [[[np.nan, 0, 0], [0, 1, 0]], [[1, 0, np.inf], [0, 1, 0]], [[0, 0, 5], [0, 0, 5]],
                                 [[0.5, 0, 5], [0, 0, 5]], [[1, 2, 0], [2, 4, 0]]])
def test_a_map_that_is_not_finite_or_not_invertible_is_named(bad):
    matrices = np.stack([similarity(0.5, 0, 0, 0)] * 5 + [np.array(bad, np.float64)])
    with pytest.raises(ValueError, match="face 5: its image -> crop map .* is not finite or not invertible"):
        plan_crops(np.array([[50, 50]] * 6), matrices, 16)


@pytest.mark.parametrize("n_faces", [3, 4, 40])  # below MIN_FACES_TO_PLAN (crop_affine per face), at it, and threaded
def test_the_cutter_cuts_the_aligned_crops_of_flmlib_alignment(n_faces):
    import torch

    from flmlib.alignment import aligned_crops
    from flmlib.landmarkers.crop_geometry import CropCutter

    rng = np.random.default_rng(n_faces)
    images, matrices = random_cases(rng, n_faces)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        crops = CropCutter().cut_affine(images, matrices, 48)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(crops, aligned_crops(images, matrices, 48))


def test_the_cutter_names_a_bad_map_and_counts_that_differ():
    from flmlib.landmarkers.crop_geometry import CropCutter

    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="face 1: its image -> crop map"):
        CropCutter().cut_affine([image, image], np.stack([similarity(1, 0, 0, 0), np.zeros((2, 3))]), 8)
    with pytest.raises(ValueError, match="1 images but 2 matrices"):
        CropCutter().cut_affine([image], np.stack([similarity(1, 0, 0, 0)] * 2), 8)
    with pytest.raises(ValueError, match="1 images but 2 box arrays"):
        CropCutter().cut([image], [np.array([[0, 0, 10, 10]], np.float32)] * 2, 8, 1.0)
