"""The iBUG 68-point mark-up: horizontal-flip permutation and face regions.

Indices are 0-based (the GUIDE lists the mirror pairs 1-based). Region order follows iBUG: jaw 0-16,
right brow 17-21, left brow 22-26, nose bridge 27-30, lower nose 31-35, right eye 36-41, left eye 42-47,
outer lip 48-59, inner lip 60-67 ("right" is the subject's right, image left).
"""
from __future__ import annotations

import numpy as np

N_POINTS = 68

# 1-based mirror pairs as published with the 300-W mark-up; points on the symmetry axis are absent (they stay).
MIRROR_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    # jaw
    (1, 17), (2, 16), (3, 15), (4, 14), (5, 13), (6, 12), (7, 11), (8, 10),
    # brows
    (18, 27), (19, 26), (20, 25), (21, 24), (22, 23),
    # lower nose
    (32, 36), (33, 35),
    # eyes
    (37, 46), (38, 45), (39, 44), (40, 43), (41, 48), (42, 47),
    # mouth
    (49, 55), (50, 54), (51, 53), (56, 60), (57, 59), (61, 65), (62, 64), (66, 68),
)


def _mirror_permutation() -> np.ndarray:
    perm = np.arange(N_POINTS)
    for a, b in MIRROR_PAIRS_1BASED:
        perm[a - 1], perm[b - 1] = b - 1, a - 1
    return perm


#: ``(68,) int64``: after a horizontal flip, point ``k`` of the flipped face is point ``MIRROR[k]`` of the original
#: (mirrored in x). It is an involution: ``MIRROR[MIRROR] == arange(68)``.
MIRROR: np.ndarray = _mirror_permutation()
MIRROR.flags.writeable = False

#: Region name -> ``int64`` index array (0-based).
REGIONS: dict[str, np.ndarray] = {
    "jaw": np.arange(0, 17),
    "brows": np.arange(17, 27),
    "nose": np.arange(27, 36),
    "eyes": np.arange(36, 48),
    "mouth": np.arange(48, 68),
}
for _idx in REGIONS.values():
    _idx.flags.writeable = False

#: Outer eye corners (the inter-ocular normaliser's end points).
OUTER_EYE_CORNERS: tuple[int, int] = (36, 45)
