"""Landmark point schemes (mark-ups) and the maps between them.

A :class:`PointScheme` is what has to travel with a set of landmarks for it to be used correctly: how many points
there are, which point becomes which under a horizontal flip, which two points the inter-ocular normaliser uses,
and (where one exists) how the points map to the study's iBUG 68-point layout.

Conventions, as in :mod:`flmlib.landmarks68`: indices are 0-based; "right" is the subject's right (image left);
``mirror[k]`` is the point of the *original* face that becomes point ``k`` after a horizontal flip (mirrored in x),
so a flip is ``flipped = points[..., mirror, :]`` with x reflected. ``mirror`` is an involution.

Schemes in :data:`SCHEMES`:

* ``ibug68``: the 300-W / iBUG mark-up, taken from :mod:`flmlib.landmarks68`.
* ``wflw98``: WFLW's 98-point mark-up (Wu et al., CVPR 2018, "Look at Boundary"). Layout: jaw 0-32 (subject's right
  to left, 16 on the chin); right brow 33-41 (upper edge 33-37 outer to inner, then lower edge 38-41 inner to outer);
  left brow 42-50 (upper edge 42-46 inner to outer, lower edge 47-50 outer to inner); nose bridge 51-54 and lower
  nose 55-59 (57 in the middle); right eye 60-67 (60 outer corner, 61-63 upper lid, 64 inner corner, 65-67 lower
  lid); left eye 68-75 (68 inner corner, 72 outer corner); outer lip 76-87 (76 and 82 the corners); inner lip 88-95
  (88 and 92 the corners); pupils 96 (right) and 97 (left).

* ``kaggle15``: the 15 keypoints of Kaggle's facial-keypoints challenge, in its column order: 0 left eye centre,
  1 right eye centre, 2/3 left eye inner/outer corner, 4/5 right eye inner/outer corner, 6/7 left brow inner/outer
  end, 8/9 right brow inner/outer end, 10 nose tip, 11/12 mouth left/right corner, 13 top lip centre, 14 bottom lip
  centre ("left" is the subject's left, as here). :mod:`flmlib.kaggle_keypoints` reads the Kaggle CSV and takes
  the 15 from the 68 points.
* ``kaggle4``: the 4 of them that most Kaggle faces keep (0 left eye centre, 1 right eye centre, 2 nose tip,
  3 bottom lip centre). It has no eye corners: its inter-ocular normaliser is the eye-centre distance.

The WFLW mirror pairs below agree pair for pair with the flip pairs of mmpose's WFLW dataset description
(open-mmlab/mmpose, ``configs/_base_/datasets/wflw.py``). The 98 -> 68 map is the one used across the field
(e.g. the ``WFLW_98_TO_DLIB_68`` tables in several public face-alignment repositories): every second jaw point, the
*upper* brow edges, all nine nose points, six of the eight points of each eye (the two lid points next to the
middle one are dropped: 61/63 and 65/67 stand in for iBUG's lid points 37/38 and 40/41), and the 20 mouth points
unchanged. It is a *selection*, not a re-annotation: WFLW's authors state that there is no explicit correspondence
between the two mark-ups (wywu/LAB issue #17), and other projects use other maps (PIPNet's ``convert_wflw``
averages upper and lower brow edges and interpolates the eye-lid points). Numbers computed on mapped points must say
so (see :func:`flmlib.wflw.wflw_to_ibug68`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flmlib import landmarks68


@dataclass(frozen=True, eq=False)
class PointScheme:
    """One landmark mark-up.

    Attributes:
        name: registry key (``"ibug68"``, ``"wflw98"``).
        n_points: number of points ``n``.
        mirror: ``(n,) int64``, read-only: after a horizontal flip, point ``k`` of the flipped face is point
            ``mirror[k]`` of the original (an involution).
        outer_eye_corners: ``(right, left)`` outer eye corner indices, the end points of the inter-ocular normaliser.
        to_ibug68: ``(68,) int64``, read-only: ``points[..., to_ibug68, :]`` is the iBUG 68-point layout; None when
            the scheme has no map to it.

    Equality is identity (arrays make field-wise ``==`` ambiguous); compare ``name`` instead.
    """

    name: str
    n_points: int
    mirror: np.ndarray
    outer_eye_corners: tuple[int, int]
    to_ibug68: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Validate once here so that every consumer (augmentation flips, NME normalisers, mapping) can trust the
        # arrays; a wrong mirror table silently swaps left and right for half the training samples.
        n = int(self.n_points)
        mirror = np.array(self.mirror, dtype=np.int64)
        if mirror.shape != (n,) or mirror.min() < 0 or mirror.max() >= n:
            raise ValueError(f"scheme {self.name!r}: mirror must be ({n},) indices in [0, {n})")
        if not np.array_equal(mirror[mirror], np.arange(n)):
            raise ValueError(f"scheme {self.name!r}: mirror is not an involution")
        mirror.flags.writeable = False
        right, left = (int(i) for i in self.outer_eye_corners)
        if not (0 <= right < n and 0 <= left < n) or mirror[right] != left:
            raise ValueError(f"scheme {self.name!r}: outer eye corners {self.outer_eye_corners} must be in range and "
                             "mirror images of each other")
        to68 = None
        if self.to_ibug68 is not None:
            to68 = np.array(self.to_ibug68, dtype=np.int64)
            if to68.shape != (landmarks68.N_POINTS,) or to68.min() < 0 or to68.max() >= n:
                raise ValueError(f"scheme {self.name!r}: to_ibug68 must be (68,) indices in [0, {n})")
            to68.flags.writeable = False
        object.__setattr__(self, "n_points", n)
        object.__setattr__(self, "mirror", mirror)
        object.__setattr__(self, "outer_eye_corners", (right, left))
        object.__setattr__(self, "to_ibug68", to68)


def _permutation_from_pairs(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """``(n,) int64`` swapping each 0-based pair; points in no pair map to themselves (they lie on the axis)."""
    perm = np.arange(n, dtype=np.int64)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def _wflw98_mirror_pairs() -> list[tuple[int, int]]:
    """WFLW's 0-based mirror pairs, built from the layout in the module docstring."""
    pairs = [(k, 32 - k) for k in range(16)]  # jaw; 16 (chin) stays
    pairs += [(33 + i, 46 - i) for i in range(5)]  # upper brow edges: right 33..37 outer->inner, left 46..42
    pairs += [(38 + i, 50 - i) for i in range(4)]  # lower brow edges: right 38..41 inner->outer, left 50..47
    pairs += [(55, 59), (56, 58)]  # lower nose; the bridge 51-54 and the tip 57 stay
    pairs += [(60 + i, 72 - i) for i in range(5)]  # eye corners and upper lids: right 60..64, left 72..68
    pairs += [(65 + i, 75 - i) for i in range(3)]  # lower lids: right 65..67, left 75..73
    pairs += [(76 + i, 82 - i) for i in range(3)]  # outer upper lip: 76..78 <-> 82..80; 79 stays
    pairs += [(83, 87), (84, 86)]  # outer lower lip; 85 stays
    pairs += [(88, 92), (89, 91)]  # inner upper lip; 90 stays
    pairs += [(93, 95)]  # inner lower lip; 94 stays
    pairs += [(96, 97)]  # pupils
    return pairs


def _wflw98_to_ibug68() -> np.ndarray:
    """``(68,) int64``: WFLW index of each iBUG point (see the module docstring for what is selected and why)."""
    index = np.concatenate([
        np.arange(0, 33, 2),  # jaw 0-16 <- every second jaw point
        np.arange(33, 38),  # right brow 17-21 <- upper edge, outer to inner
        np.arange(42, 47),  # left brow 22-26 <- upper edge, inner to outer
        np.arange(51, 60),  # nose 27-35
        [60, 61, 63, 64, 65, 67],  # right eye 36-41: corners 60/64, lids without the middle points 62/66
        [68, 69, 71, 72, 73, 75],  # left eye 42-47: corners 68/72, lids without 70/74
        np.arange(76, 96),  # mouth 48-67
    ])
    return index.astype(np.int64)


IBUG68 = PointScheme(
    name="ibug68",
    n_points=landmarks68.N_POINTS,
    mirror=landmarks68.MIRROR,
    outer_eye_corners=landmarks68.OUTER_EYE_CORNERS,
    to_ibug68=np.arange(landmarks68.N_POINTS),
)

WFLW98 = PointScheme(
    name="wflw98",
    n_points=98,
    mirror=_permutation_from_pairs(98, _wflw98_mirror_pairs()),
    outer_eye_corners=(60, 72),
    to_ibug68=_wflw98_to_ibug68(),
)

KAGGLE15 = PointScheme(
    name="kaggle15",
    n_points=15,
    mirror=_permutation_from_pairs(15, [(0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)]),
    outer_eye_corners=(5, 3),
)

KAGGLE4 = PointScheme(
    name="kaggle4",
    n_points=4,
    mirror=_permutation_from_pairs(4, [(0, 1)]),
    outer_eye_corners=(1, 0),  # eye centres: the scheme has no eye corners
)

#: Scheme name -> :class:`PointScheme`.
SCHEMES: dict[str, PointScheme] = {scheme.name: scheme for scheme in (IBUG68, WFLW98, KAGGLE15, KAGGLE4)}


def get_scheme(name: str | PointScheme) -> PointScheme:
    """The registered scheme called ``name`` (a :class:`PointScheme` is returned as it is).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, PointScheme):
        return name
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown point scheme {name!r}; known schemes: {', '.join(sorted(SCHEMES))}") from None


def to_ibug68(points, scheme: str | PointScheme, valid=None):
    """Map landmarks from ``scheme`` to the iBUG 68-point layout by selecting points (no interpolation).

    Args:
        points: ``(..., n, 2)`` coordinates in ``scheme`` (any float dtype and units; they are not changed).
        scheme: a :class:`PointScheme` or its registry name.
        valid: optional ``(..., n)`` bool mask of usable points, mapped the same way.
    Returns:
        ``(..., 68, 2)`` array of the input's dtype (a copy), or ``(points68, valid68)`` when ``valid`` is given,
        ``valid68`` being ``(..., 68) bool``.
    Raises:
        ValueError: the scheme has no map to iBUG 68, or the shapes do not match it.
    """
    scheme = get_scheme(scheme)
    if scheme.to_ibug68 is None:
        raise ValueError(f"point scheme {scheme.name!r} has no map to ibug68")
    points = np.asarray(points)
    if points.ndim < 2 or points.shape[-2:] != (scheme.n_points, 2):
        raise ValueError(f"points of shape {points.shape} are not (..., {scheme.n_points}, 2) ({scheme.name})")
    mapped = points[..., scheme.to_ibug68, :]  # fancy indexing: already a copy
    if valid is None:
        return mapped
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != points.shape[:-1]:
        raise ValueError(f"validity mask of shape {valid.shape} does not match points {points.shape}")
    return mapped, valid[..., scheme.to_ibug68]
