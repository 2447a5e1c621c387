"""The report's mask gallery: one row per face, the plain crop and one crop per mask."""
import numpy as np
import pytest

from flmlib.gallery import mask_gallery
from flmlib.io import read_image, read_pts
from flmlib.masks import list_masks


def test_gallery_has_a_row_per_face_and_a_column_per_mask(data_root):
    jpg = sorted((data_root / "300w/helen/testset").glob("*.jpg"))[0]
    image, points = read_image(jpg), read_pts(jpg.with_suffix(".pts"))
    box = np.concatenate([points.min(0), points.max(0)]).astype(np.float32)
    unplaced = np.full((68, 2), np.nan, np.float32)  # a face the method could not place: shown without masks
    fig = mask_gallery([image, image], np.stack([points, unplaced]), np.stack([box, box]), method="dlib")
    axes = fig.get_axes()
    assert len(axes) == 2 * (len(list_masks()) + 1)
    assert [ax.get_title() for ax in axes[: len(list_masks()) + 1]] == ["face"] + [n for n, _ in list_masks()]
    first_row = [ax.get_images()[0].get_array() for ax in axes[: len(list_masks()) + 1]]
    assert all(not np.array_equal(first_row[0], masked) for masked in first_row[1:])  # every mask drew something
    second_row = [ax.get_images()[0].get_array() for ax in axes[len(list_masks()) + 1 :]]
    assert all(np.array_equal(second_row[0], same) for same in second_row[1:])
    with pytest.raises(ValueError, match="68, 2"):
        mask_gallery([image], points[None, :10], box[None], method="dlib")
