"""The LSP 14-joint skeleton every part of cpm_lab speaks, and mappings from MPII-16 and COCO-17.

Joint order is the Leeds Sports Pose convention (Johnson & Everingham, BMVC 2010):

====  ===============
idx   joint
====  ===============
0     right ankle
1     right knee
2     right hip
3     left hip
4     left knee
5     left ankle
6     right wrist
7     right elbow
8     right shoulder
9     left shoulder
10    left elbow
11    left wrist
12    neck
13    head top
====  ===============

"Right" is the person's right, which appears on the LEFT of the image for a person facing the
viewer.

Keypoint arrays everywhere in cpm_lab have shape ``(..., P, 3)``: x, y in pixels of the image
they refer to (pixel centres at integer coordinates), then the joint flag: 2 visible, 1 labelled
but occluded, 0 missing (``cpm_lab.targets`` maps every dataset's own flags to these).
"""
from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

#: Short labels for plots and tables ("r_ankle", ...).
SHORT_NAMES: tuple[str, ...] = tuple(n.replace("right_", "r_").replace("left_", "l_") for n in JOINT_NAMES)
_PART_NAMES: dict[str, int] = {**JOINT_INDEX, **{s: i for i, s in enumerate(SHORT_NAMES)}}


def part_index(part, num_parts: int | None = NUM_JOINTS) -> int:
    """Index of one body part, from an integer in 0..num_parts-1 (no upper bound when
    ``num_parts`` is None) or an LSP-14 joint name ("right_wrist") or short name ("r_wrist").
    Anything else is a ValueError that says what is accepted."""
    if isinstance(part, str):
        if part not in _PART_NAMES:
            raise ValueError(f"unknown part {part!r}; choose a joint name from cpm_lab.skeleton.JOINT_NAMES "
                             "(or its short name) or an index")
        return _PART_NAMES[part]
    if isinstance(part, bool) or not isinstance(part, (int, np.integer)) or part < 0 or (
            num_parts is not None and part >= num_parts):
        upper = "" if num_parts is None else f" in 0..{num_parts - 1}"
        raise ValueError(f"part must be a joint name or an index{upper}, got {part!r}")
    return int(part)

#: Bones drawn in skeleton plots, as (parent, child) pairs of joint indices.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 0), (2, 1),          # right shank, right thigh
    (3, 4), (4, 5),          # left thigh, left shank
    (8, 7), (7, 6),          # right upper arm, right forearm
    (9, 10), (10, 11),       # left upper arm, left forearm
    (12, 13),                # neck -> head top
    (12, 8), (12, 9),        # collar bones
    (8, 2), (9, 3), (2, 3),  # torso sides and pelvis
)

#: Left/right joint pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))


def flip_permutation(pairs, num_parts: int) -> tuple[int, ...]:
    """Index permutation that swaps each (left, right) pair: ``keypoints[..., perm, :]`` relabels."""
    perm = list(range(num_parts))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


#: ``keypoints[FLIP_INDEX]`` relabels joints after a horizontal flip (left <-> right).
FLIP_INDEX: tuple[int, ...] = flip_permutation(FLIP_PAIRS, NUM_JOINTS)

#: Limb colours by the side of the body they belong to (the person's own right and left).
SIDE_COLORS: dict[str, tuple[float, float, float]] = {
    "right": (0.90, 0.25, 0.20), "left": (0.15, 0.45, 0.95), "centre": (0.20, 0.75, 0.25)}


def _limb_side(a: int, b: int) -> str:
    sides = {JOINT_NAMES[j].split("_")[0] for j in (a, b)} & {"right", "left"}
    return sides.pop() if len(sides) == 1 else "centre"


#: One RGB colour (floats in [0, 1]) per joint, for "all parts" composites. The person's right
#: side is warm (reds, oranges, yellow) and the left side cool (blues, cyan, violet), the same
#: joint on both sides at a matching depth (ankles dark, hips pale, wrists brightest), and the
#: centre line green, so left/right confusions show as a colour swap; ``viz.part_key`` names them.
JOINT_COLORS: np.ndarray = np.array([
    (0.80, 0.05, 0.05),   # right ankle: dark red
    (1.00, 0.30, 0.25),   # right knee: red
    (1.00, 0.62, 0.62),   # right hip: pink
    (0.60, 0.75, 1.00),   # left hip: pale blue
    (0.25, 0.45, 1.00),   # left knee: blue
    (0.10, 0.15, 0.80),   # left ankle: dark blue
    (1.00, 0.92, 0.10),   # right wrist: yellow
    (1.00, 0.58, 0.05),   # right elbow: orange
    (0.85, 0.40, 0.20),   # right shoulder: rust
    (0.65, 0.45, 1.00),   # left shoulder: violet
    (0.15, 0.75, 0.95),   # left elbow: sky
    (0.10, 1.00, 0.95),   # left wrist: cyan
    (0.25, 0.85, 0.30),   # neck: green
    (0.80, 1.00, 0.55),   # head top: light green
], dtype=np.float32)
#: Limb colours by side: person's right red, left blue, centre (neck, pelvis) green.
LIMB_COLORS: tuple[tuple[float, float, float], ...] = tuple(SIDE_COLORS[_limb_side(a, b)] for a, b in LIMBS)

# ---------------------------------------------------------------------------------------------
# Mappings from other datasets' joint sets to LSP-14.
#
# A mapping is a (14, S) matrix W: lsp_xy = W @ source_xy. A target joint is visible only when
# every source joint with a non-zero weight is visible. Exact correspondences are one-hot rows;
# approximated joints are weighted combinations, listed in APPROXIMATED.
# ---------------------------------------------------------------------------------------------
MPII_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
)
COCO_JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
#: COCO-17 left/right pairs (for flipping native COCO keypoints).
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
#: MPII-16 left/right pairs.
MPII_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


#: Flip permutations of the joint sets cpm_lab knows, by number of parts (LSP-14, MPII-16, COCO-17).
FLIP_INDEX_BY_PARTS: dict[int, tuple[int, ...]] = {
    NUM_JOINTS: FLIP_INDEX,
    len(MPII_JOINT_NAMES): flip_permutation(MPII_FLIP_PAIRS, len(MPII_JOINT_NAMES)),
    len(COCO_JOINT_NAMES): flip_permutation(COCO_FLIP_PAIRS, len(COCO_JOINT_NAMES)),
}


def flip_index(num_parts: int) -> tuple[int, ...]:
    """The left/right relabelling of a joint set with ``num_parts`` parts (14 LSP, 16 MPII,
    17 COCO); ValueError for any other count."""
    if num_parts not in FLIP_INDEX_BY_PARTS:
        raise ValueError(f"no left/right flip is known for {num_parts} parts (known: {sorted(FLIP_INDEX_BY_PARTS)})")
    return FLIP_INDEX_BY_PARTS[num_parts]


def _matrix(source_names: tuple[str, ...], rows: dict[str, dict[str, float]]) -> np.ndarray:
    w = np.zeros((NUM_JOINTS, len(source_names)), dtype=np.float64)
    for j, name in enumerate(JOINT_NAMES):
        for src, weight in rows.get(name, {name: 1.0}).items():
            w[j, source_names.index(src)] = weight
    return w


#: MPII-16 -> LSP-14. LSP "neck" is taken as MPII "upper_neck" (an approximation: the LSP neck
#: annotation sits slightly lower, between upper neck and thorax); all other joints are exact.
MPII_TO_LSP: np.ndarray = _matrix(MPII_JOINT_NAMES, {"neck": {"upper_neck": 1.0}})

#: COCO-17 -> LSP-14. COCO has no neck and no head top, so both are approximated:
#: neck = midpoint of the shoulders; head top = nose + 0.8 * (nose - neck), i.e. the nose pushed
#: away from the shoulders (1.8 * nose - 0.4 * left_shoulder - 0.4 * right_shoulder).
#: Limb joints (shoulders, elbows, wrists, hips, knees, ankles) are exact.
COCO_TO_LSP: np.ndarray = _matrix(COCO_JOINT_NAMES, {
    "neck": {"left_shoulder": 0.5, "right_shoulder": 0.5},
    "head_top": {"nose": 1.8, "left_shoulder": -0.4, "right_shoulder": -0.4},
})

#: Which LSP joints each mapping approximates rather than copies.
APPROXIMATED: dict[str, tuple[str, ...]] = {"mpii": ("neck",), "coco": ("neck", "head_top")}
_MAPPINGS = {"mpii": MPII_TO_LSP, "coco": COCO_TO_LSP}


def to_lsp(keypoints: np.ndarray, source: str) -> np.ndarray:
    """Map keypoints of shape (..., S, 3) from ``source`` ("mpii" or "coco") to LSP-14 (..., 14, 3).

    Coordinates of unlabelled joints (flag 0) are set to 0 so they never leak into a
    combination; a mapped joint takes the lowest flag of its source joints (labelled only if
    all are, visible only if all are; flags as in ``cpm_lab.targets``).
    """
    if source not in _MAPPINGS:
        raise ValueError(f"unknown keypoint source {source!r}; expected one of {sorted(_MAPPINGS)}")
    w = _MAPPINGS[source]
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape[-2:] != (w.shape[1], 3):
        raise ValueError(f"{source} keypoints must have shape (..., {w.shape[1]}, 3), got {kp.shape}")
    flag = np.nan_to_num(kp[..., 2], nan=0.0)
    xy = np.where((flag > 0)[..., None], kp[..., :2], 0.0)
    out_xy = np.einsum("ts,...sc->...tc", w, xy)
    needed = w != 0  # (14, S)
    out_flag = np.where(needed, flag[..., None, :], np.inf).min(-1)  # lowest flag of the sources
    out_xy = np.where((out_flag > 0)[..., None], out_xy, 0.0)
    return np.concatenate([out_xy, out_flag[..., None]], axis=-1).astype(np.float32)


def joint_set(keypoints: np.ndarray, source: str, parts: str) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """Keypoints (..., S, 3) of ``source`` ("mpii" or "coco") in the joint set ``parts``: "lsp"
    (mapped with ``to_lsp``) or "native" (unchanged). Returns (keypoints, joint names, flip index)."""
    if parts == "lsp":
        return to_lsp(keypoints, source).astype(np.float64), JOINT_NAMES, FLIP_INDEX
    names = {"mpii": MPII_JOINT_NAMES, "coco": COCO_JOINT_NAMES}[source]
    return keypoints, names, flip_index(len(names))


def flip_keypoints(keypoints: np.ndarray, width: int, flip_index=FLIP_INDEX) -> np.ndarray:
    """Mirror keypoints (..., P, 3) horizontally in an image ``width`` pixels wide and swap
    left/right labels. Pixel centres are at integer x, so x maps to ``width - 1 - x``."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    kp[..., 0] = np.where(kp[..., 2] > 0, width - 1 - kp[..., 0], kp[..., 0])
    return kp[..., list(flip_index), :]
