import numpy as np
import pytest

from flmlib.alignment import (INNER_POINTS, aligned_crops, alignment_matrices, box_in_crop, invert_matrices,
                              map_points, mean_shape, similarity_matrices)
from flmlib.crops import context_matrix, crop_context


def _similarity(angle_deg, scale, shift):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def _mean_face(rng):
    return rng.uniform(0.1, 0.9, size=(68, 2))


def test_inner_points_leave_out_the_jaw():
    assert INNER_POINTS.tolist() == list(range(17, 68))


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 100, size=(51, 2))
    truth = np.stack([_similarity(25, 1.7, (10, -4)), _similarity(-70, 0.3, (-200, 35))])
    # points that map exactly onto the targets under each truth transform
    points = map_points(np.broadcast_to(targets, (2, 51, 2)), invert_matrices(truth))
    np.testing.assert_allclose(similarity_matrices(points, targets), truth, atol=1e-9)


def test_similarity_is_the_least_squares_fit_under_noise():
    rng = np.random.default_rng(1)
    targets = rng.uniform(0, 100, size=(51, 2))
    points = map_points(np.broadcast_to(targets, (1, 51, 2)), invert_matrices(_similarity(12, 2.0, (5, 7))[None]))
    points = points + rng.normal(0, 0.5, points.shape)
    fitted = similarity_matrices(points, targets)
    residual = np.square(map_points(points, fitted) - targets).sum()
    for delta in (1e-3, -1e-3):  # any nearby similarity fits worse
        for i, j in ((0, 0), (0, 1), (0, 2), (1, 2)):
            other = fitted.copy()
            other[0, i, j] += delta
            if (i, j) == (0, 0):
                other[0, 1, 1] += delta
            if (i, j) == (0, 1):
                other[0, 1, 0] -= delta
            assert np.square(map_points(points, other) - targets).sum() > residual


def test_degenerate_points_are_named():
    points = np.zeros((3, 51, 2))
    points[0] = np.random.default_rng(2).uniform(0, 10, (51, 2))
    points[2, 4] = np.nan
    with pytest.raises(ValueError, match="face index 1 "):
        similarity_matrices(points, np.ones((51, 2)))


def test_alignment_puts_the_mean_face_in_the_crops_box():
    """A face that is the mean shape, rotated and scaled in the image, lands on the mean shape in the crop's box."""
    rng = np.random.default_rng(3)
    mean = _mean_face(rng)
    box = box_in_crop(96, 2.0)
    in_crop = box[:2] + mean * (box[2:] - box[:2])
    truth = _similarity(-30, 0.4, (20, 15))  # image -> crop
    image_points = map_points(in_crop[None], invert_matrices(truth[None]))
    matrices = alignment_matrices(image_points, mean, 96, 2.0)
    np.testing.assert_allclose(matrices[0], truth, atol=1e-9)
    np.testing.assert_allclose(map_points(image_points, matrices)[0], in_crop, atol=1e-9)


def test_box_in_crop_is_where_a_context_crop_puts_its_face_box():
    box = np.array([10.0, 20.0, 90.0, 100.0])
    m = context_matrix(box, 96, 2.0)
    corners = np.array([[box[0], box[1]], [box[2], box[3]]]) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(box_in_crop(96, 2.0), corners.ravel())


def test_an_upright_mean_face_is_aligned_like_its_context_crop():
    """Faces whose points are the mean shape in their box need no rotation: the aligned crop is the context crop."""
    rng = np.random.default_rng(4)
    mean = _mean_face(rng)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    box = np.array([100.0, 60.0, 180.0, 140.0])
    points = box[:2] + mean * (box[2:] - box[:2])
    matrices = alignment_matrices(points[None], mean, 96, 2.0)
    np.testing.assert_allclose(matrices[0], context_matrix(box, 96, 2.0), atol=1e-9)
    crop, _ = crop_context(image, box, 96, 2.0)
    diff = np.abs(aligned_crops([image], matrices, 96)[0].astype(int) - crop.astype(int))
    assert diff.max() <= 1  # the same warp up to float rounding of the fitted matrix


def test_mean_shape_is_in_box_units():
    rng = np.random.default_rng(5)
    units = rng.uniform(0, 1, (3, 68, 2))
    boxes = np.array([[0, 0, 100, 100], [10, 20, 60, 70], [5, 5, 205, 205]], np.float64)
    points = boxes[:, None, :2] + units * (boxes[:, None, 2:] - boxes[:, None, :2])
    np.testing.assert_allclose(mean_shape(points, boxes), units.mean(0))
    with pytest.raises(ValueError, match="NaN"):
        mean_shape(np.where(np.arange(68)[None, :, None] == 3, np.nan, points), boxes)


def test_inverse_maps_aligned_points_back_to_the_image():
    rng = np.random.default_rng(6)
    points = rng.uniform(50, 150, (4, 68, 2))
    matrices = alignment_matrices(points, _mean_face(rng), 112, 2.0)
    np.testing.assert_allclose(map_points(map_points(points, matrices), invert_matrices(matrices)), points, atol=1e-9)
