import numpy as np
from conftest import coordinate_ramps

from flmlib.crops import (apply_affine, box_from_dlib, box_size, box_to_dlib, box_units_to_image, context_matrix,
                          crop_affine, crop_context, crop_to_box_units, image_to_box_units, invert_affine, iou,
                          landmark_box,
                          shrink_factor)


def test_crop_then_inverse_returns_points_exactly():
    rng = np.random.default_rng(0)
    points = rng.uniform(40, 160, size=(68, 2))
    box = np.array([50.3, 61.7, 149.1, 151.2])
    matrix = context_matrix(box, 96, 2.0)
    back = apply_affine(apply_affine(points, matrix), invert_affine(matrix))
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_box_edges_land_on_the_central_half_of_the_crop():
    box = np.array([10.0, 20.0, 90.0, 100.0])
    corners = apply_affine(np.array([[box[0], box[1]], [box[2], box[3]]]), context_matrix(box, 96, 2.0))
    np.testing.assert_allclose(corners, [[23.5, 23.5], [71.5, 71.5]])  # pixel edges of the central 48 px
    np.testing.assert_allclose(crop_to_box_units(corners, 96, 2.0), [[0, 0], [1, 1]])


def test_crop_pixels_follow_the_points():
    """A bright dot drawn at a landmark is found at that landmark's crop coordinates."""
    image = np.zeros((300, 400, 3), np.uint8)
    dot = np.array([187.0, 143.0])
    image[143, 187] = 255
    box = np.array([120.5, 90.5, 240.5, 210.5])  # 120 px: scale 96/240 = 0.4 (area pre-shrink path)
    crop, matrix = crop_context(image, box, 96, 2.0)
    where = apply_affine(dot, matrix)
    brightest = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])[::-1]
    assert np.abs(np.array(brightest) - where).max() <= 1.0


def test_crop_upscale_path_is_centred():
    image = np.zeros((100, 100, 3), np.uint8)
    image[50, 50] = 255
    box = np.array([40.5, 40.5, 60.5, 60.5])  # 20 px box -> 2.4x upscale
    crop, matrix = crop_context(image, box, 96, 2.0)
    where = apply_affine([50.0, 50.0], matrix)
    brightest = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])[::-1]
    assert np.abs(np.array(brightest) - where).max() <= 1.0


def test_context_outside_the_image_is_not_black():
    image = np.full((50, 50, 3), 200, np.uint8)
    crop, _ = crop_context(image, np.array([0.0, 0.0, 40.0, 40.0]), 96, 2.0)
    assert crop.min() == 200


def test_box_units_round_trip():
    rng = np.random.default_rng(1)
    boxes = np.array([[10, 20, 110, 140], [0, 0, 50, 50]], np.float64)
    points = rng.uniform(0, 100, size=(2, 68, 2))
    np.testing.assert_allclose(box_units_to_image(image_to_box_units(points, boxes), boxes), points)


def test_iou_on_synthetic_boxes():
    box = np.array([0, 0, 10, 10])
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(iou(box, others), [1.0, 50 / 150, 0.0, 0.25])


def test_box_helpers():
    pts = np.array([[1, 2], [5, 10], [3, 4]], np.float32)
    np.testing.assert_array_equal(landmark_box(pts), [1, 2, 5, 10])
    assert box_size(np.array([0, 0, 4, 9])) == 6.0


def test_dlib_rectangle_round_trip():
    import dlib

    rect = dlib.rectangle(10, 20, 89, 99)
    box = box_from_dlib(rect)
    assert box[2] - box[0] == rect.width()
    assert box_to_dlib(box) == rect


def test_crop_depends_only_on_the_region_around_the_box():
    """The crop reads only the context region, so the rest of a large photo cannot change it (or slow it down)."""
    rng = np.random.default_rng(2)
    face = rng.integers(0, 256, size=(400, 400, 3), dtype=np.uint8)
    box = np.array([100.3, 110.8, 290.1, 300.6])  # 190 px: pre-shrink by k = 2 into a 96 px crop
    large = rng.integers(0, 256, size=(2000, 3000, 3), dtype=np.uint8)
    large[:400, :400] = face
    large[:400, 400:] = 0  # content right next to the context region, which ends near x = 385
    crop, matrix = crop_context(face, box, 96, 2.0)
    crop_large, matrix_large = crop_context(large, box, 96, 2.0)
    np.testing.assert_array_equal(matrix, matrix_large)
    inside = crop[:, :90]  # the columns whose bilinear footprint stays left of x = 400 in both images
    np.testing.assert_array_equal(crop_large[:, :90], inside)


def test_strong_downscale_is_anti_aliased():
    """Single-pixel stripes shrunk 6x average to flat grey; bilinear sampling alone would return stripes."""
    image = np.zeros((1200, 1200, 3), np.uint8)
    image[:, ::2] = 255
    crop, _ = crop_context(image, np.array([300.0, 300.0, 876.0, 876.0]), 96, 2.0)  # 1152 px context -> 96 px
    assert abs(float(crop.mean()) - 127.5) < 3
    assert crop.std() < 3


def test_box_far_outside_a_tiny_image_replicates_its_edge():
    image = np.full((3, 5, 3), 90, np.uint8)
    crop, _ = crop_context(image, np.array([500.0, 600.0, 900.0, 1000.0]), 96, 2.0)
    assert crop.shape == (96, 96, 3) and (crop == 90).all()


def test_crop_samples_the_image_where_its_matrix_says():
    """Every crop pixel centre, mapped back through the inverse matrix, is where the crop took its value."""
    image = coordinate_ramps(700, 900)
    boxes = [[400.3, 300.7, 440.1, 341.2],  # upscale, k = 1
             [300.5, 200.25, 421.0, 320.0],  # k = 2 for a 96 px crop
             [250.2, 150.9, 531.7, 433.3],  # k = 4
             [370.0, 260.0, 470.0, 360.0]]  # square, k = 2
    for box in boxes:
        for size, factor in ((96, 2.0), (48, 1.0)):
            crop, matrix = crop_context(image, np.array(box), size, factor)
            grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), axis=-1).astype(np.float64)
            expected = apply_affine(grid, invert_affine(matrix))
            np.testing.assert_allclose(crop[..., :2], expected, atol=0.01, err_msg=f"box {box}, {size} px")


def test_image_edge_pixels_are_replicated_even_off_the_shrink_grid():
    image = np.zeros((700, 807, 3), np.uint8)
    image[:, -7:] = 255  # 807 = 100 * 8 + 7: the last 7 columns lie outside the 8-pixel grid
    box = np.array([600.0, 100.0, 1100.0, 600.0])  # scale 96 / 1000: k = 8; the context runs past the right edge
    crop, matrix = crop_context(image, box, 96, 2.0)
    assert shrink_factor(matrix[0, 0], 700) == 8
    beyond = apply_affine([[806.5, 350.0]], matrix)[0, 0]  # crop x of the image's right edge
    assert (crop[:, int(np.ceil(beyond)) + 1 :] == 255).all()


def _rotation(angle_deg: float, scale: float, centre_image, centre_crop) -> np.ndarray:
    """Image -> crop similarity: rotate by angle and scale about centre_image, which lands on centre_crop."""
    a = np.deg2rad(angle_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([linear, (np.asarray(centre_crop) - linear @ np.asarray(centre_image))[:, None]], axis=1)


def test_rotated_crop_samples_the_image_where_its_matrix_says():
    """crop_affine with a rotating similarity: each crop pixel holds the image at its pre-image (every shrink k)."""
    image = coordinate_ramps(700, 900)
    for angle, scale in ((20.0, 1.7), (-35.0, 0.6), (10.0, 0.3), (80.0, 0.2)):  # k = 1, 1, 2, 4
        matrix = _rotation(angle, scale, (430.0, 350.0), (47.5, 47.5))
        crop = crop_affine(image, matrix, 96)
        grid = np.stack(np.meshgrid(np.arange(96), np.arange(96)), axis=-1).astype(np.float64)
        expected = apply_affine(grid, invert_affine(matrix))
        np.testing.assert_allclose(crop[..., :2], expected, atol=0.01, err_msg=f"angle {angle}, scale {scale}")


def test_rotated_strong_downscale_is_anti_aliased():
    image = np.zeros((1200, 1200, 3), np.uint8)
    image[:, ::2] = 255
    crop = crop_affine(image, _rotation(30.0, 1 / 8, (600.0, 600.0), (47.5, 47.5)), 96)
    assert abs(float(crop.mean()) - 127.5) < 3
    assert crop.std() < 3


def test_crop_affine_of_a_context_matrix_is_the_context_crop():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    box = np.array([120.3, 90.8, 241.1, 209.6])
    crop, matrix = crop_context(image, box, 96, 2.0)
    np.testing.assert_array_equal(crop_affine(image, matrix, 96), crop)
