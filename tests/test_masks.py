"""The face-filter library (flmlib.masks) and the `flm mask` subcommand (flmlib.mask_cli)."""
import argparse
import math

import cv2
import numpy as np
import pytest

from flmlib.cli import EXIT_INPUT_SKIPPED, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from flmlib.mask_cli import add_parser, run
from flmlib.masks import (CANVAS_SIZE, DEFAULT_FEATHER, MASKS, SURGICAL_ANCHORS, TEMPLATE, TEMPLATE_SCALE,
                          apply_mask, apply_masks, list_masks, make_mask)

NAMES = list(MASKS)


def face_points(eye_distance: float, centre, angle_deg: float = 0.0) -> np.ndarray:
    """``(68, 2) float32``: the template face with outer eye corners ``eye_distance`` px apart, its eye midpoint at
    ``centre`` (image pixels), rotated by ``angle_deg``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (TEMPLATE @ rot.T * eye_distance + np.asarray(centre, float)).astype(np.float32)


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(h, w, 3) uint8``: smooth random colours (a stand-in photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def composite(image: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """``rgba`` (same size) laid directly over ``image``, straight alpha, rounded to uint8."""
    a = rgba[..., 3:].astype(np.float64) / 255
    return np.clip(np.rint(image * (1 - a) + rgba[..., :3] * a), 0, 255).astype(np.uint8)


def domain(mask) -> np.ndarray:
    """``(h, w) bool``: mask-image pixels inside the triangulation of its anchors."""
    cover = np.zeros(mask.image.shape[:2], np.uint8)
    for tri in mask.triangles:
        cv2.fillConvexPoly(cover, np.round(mask.anchors[tri] * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    return cover.astype(bool)


# ---------------------------------------------------------------------------------------------------- library


def test_library_has_the_required_masks():
    listed = list_masks()
    assert {"surgical", "sunglasses", "moustache", "carnival"} <= {name for name, _ in listed}
    assert [name for name, _ in listed] == NAMES
    for _, description in listed:
        assert description and "\n" not in description


@pytest.mark.parametrize("name", NAMES)
def test_mask_is_well_formed(name):
    mask = MASKS[name]
    width, height = CANVAS_SIZE
    assert mask.image.shape == (height, width, 4) and mask.image.dtype == np.uint8
    k = len(mask.anchors)
    assert mask.weights.shape == (k, 68) and np.allclose(mask.weights.sum(axis=1), 1)
    assert np.allclose(mask.anchors, mask.weights @ mask.template)
    assert ((mask.anchors >= 0) & (mask.anchors <= (width - 1, height - 1))).all()
    assert (mask.landmarks >= 0).sum() >= 4  # follows real landmarks, not only frame points
    assert mask.triangles.min() >= 0 and mask.triangles.max() < k
    alpha = mask.image[..., 3]
    assert (alpha == 255).sum() > 2000  # there is something to see
    # Everything drawn lies inside the warp domain (the triangulated anchors): nothing would be cut off.
    assert alpha[~cv2.dilate(domain(mask).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)].max() == 0


# ---------------------------------------------------------------------------------------------------- warping


@pytest.mark.parametrize("name", NAMES)
def test_warp_onto_its_own_anchors_reproduces_the_mask(name):
    mask = MASKS[name]
    height, width = mask.image.shape[:2]
    canvas = background(height, width)
    direct = composite(canvas, mask.image)

    hard = apply_mask(canvas, mask.template, name, feather=0)  # no feathering: the same everywhere
    assert np.abs(hard.astype(int) - direct).max() <= 1

    feather = 0.005  # sigma 1.3 px: the moustache and the frames are only a few sigma of the default wide
    soft = apply_mask(canvas, mask.template, name, feather=feather)
    kernel = np.ones((2 * math.ceil(3 * feather * TEMPLATE_SCALE) + 3,) * 2, np.uint8)
    alpha = mask.image[..., 3]
    steady = cv2.erode(alpha, kernel) == cv2.dilate(alpha, kernel)  # away from the feathered edge
    assert (steady & (alpha > 200)).sum() > 1000
    assert np.abs(soft.astype(int) - direct)[steady].max() <= 1

    default = apply_mask(canvas, mask.template, name)
    untouched = cv2.dilate(alpha, np.ones((3, 3), np.uint8)) == 0
    assert np.array_equal(default[untouched], canvas[untouched])
    # Feathering only ever fades the mask: each pixel lies between the photo and the direct composite.
    lo, hi = np.minimum(canvas, direct).astype(int) - 1, np.maximum(canvas, direct).astype(int) + 1
    assert ((default >= lo) & (default <= hi)).all()
    assert (default != canvas).any(axis=2).sum() > 0.9 * (alpha > 8).sum()


def test_transparent_mask_leaves_the_image_unchanged():
    clear = make_mask("clear", "fully transparent", np.zeros((CANVAS_SIZE[1], CANVAS_SIZE[0], 4), np.uint8),
                      SURGICAL_ANCHORS)
    image = background(240, 320, seed=1)
    for points in (face_points(120, (160, 100)), face_points(60, (10, 20), angle_deg=30)):
        out = apply_mask(image, points, clear)
        assert np.array_equal(out, image) and out is not image


@pytest.mark.parametrize("name", NAMES)
def test_face_past_the_image_border(name):
    image = background(160, 200, seed=2)
    points = face_points(110, (15, 20), angle_deg=-15)  # centre near the top-left corner: most of it outside
    out = apply_mask(image, points, name)
    assert out.shape == image.shape and out.dtype == np.uint8

    # The same face on a larger canvas, cropped back: the same pixels, except near the border where the edge
    # feathering differs (the clipped render does not fade the mask at the image border).
    pad = 200
    big = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    reference = apply_mask(big, points + pad, name)[pad:-pad, pad:-pad]
    band = math.ceil(3 * DEFAULT_FEATHER * 110) + 3
    inner = np.s_[band:-band, band:-band]
    assert np.abs(out[inner].astype(int) - reference[inner]).max() <= 1
    changed = (out != image).any(axis=2)
    footprint = cv2.dilate((reference != image).any(axis=2).astype(np.uint8), np.ones((2 * band + 1,) * 2,
                                                                                      np.uint8)).astype(bool)
    assert not (changed & ~footprint).any()  # nothing drawn elsewhere (no wrap-around of negative indices)


def test_faces_outside_turned_or_degenerate_do_not_crash():
    image = background(120, 160, seed=3)
    for name in NAMES:
        # entirely outside the image: unchanged
        assert np.array_equal(apply_mask(image, face_points(80, (-500, -400)), name), image)
        # strongly turned: the far half of the face squashed (and partly folded over) onto the near half
        turned = face_points(70, (80, 50))
        far = turned[:, 0] > 80
        turned[far, 0] = 80 + (turned[far, 0] - 80) * 0.05
        turned[~far, 0] = 80 + (turned[~far, 0] - 80) * 1.1
        assert apply_mask(image, turned, name).shape == image.shape
        # all points on one spot, or on one line: nothing to draw
        assert np.array_equal(apply_mask(image, np.full((68, 2), 40, np.float32), name), image)
        line = face_points(70, (80, 50))
        line[:, 1] = 50
        assert np.array_equal(apply_mask(image, line, name), image)
        # absurdly far points do not overflow the polygon fill
        huge = face_points(70, (80, 50))
        huge[8] = (1e12, 1e12)
        assert apply_mask(image, huge, name).shape == image.shape


def test_nan_points_leave_the_image_unchanged():
    image = background(200, 200, seed=4)
    points = face_points(100, (100, 80))
    points[30] = np.nan
    out = apply_mask(image, points, "sunglasses")
    assert np.array_equal(out, image) and out is not image
    assert np.array_equal(apply_masks(image, [points], "carnival"), image)


def test_small_face_samples_a_pyramid_level_and_still_shows():
    image = np.full((60, 60, 3), 200, np.uint8)
    out = apply_mask(image, face_points(14, (30, 25)), "sunglasses", feather=0)
    dark = (out.astype(int).sum(axis=2) < 300).sum()
    assert 10 < dark < 400  # the dark lenses appear, at about the right size


def test_several_faces():
    image = background(200, 400, seed=5)
    faces = [face_points(90, (100, 80)), face_points(70, (300, 90), angle_deg=10)]
    out = apply_masks(image, faces, "surgical")
    assert np.array_equal(out, apply_mask(apply_mask(image, faces[0], "surgical"), faces[1], "surgical"))
    assert (out[:, :200] != image[:, :200]).any() and (out[:, 200:] != image[:, 200:]).any()
    assert np.array_equal(apply_masks(image, [], "surgical"), image)


def test_unknown_mask_name():
    image = background(50, 50)
    with pytest.raises(ValueError) as info:
        apply_mask(image, face_points(20, (25, 20)), "clown")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="known masks"):
        apply_masks(image, [], "clown")


def test_bad_shapes():
    with pytest.raises(ValueError, match="uint8"):
        apply_mask(np.zeros((10, 10, 3), np.float32), face_points(5, (5, 5)), "surgical")
    with pytest.raises(ValueError, match="68, 2"):
        apply_mask(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)), "surgical")


# ---------------------------------------------------------------------------------------------------- CLI


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    return run(parser.parse_args(["mask", *argv]))


@pytest.fixture(scope="module")
def face_image(data_root):
    return sorted((data_root / "300w/helen/testset").glob("*.jpg"))[1]


def test_cli_list(capsys):
    assert cli("--list") == EXIT_OK
    printed = capsys.readouterr().out
    for name, description in list_masks():
        assert name in printed and description in printed


@pytest.mark.parametrize("argv, message", [
    (("x.jpg", "--mask", "clown", "--out", "o"), "known masks: surgical"),
    (("x.jpg", "--out", "o"), "--mask NAME is required"),
    (("--mask", "surgical", "--out", "o"), "no input"),
    (("x.jpg", "--mask", "surgical"), "--out DIR is required"),
    (("x.jpg", "--mask", "surgical", "--out", "o", "--upsample", "9"), "--upsample must be"),
    (("x.jpg", "--mask", "surgical", "--out", "o", "--feather", "-1"), "--feather must be"),
])
def test_cli_bad_command_lines(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(*argv) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_unwritable_or_input_out_folder(face_image, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the output folder should go")
    assert cli(str(face_image), "--mask", "moustache", "--method", "dlib", "--out", str(blocker / "out")) \
        == EXIT_USAGE
    assert "cannot create or write" in capsys.readouterr().err
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / face_image.name).write_bytes(face_image.read_bytes())
    assert cli(str(folder), "--mask", "moustache", "--method", "dlib", "--out", str(folder)) == EXIT_USAGE
    assert "input folder" in capsys.readouterr().err


def test_cli_model_that_cannot_load(face_image, tmp_path, capsys):
    code = cli(str(face_image), "--mask", "surgical", "--method", "onet", "--checkpoint",
               str(tmp_path / "none.pt"), "--out", str(tmp_path / "out"))
    assert code == EXIT_MODEL
    assert "none.pt" in capsys.readouterr().err


def test_cli_good_and_bad_inputs(face_image, tmp_path, capsys):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text, not a JPEG")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    code = cli(str(face_image), str(missing), str(not_image), str(blank), "--mask", "sunglasses",
               "--method", "dlib", "--out", str(out))
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_SKIPPED
    for path in (missing, not_image, blank):
        assert str(path) in err
    assert "no such file" in err and "not a readable image" in err and "no face" in err
    assert sorted(p.name for p in out.iterdir()) == [f"{face_image.stem}.png"]
    original = cv2.imread(str(face_image))
    masked = cv2.imread(str(out / f"{face_image.stem}.png"))
    assert masked.shape == original.shape
    changed = (np.abs(masked.astype(int) - original) > 8).any(axis=2).mean()
    assert 0.005 < changed < 0.3  # glasses on the face, not over the whole picture


def test_cli_all_good(face_image, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(str(face_image), "--mask", "carnival", "--method", "dlib", "--upsample", "1", "--out", str(out),
               "-q") == EXIT_OK
    assert capsys.readouterr().out == ""
    assert (out / f"{face_image.stem}.png").is_file()
