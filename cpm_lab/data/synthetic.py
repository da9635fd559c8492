"""SyntheticPoses: procedurally drawn people on which every tutorial runs without a download.

The generator is built so that the central claim of Convolutional Pose Machines is visible:
*local appearance is ambiguous and spatial context resolves it*.

- Left and right limbs look exactly alike (same colour, texture, width and draw style), and the
  order in which the two sides are painted is random, so a patch around a wrist cannot tell a
  left wrist from a right one; only the chain wrist -> elbow -> shoulder -> torso can.
- Figures face the viewer (the person's right on the image left) unless they face away. Two
  cues tell which: the head (facing the viewer, a skin-coloured face with two eyes and a mouth
  under a hair cap; facing away, the plain back of the head, entirely in hair colour) and the
  shirt (from the front, a skin-coloured V-neck opening below the neck; the back is plain).
  Labels always follow the person, so for a figure facing away the person's right joints are
  on the image right. A patch around a wrist shows neither cue: telling left from right takes
  the context of the torso and head.
- Limb-like distractors (tapered bars, sometimes with an elbow and a hand, in the figure's own
  limb colours), occluders that hide joints, and a second partial person make local evidence
  misleading at the harder settings.

The main person is sampled first with a fixed number of random draws, so the same
``(seed, index)`` shows the same person (clothing, proportions; pose, size and placement
scaled by the knobs) under every difficulty and knob setting, in a different scene.
Use different seeds for training and evaluation sets.

Every sample is a pure function of ``(seed, index)``: it draws from
``numpy.random.default_rng([seed, index])`` only, so it is the same in any process, in any
order and with any number of threads (no BLAS, no threads; element-wise numpy, Python maths and
the compiled rasteriser of :mod:`cpm_lab.data._raster`, whose float32 arithmetic is IEEE, one
operation at a time, without fast-math). On one platform the output is bit-identical; a
different libm could round a sine in its last bit and, rarely, move one edge pixel.

The shapes of an image are queued as a table and painted by one compiled call (numba), which
is what makes the generator fast: well over 1000 images/s of 128 px on one core (run
``benchmarks/bench_synthetic.py``). The first item of a fresh install compiles the rasteriser
(a few seconds, once: numba caches it next to the module).

Units: all coordinates are pixels of the generated image, pixel centres at integer coordinates
(x = column, y = row). The body model is written in units of the standing height (head top to
ankles) and scaled to pixels.
"""
from __future__ import annotations

import colorsys
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cpm_lab import skeleton
from cpm_lab.data import _raster

#: ``scale`` in a sample is the person size in units of this many pixels (MPII convention:
#: a box of side ``scale * SCALE_UNIT_PX`` pixels holds the standing person).
SCALE_UNIT_PX = 200.0

#: Named difficulty presets. Keyword arguments to :class:`SyntheticPoses` override single knobs.
#:
#: ===================  ====================================================================
#: knob                 meaning
#: ===================  ====================================================================
#: pose_variability     0 = everyone in the same relaxed standing pose, 1 = full joint ranges
#: rotation_range       whole-figure in-plane rotation, uniform in [-r, r] degrees
#: scale_range          (lo, hi) factor on the standing height, which is 60-85% of image_size
#: jitter               person-centre offset from the image centre, fraction of image_size
#: keep_inside          if True, shrink/shift the person so every joint lies inside the image
#: facing_away_prob     probability that the person faces away (right joints on image right)
#: distractors          (lo, hi) count of limb-shaped bars in the person's limb colours
#: occluders            (lo, hi) count of shapes drawn over the person; hidden joints get v=0
#: second_person_prob   probability of an unlabelled second person, cut by the image border
#: background_shapes    (lo, hi) count of non-limb clutter shapes (ellipses, boxes, triangles)
#: noise                standard deviation of additive pixel noise (image range is [0, 1])
#: ===================  ====================================================================
DIFFICULTIES: dict[str, dict[str, Any]] = {
    "easy": dict(
        pose_variability=0.5, rotation_range=10.0, scale_range=(0.95, 1.05), jitter=0.04,
        keep_inside=True, facing_away_prob=0.0, distractors=(0, 1), occluders=(0, 0),
        second_person_prob=0.0, background_shapes=(2, 4), noise=0.02,
    ),
    "standard": dict(
        pose_variability=0.8, rotation_range=25.0, scale_range=(0.85, 1.1), jitter=0.08,
        keep_inside=True, facing_away_prob=0.25, distractors=(2, 5), occluders=(0, 1),
        second_person_prob=0.3, background_shapes=(4, 8), noise=0.04,
    ),
    "hard": dict(
        pose_variability=1.0, rotation_range=45.0, scale_range=(0.7, 1.2), jitter=0.15,
        keep_inside=False, facing_away_prob=0.4, distractors=(5, 9), occluders=(1, 3),
        second_person_prob=0.6, background_shapes=(6, 12), noise=0.06,
    ),
}
_COUNT_KNOBS = ("distractors", "occluders", "background_shapes")
_PROB_KNOBS = ("facing_away_prob", "second_person_prob")
_NONNEG_KNOBS = ("pose_variability", "rotation_range", "jitter", "noise")

# ---------------------------------------------------------------------------------------------
# Body model, in units of the standing height (head top to ankles).
# ---------------------------------------------------------------------------------------------
_HEAD = 0.17            # head top -> neck joint
_TORSO = 0.32           # neck joint -> pelvis (midpoint of the hips)
_SHOULDER_HALF = 0.11   # half the shoulder width
_SHOULDER_DROP = 0.035  # shoulders sit this far below the neck joint, along the spine
_HIP_HALF = 0.075
_SEG_LEN = {"upper_arm": 0.175, "forearm": 0.155, "thigh": 0.25, "shank": 0.25}
#: (radius at parent joint, radius at child joint): limbs taper towards the extremities.
_SEG_RADIUS = {"upper_arm": (0.030, 0.023), "forearm": (0.023, 0.017),
               "thigh": (0.045, 0.032), "shank": (0.032, 0.021)}
#: The eight limbs as (parent, child, segment kind), grouped per side: (right, left).
_ARMS = (((8, 7, "upper_arm"), (7, 6, "forearm")), ((9, 10, "upper_arm"), (10, 11, "forearm")))
_LEGS = (((2, 1, "thigh"), (1, 0, "shank")), ((3, 4, "thigh"), (4, 5, "shank")))

# Joint-angle limits in degrees as (neutral, lo, hi); a sampled angle is
# neutral + pose_variability * (uniform(lo, hi) - neutral). Limb angles are abductions measured
# from "straight down along the spine", positive away from the body's midline, mirrored per side
# so the left and right limbs have the same distribution. Child angles are relative to the parent.
_ANGLES = np.array([
    (0.0, -15.0, 15.0),    # 0 spine lean
    (0.0, -25.0, 25.0),    # 1 head tilt relative to the spine
    (12.0, -25.0, 170.0),  # 2 right shoulder abduction
    (8.0, -140.0, 100.0),  # 3 right elbow
    (12.0, -25.0, 170.0),  # 4 left shoulder
    (8.0, -140.0, 100.0),  # 5 left elbow
    (5.0, -20.0, 60.0),    # 6 right hip abduction
    (0.0, -40.0, 70.0),    # 7 right knee
    (5.0, -20.0, 60.0),    # 8 left hip
    (0.0, -40.0, 70.0),    # 9 left knee
])

_ANGLE_LIST = _ANGLES.tolist()

_SKIN = np.array([(0.96, 0.80, 0.69), (0.91, 0.72, 0.58), (0.78, 0.57, 0.44), (0.63, 0.45, 0.33),
                  (0.45, 0.31, 0.22), (0.33, 0.22, 0.15)], dtype=np.float32)
_HAIR = np.array([(0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.45, 0.30, 0.15), (0.85, 0.72, 0.40),
                  (0.60, 0.25, 0.10), (0.65, 0.65, 0.65)], dtype=np.float32)
_DARK = tuple(np.array((0.05, 0.04, 0.04), dtype=np.float32).tolist())   # float32 values
_LIPS = tuple(np.array((0.55, 0.15, 0.15), dtype=np.float32).tolist())


@dataclass(frozen=True)
class LimbStyle:
    """How one body part is painted: base RGB ``colour`` in [0, 1]; if ``stripe_period`` > 0
    (pixels along the limb axis) bands alternate between ``colour`` and ``stripe_colour``;
    ``noise`` is the amplitude of a fixed grain texture."""

    colour: tuple[float, float, float]
    stripe_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    stripe_period: float = 0.0
    noise: float = 0.0


def _plain(colour) -> LimbStyle:
    return LimbStyle(tuple(colour.tolist() if isinstance(colour, np.ndarray) else map(float, colour)))


@dataclass
class _Figure:
    joints: np.ndarray              # (14, 2) pixel coordinates
    height_px: float                # standing height in pixels
    facing_away: bool
    skin: LimbStyle
    hair: LimbStyle
    shoe: LimbStyle
    torso: LimbStyle
    trousers: LimbStyle
    segment_styles: dict[str, LimbStyle]   # by segment kind, shared by both sides
    width: float                    # build: multiplies every limb radius
    right_first: tuple[bool, bool]  # paint right arm / right leg before the left one
    tex_offset: tuple[int, int]

    def limb_styles(self) -> dict[tuple[int, int], LimbStyle]:
        """Style of each of the eight limbs, keyed by (parent, child) joint index as in LIMBS."""
        return {(a, b): self.segment_styles[kind] for side in _ARMS + _LEGS for a, b, kind in side}


# ---------------------------------------------------------------------------------------------
# Cached helpers. All caches are deterministic functions of their key.
# ---------------------------------------------------------------------------------------------
_TEX_PAD = 64
#: Grain of the distractors: layer 1 of the field, uncropped (the main figure uses layer 0 and
#: the second person layer 2, each cropped at the figure's own offset).
_DISTRACTOR_TEX = (1, 0, 0)
_NO_NOISE = np.zeros((0, 0, 0), dtype=np.float32)
_caches: dict[Any, np.ndarray] = {}


def _noise_field(size: int, amplitude: float = 1.0) -> np.ndarray:
    """Fixed noise (3, size + pad, size + pad) with standard deviation ``amplitude``. Items crop
    it at random offsets, which is ~20x cheaper than drawing fresh normal noise per image."""
    key = ("noise", size, amplitude)
    if key not in _caches:
        n = size + _TEX_PAD
        field = np.random.default_rng(20160130).standard_normal((3, n, n), dtype=np.float32)
        _caches[key] = field * np.float32(amplitude)
    return _caches[key]


def _bilinear_index(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For bilinear resampling of k cells to ``size`` pixels (cell and pixel centres aligned,
    edges clamped): pixel i reads cells lo[i] and lo[i] + 1 with weight w[i] on the second;
    lo (size,) intp, w (size,) float32."""
    key = ("bilinear", size, k)
    if key not in _caches:
        pos = np.clip((np.arange(size) + 0.5) / size * k - 0.5, 0, k - 1)
        lo = np.minimum(np.floor(pos).astype(np.intp), k - 2)
        _caches[key] = (lo, (pos - lo).astype(np.float32))
    return _caches[key]


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of (3, k, k) float32 to (3, size, size) float32."""
    lo, w = _bilinear_index(size, grid.shape[1])
    return _raster.upsample(np.ascontiguousarray(grid), lo, w)


def _cloth_colour(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h, 0.25 + 0.65 * s, 0.25 + 0.7 * v)


# ---------------------------------------------------------------------------------------------
# Queueing shapes for the rasteriser (cpm_lab.data._raster). A grain texture ``tex`` is given as
# (layer, row offset, column offset) of the image's pixel (0, 0) in the grain field.
# ---------------------------------------------------------------------------------------------
def _limb(shapes: _raster.Shapes, p0, p1, r0: float, r1: float, style: LimbStyle, tex=None,
          shade: float = 0.35, tip=None) -> None:
    """Tapered capsule from p0 (radius r0) to p1 (radius r1) in ``style``: the limb primitive.
    ``tip`` = (t0, RGB) paints the part beyond fraction t0 of the axis (hand, shoe, hair cap)."""
    shapes.capsule(p0, p1, r0, r1, style.colour, shade,
                   (style.stripe_period, style.stripe_colour) if style.stripe_period > 0 else None,
                   tip, (style.noise, *tex) if style.noise > 0 and tex is not None else None)


def _dot(shapes: _raster.Shapes, p, radius: float, colour) -> None:
    """A small mark (eye, mouth): one pixel when tiny, a disk otherwise."""
    if radius < 1.2:
        shapes.pixel(p, colour)
    else:
        shapes.capsule(p, p, radius, radius, colour, shade=0)


# ---------------------------------------------------------------------------------------------
# Sampling: pose, style, figure placement.
# ---------------------------------------------------------------------------------------------
def _sample_pose(u: list[float], variability: float, facing_away: bool) -> list[tuple[float, float]]:
    """14 joints (x, y) in body units, pelvis at the origin, y down, figure upright.

    ``u`` holds 26 uniforms: 10 angles, 8 foreshortenings, 8 proportions.
    """
    ang = [math.radians(n + variability * (lo + ui * (hi - lo) - n))
           for (n, lo, hi), ui in zip(_ANGLE_LIST, u[:10])]
    # Foreshortening stands in for out-of-plane motion; squared so most limbs are near full length.
    fore = [1.0 - 0.35 * variability * ui * ui for ui in u[10:18]]
    prop = [0.92 + 0.16 * ui for ui in u[18:26]]
    lean, tilt = ang[0], ang[1]
    up = (math.sin(lean), -math.cos(lean))
    down = (-up[0], -up[1])
    perp = (math.cos(lean), math.sin(lean))   # towards the person's left when facing the viewer
    j = [[0.0, 0.0] for _ in range(skeleton.NUM_JOINTS)]
    torso, head = _TORSO * prop[4], _HEAD * prop[5]
    sh_half, hip_half = _SHOULDER_HALF * prop[6], _HIP_HALF * prop[7]
    neck = (up[0] * torso, up[1] * torso)
    j[12] = list(neck)
    ht = lean + tilt
    j[13] = [neck[0] + head * math.sin(ht), neck[1] - head * math.cos(ht)]
    for side, s in ((0, -1.0), (1, 1.0)):
        (sh, el, _), (_, wr, _) = _ARMS[side]
        (hp, kn, _), (_, an, _) = _LEGS[side]
        j[sh] = [neck[0] + _SHOULDER_DROP * down[0] + s * sh_half * perp[0],
                 neck[1] + _SHOULDER_DROP * down[1] + s * sh_half * perp[1]]
        j[hp] = [s * hip_half * perp[0], s * hip_half * perp[1]]
        a_ua, a_fa = ang[2 + 2 * side], ang[2 + 2 * side] + ang[3 + 2 * side]
        a_th, a_sh = ang[6 + 2 * side], ang[6 + 2 * side] + ang[7 + 2 * side]
        for parent, child, a, length in (
            (sh, el, a_ua, _SEG_LEN["upper_arm"] * prop[0] * fore[4 * side]),
            (el, wr, a_fa, _SEG_LEN["forearm"] * prop[1] * fore[4 * side + 1]),
            (hp, kn, a_th, _SEG_LEN["thigh"] * prop[2] * fore[4 * side + 2]),
            (kn, an, a_sh, _SEG_LEN["shank"] * prop[3] * fore[4 * side + 3]),
        ):
            # Limb direction: angle a from "down", towards the side s.
            ca, sa = math.cos(a), math.sin(a)
            px, py = j[parent]
            j[child] = [px + length * (ca * down[0] + sa * s * perp[0]),
                        py + length * (ca * down[1] + sa * s * perp[1])]
    if facing_away:   # mirror the body: the person's right moves to the image right
        return [(-x, y) for x, y in j]
    return [(x, y) for x, y in j]


def _limb_style(colour, u: list[float], kind: float, height_px: float) -> LimbStyle:
    """Plain (50%), striped (30%) or grainy (20%) version of ``colour``."""
    colour = tuple(map(float, colour))
    if kind < 0.5:
        return LimbStyle(colour)
    if kind < 0.8:
        dark = 0.35 + 0.4 * u[0]
        stripe = tuple(c * dark for c in colour) if u[1] < 0.5 else tuple(
            float(c) for c in colorsys.hsv_to_rgb(u[2], 0.2 + 0.6 * u[0], 0.3 + 0.6 * u[1]))
        return LimbStyle(colour, stripe, height_px * (0.035 + 0.04 * u[2]))
    return LimbStyle(colour, noise=0.06 + 0.1 * u[1])


def _sample_figure(rng: np.random.Generator, knobs: dict[str, Any], size: int,
                   centre: tuple[float, float] | None = None, keep_inside: bool = False) -> _Figure:
    """One person: pose, clothing and placement. Always consumes the same number of random
    draws, so knobs that act later (clutter, occluders) never change the main figure."""
    u = rng.random(64).tolist()
    facing_away = u[0] < knobs["facing_away_prob"]
    pose = _sample_pose(u[1:27], knobs["pose_variability"], facing_away)
    lo, hi = knobs["scale_range"]
    height = size * (0.6 + 0.25 * u[27]) * (lo + (hi - lo) * u[28])
    rot = math.radians(knobs["rotation_range"] * (2 * u[29] - 1))
    c, s = math.cos(rot) * height, math.sin(rot) * height
    pts = [(x * c - y * s, x * s + y * c) for x, y in pose]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    mx, my = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
    ext_x, ext_y = x_hi - x_lo, y_hi - y_lo
    jit = knobs["jitter"] * size
    if centre is None:
        centre = ((size - 1) / 2 + jit * (2 * u[30] - 1), (size - 1) / 2 + jit * (2 * u[31] - 1))
    cx, cy = centre
    f = 1.0
    if keep_inside:
        margin = max(2.0, 0.04 * size)
        avail = size - 1 - 2 * margin
        if max(ext_x, ext_y) > avail:
            f = avail / max(ext_x, ext_y)
            ext_x, ext_y, height = ext_x * f, ext_y * f, height * f
        cx = min(max(cx, margin + ext_x / 2), size - 1 - margin - ext_x / 2)
        cy = min(max(cy, margin + ext_y / 2), size - 1 - margin - ext_y / 2)
    joints = np.array([(cx + f * (x - mx), cy + f * (y - my)) for x, y in pts])

    skin = _plain(_SKIN[int(u[32] * len(_SKIN))] * (0.92 + 0.16 * u[33]))
    hair = _plain(_HAIR[int(u[34] * len(_HAIR))])
    shoe = _plain(_cloth_colour(u[41], 0.3 * u[42], 0.2 * u[43]))
    torso = _limb_style(_cloth_colour(u[35], u[36], u[37]), u[44:47], u[47], height)
    trousers = _limb_style(_cloth_colour(u[38], u[39], 0.8 * u[40]), u[48:51], u[51], height)
    sleeves, legs = u[52], u[53]
    segment_styles = {
        "upper_arm": torso if sleeves < 0.75 else skin,    # long or short sleeves, or none
        "forearm": torso if sleeves < 0.4 else skin,
        "thigh": trousers if legs < 0.85 else skin,        # trousers, shorts or bare legs
        "shank": trousers if legs < 0.6 else skin,
    }
    return _Figure(
        joints=joints, height_px=float(height), facing_away=facing_away, skin=skin, hair=hair,
        shoe=shoe, torso=torso, trousers=trousers, segment_styles=segment_styles,
        width=0.95 + 0.4 * u[54], right_first=(u[55] < 0.5, u[56] < 0.5),
        tex_offset=(int(u[57] * _TEX_PAD), int(u[58] * _TEX_PAD)),
    )


# ---------------------------------------------------------------------------------------------
# Painting a figure.
# ---------------------------------------------------------------------------------------------
# Plain-float 2-D vector helpers: at this size numpy calls would cost more than the maths.
def _unit(v) -> tuple[float, float]:
    n = math.hypot(v[0], v[1])
    return (v[0] / n, v[1] / n) if n > 1e-9 else (0.0, 1.0)


def _comb(p, *terms) -> tuple[float, float]:
    """p + sum(f * v for f, v in terms) for 2-D points/vectors."""
    x, y = p
    for f, v in terms:
        x += f * v[0]
        y += f * v[1]
    return x, y


#: Hands and feet continue the forearm / shank beyond the wrist / ankle (fraction of height).
_HAND_LEN, _FOOT_LEN = 0.045, 0.05


def _chain(shapes: _raster.Shapes, p0, p1, p2, kinds: tuple[str, str], styles: dict[str, LimbStyle],
           w: float, end: LimbStyle | None, end_len: float, tex) -> None:
    """Two limb segments p0 -> p1 -> p2; the second continues ``end_len`` pixels past p2 in
    the ``end`` style (hand or shoe), so the joint p2 lies where the two colours meet."""
    r0, r1 = _SEG_RADIUS[kinds[0]]
    _limb(shapes, p0, p1, r0 * w, r1 * w, styles[kinds[0]], tex)
    r0, r1 = _SEG_RADIUS[kinds[1]]
    seg = (p2[0] - p1[0], p2[1] - p1[1])
    seg_len = math.hypot(*seg)
    if end is None or seg_len < 1e-6:
        _limb(shapes, p1, p2, r0 * w, r1 * w, styles[kinds[1]], tex)
        return
    full = seg_len + end_len
    r_end = max(r0 + (r1 - r0) * full / seg_len, 1.1 * r1)
    _limb(shapes, p1, _comb(p1, (full / seg_len, seg)), r0 * w, r_end * w, styles[kinds[1]], tex,
          tip=(seg_len / full, end.colour))


def _draw_figure(shapes: _raster.Shapes, fig: _Figure, layer: int) -> None:
    """Queue one person on ``canvas``: legs, torso, neck and head, then arms (so they can cross
    in front of the torso). Left and right sides are painted identically, in random order."""
    tex = (layer, *fig.tex_offset)   # the figure's grain: its own crop of one layer
    j = fig.joints.tolist()   # [x, y] pairs
    h = fig.height_px
    w = fig.width * h
    styles = fig.segment_styles

    for (hp, kn, k1), (_, an, k2) in (_LEGS if fig.right_first[1] else _LEGS[::-1]):
        _chain(shapes, j[hp], j[kn], j[an], (k1, k2), styles, w, fig.shoe, _FOOT_LEN * h, tex)

    # Torso: one quadrilateral from the shoulders down over the hip joints; shirt above the
    # waist, trousers below it; shirt stripes run across the spine.
    pelvis = ((j[2][0] + j[3][0]) / 2, (j[2][1] + j[3][1]) / 2)
    spine = (j[12][0] - pelvis[0], j[12][1] - pelvis[1])
    up = _unit(spine)
    across_h = _unit((j[3][0] - j[2][0], j[3][1] - j[2][1]))   # right hip -> left hip
    across_s = _unit((j[9][0] - j[8][0], j[9][1] - j[8][1]))
    r_ua = _SEG_RADIUS["upper_arm"][0] * w
    r_th = _SEG_RADIUS["thigh"][0] * w
    torso_poly = [
        _comb(j[8], (-0.6 * r_ua, across_s), (0.7 * r_ua, up)),
        _comb(j[9], (0.6 * r_ua, across_s), (0.7 * r_ua, up)),
        _comb(j[3], (r_th, across_h), (-0.6 * r_th, up)),
        _comb(j[2], (-r_th, across_h), (-0.6 * r_th, up)),
    ]
    st = fig.torso
    bands = (j[12], up, st.stripe_period, st.stripe_colour) if st.stripe_period else None
    waist = (pelvis, up, 0.22 * math.hypot(*spine), fig.trousers.colour)
    shapes.convex(torso_poly, st.colour, bands=bands, split=waist,
                  grain=(st.noise, *tex) if st.noise > 0 else None)
    if not fig.facing_away:
        # Second facing cue, torso-sized so that context can carry it to every limb: a V-neck
        # opening in skin colour, seen only from the front (the back of a shirt is plain).
        mid = ((j[8][0] + j[9][0]) / 2, (j[8][1] + j[9][1]) / 2)
        top = 0.7 * r_ua
        collar = [
            _comb(mid, (0.45, (j[8][0] - mid[0], j[8][1] - mid[1])), (top, up)),
            _comb(mid, (0.45, (j[9][0] - mid[0], j[9][1] - mid[1])), (top, up)),
            _comb(mid, (-0.3 * math.hypot(*spine), up)),
        ]
        shapes.convex(collar, fig.skin.colour)

    # Neck, then the head: an egg-shaped capsule from chin to crown. The facing cue: facing the
    # viewer, a skin-coloured face with eyes and mouth under a hair cap; facing away, all hair.
    hl = math.hypot(j[12][0] - j[13][0], j[12][1] - j[13][1])
    hd = _unit((j[12][0] - j[13][0], j[12][1] - j[13][1]))    # head top -> neck
    hp_ = (-hd[1], hd[0])
    _limb(shapes, j[12], _comb(j[13], (0.62 * hl, hd)), 0.028 * w, 0.028 * w, fig.skin, shade=0)
    r_top, r_chin = 0.3 * hl, 0.22 * hl
    crown, chin = _comb(j[13], (r_top, hd)), _comb(j[13], (0.74 * hl - r_chin, hd))
    if fig.facing_away:
        _limb(shapes, chin, crown, r_chin, r_top, fig.hair, shade=0.25)
    else:
        _limb(shapes, chin, crown, r_chin, r_top, fig.skin, shade=0.25, tip=(0.62, fig.hair.colour))
        eye_c = _comb(j[13], (0.42 * hl, hd))
        for s in (-0.12, 0.12):
            _dot(shapes, _comb(eye_c, (s * hl, hp_)), 0.055 * hl, _DARK)
        _dot(shapes, _comb(j[13], (0.6 * hl, hd)), 0.045 * hl, _LIPS)

    for (sh, el, k1), (_, wr, k2) in (_ARMS if fig.right_first[0] else _ARMS[::-1]):
        _chain(shapes, j[sh], j[el], j[wr], (k1, k2), styles, w, fig.skin, _HAND_LEN * h, tex)


# ---------------------------------------------------------------------------------------------
# Knob validation.
# ---------------------------------------------------------------------------------------------
def _resolve_knobs(difficulty: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; valid difficulties: {sorted(DIFFICULTIES)}")
    knobs = dict(DIFFICULTIES[difficulty])
    unknown = sorted(set(overrides) - set(knobs))
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; valid knobs: {sorted(knobs)}")
    knobs.update(overrides)
    for name in _COUNT_KNOBS:
        v = knobs[name]
        try:
            lo, hi = (v, v) if np.isscalar(v) else tuple(v)
            ok = int(lo) == lo and int(hi) == hi and 0 <= lo <= hi
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"knob {name!r} must be a count n >= 0 or a range (lo, hi) with "
                             f"0 <= lo <= hi, got {v!r}")
        knobs[name] = (int(lo), int(hi))
    for name in _PROB_KNOBS + _NONNEG_KNOBS:
        v = knobs[name]
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = math.nan
        if name in _PROB_KNOBS and not 0.0 <= x <= 1.0:
            raise ValueError(f"knob {name!r} must be a probability in [0, 1], got {v!r}")
        if not x >= 0.0:
            raise ValueError(f"knob {name!r} must be a number >= 0, got {v!r}")
        knobs[name] = x
    v = knobs["scale_range"]
    try:
        lo, hi = (float(x) for x in v)
        ok = 0.0 < lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"knob 'scale_range' must be (lo, hi) with 0 < lo <= hi, got {v!r}")
    knobs["scale_range"] = (lo, hi)
    knobs["keep_inside"] = bool(knobs["keep_inside"])
    return knobs


# ---------------------------------------------------------------------------------------------
# The dataset.
# ---------------------------------------------------------------------------------------------
class SyntheticPoses(Dataset):
    """Procedurally generated single-person pose images in the LSP-14 joint order.

    Args:
        length: number of items (any size; items are generated on the fly).
        image_size: side S of the square images, in pixels.
        difficulty: a key of :data:`DIFFICULTIES` ("easy", "standard", "hard").
        seed: non-negative int; item ``i`` is a pure function of ``(seed, i)``.
        **knobs: overrides of single knobs of the preset (see :data:`DIFFICULTIES`).

    Each item is a dict (see :mod:`cpm_lab.data`): ``image`` float32 (3, S, S) in [0, 1],
    ``keypoints`` float32 (14, 3) = (x, y, visibility) in pixels, ``center`` float32 (2,) = the
    centre of the joints' bounding box, ``scale`` float32 0-d = standing height / SCALE_UNIT_PX,
    ``index`` int. A joint has visibility 0 when it is outside the image or under an occluder;
    its coordinates are still the true ones. Self-occlusion (an arm in front of the torso)
    keeps visibility 1.
    """

    def __init__(self, length: int = 1000, image_size: int = 128, difficulty: str = "standard",
                 seed: int = 0, **knobs: Any) -> None:
        if int(length) != length or length < 0:
            raise ValueError(f"length must be a non-negative int, got {length!r}")
        if int(image_size) != image_size or image_size < 16:
            raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.length, self.image_size, self.seed = int(length), int(image_size), int(seed)
        self.difficulty = difficulty
        self.knobs = _resolve_knobs(difficulty, knobs)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.knobs.items())
        return (f"SyntheticPoses(length={self.length}, image_size={self.image_size}, "
                f"difficulty={self.difficulty!r}, seed={self.seed}, {knobs})")

    def describe(self) -> str:
        """Multi-line summary: length, image size, difficulty and every knob's value."""
        lines = [f"SyntheticPoses: {self.length} items, {self.image_size}x{self.image_size} px, "
                 f"difficulty {self.difficulty!r}, seed {self.seed}"]
        preset = _resolve_knobs(self.difficulty, {})
        for k, v in self.knobs.items():
            lines.append(f"  {k:<20} {v!r}" + ("" if v == preset[k] else f"   (preset: {preset[k]!r})"))
        return "\n".join(lines)

    def _check_index(self, index: int) -> int:
        i = operator.index(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for SyntheticPoses of length {self.length}")
        return i

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        image, kp, meta = self._render(i)
        joints = kp[:, :2]
        centre = (np.minimum.reduce(joints) + np.maximum.reduce(joints)) / 2   # = min(0), max(0)
        return {
            "image": torch.from_numpy(image),
            "keypoints": torch.from_numpy(kp),
            "center": torch.from_numpy(centre),   # float32, like the keypoints
            "scale": torch.from_numpy(np.array(meta["height_px"] / SCALE_UNIT_PX, dtype=np.float32)),
            "index": i,
        }

    def meta(self, index: int) -> dict[str, Any]:
        """What was drawn for item ``index`` (renders it): ``facing_away`` (bool), ``height_px``
        (standing height), ``n_distractors``, ``n_occluders``, ``second_person`` (bool) and
        ``limb_styles`` (the :class:`LimbStyle` of each of the eight limbs, keyed by
        (parent, child) joint indices as in ``skeleton.LIMBS``)."""
        return self._render(self._check_index(index), limb_styles=True)[2]

    def _sample_scene(self, index: int) -> tuple:
        """Every random draw of item ``index``, in a fixed order: the main figure first."""
        size, k = self.image_size, self.knobs
        # Entropy [seed, index]; as a uint32 array when both fit, which SeedSequence turns into
        # the very same words as the list, only faster.
        entropy = [self.seed, index]
        if self.seed < 2 ** 32 and index < 2 ** 32:
            entropy = np.array(entropy, dtype=np.uint32)
        rng = np.random.default_rng(entropy)
        fig = _sample_figure(rng, k, size, keep_inside=k["keep_inside"])
        n_occ = int(rng.integers(k["occluders"][0], k["occluders"][1] + 1))
        occ_u = rng.random((n_occ, 8)).tolist()
        second = None
        if rng.random() < k["second_person_prob"]:
            side = 1.0 if rng.random() < 0.5 else -1.0
            sx = float(fig.joints[:, 0].mean()) + side * size * (0.5 + 0.25 * rng.random())
            sy = (size - 1) / 2 + 0.15 * size * (2 * rng.random() - 1)
            second = _sample_figure(rng, k, size, centre=(sx, sy))
        n_dis = int(rng.integers(k["distractors"][0], k["distractors"][1] + 1))
        dis_u = rng.random((n_dis, 12)).tolist()
        n_bg = int(rng.integers(k["background_shapes"][0], k["background_shapes"][1] + 1))
        bg_u = rng.random((n_bg, 10)).tolist()
        grid = rng.random((3, 3, 3), dtype=np.float32)
        detail = rng.random((4, 8, 8), dtype=np.float32)
        offsets = rng.integers(0, _TEX_PAD, 3).tolist()   # noise crop (oy, ox) and sign
        return fig, occ_u, second, dis_u, bg_u, grid, detail, offsets

    def _render(self, index: int, limb_styles: bool = False
                ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(image (3, S, S) float32, keypoints (14, 3) float32, meta) of item ``index``."""
        size, k = self.image_size, self.knobs
        fig, occ_u, second, dis_u, bg_u, grid, detail, (oy, ox, sign) = self._sample_scene(index)
        shapes = _raster.Shapes(size)
        for u in bg_u:
            self._clutter(shapes, u)
        for u in dis_u:
            self._distractor(shapes, fig, u)
        if second is not None:
            _draw_figure(shapes, second, 2)
        _draw_figure(shapes, fig, 0)
        for u in occ_u:
            self._occluder(shapes, fig, u)
        img = self._background(grid, detail)
        occluded = np.zeros((size, size) if occ_u else (0, 0), dtype=bool)
        noise = _noise_field(size, k["noise"]) if k["noise"] > 0 else _NO_NOISE
        _raster.paint(img, shapes.table(), _noise_field(size), occluded, noise, oy, ox, sign % 2 == 1)
        # Visible = the joint's nearest pixel is inside the image and not occluded.
        kp = np.empty((len(fig.joints), 3), dtype=np.float32)
        kp[:, :2] = fig.joints
        kp[:, 2] = [0 <= c < size and 0 <= r < size and (not occ_u or not occluded[r, c])
                    for c, r in ((math.floor(x + 0.5), math.floor(y + 0.5))
                                 for x, y in fig.joints.tolist())]
        meta = {"facing_away": fig.facing_away, "height_px": fig.height_px, "n_occluders": len(occ_u),
                "n_distractors": len(dis_u), "second_person": second is not None}
        if limb_styles:
            meta["limb_styles"] = fig.limb_styles()
        return img, kp, meta

    # --- layers ------------------------------------------------------------------------------
    def _background(self, grid: np.ndarray, detail: np.ndarray) -> np.ndarray:
        """Smooth gradient over a 3x3 grid of muted colours plus 8x8 mottling that is mostly
        brightness, upsampled bilinearly in one step; returns (3, S, S) float32."""
        grey = np.add.reduce(grid, axis=0, keepdims=True)        # the mean, without its wrapper
        grey /= 3
        grid = 0.2 + 0.6 * (grey + 0.6 * (grid - grey))          # muted: pull colours towards grey
        detail = 0.25 * detail[:1] + 0.12 * detail[1:] - 0.185   # mostly brightness, ~zero mean
        return _upsample(_upsample(grid, 8) + detail, self.image_size)

    def _clutter(self, shapes: _raster.Shapes, u: list[float]) -> None:
        """One non-limb shape: ellipse, box or triangle, possibly translucent."""
        size = self.image_size
        colour = colorsys.hsv_to_rgb(u[0], 0.8 * u[1], 0.2 + 0.75 * u[2])
        cx, cy = size * (1.2 * u[3] - 0.1), size * (1.2 * u[4] - 0.1)
        a, b = size * (0.04 + 0.14 * u[5]), size * (0.04 + 0.14 * u[6])
        ang = math.pi * u[7]
        alpha = 1.0 if u[8] < 0.6 else 0.4 + 0.4 * u[8]
        kind = u[9]
        if kind < 0.35:
            shapes.ellipse(cx, cy, a, b, ang, colour, alpha)
        elif kind < 0.7:
            shapes.box(cx - a, cy - b, cx + a, cy + b, colour, alpha)
        else:
            c, s = math.cos(ang), math.sin(ang)
            if kind < 0.85:   # rotated box
                corners = [(-a, -b), (a, -b), (a, b), (-a, b)]
            else:             # triangle
                corners = [(-a, b), (a, b), (0.4 * (a - b), -b)]
            pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in corners]
            shapes.convex(pts, colour, alpha)

    def _distractor(self, shapes: _raster.Shapes, fig: _Figure, u: list[float]) -> None:
        """A limb look-alike anywhere in the image: one or two tapered segments in the figure's
        own arm or leg style, the two-segment ones often ending in a hand or shoe."""
        size = self.image_size
        h, w = fig.height_px, fig.width * fig.height_px
        arm = u[0] < 0.6
        kinds = ("upper_arm", "forearm") if arm else ("thigh", "shank")
        styles = fig.segment_styles
        if u[5] < 0.5:   # otherwise exactly the limb colour
            f = 0.85 + 0.3 * u[6]
            styles = {kd: LimbStyle(tuple(min(c * f, 1.0) for c in styles[kd].colour),
                                    styles[kd].stripe_colour, styles[kd].stripe_period,
                                    styles[kd].noise) for kd in kinds}
        p0 = (size * (0.05 + 0.9 * u[1]), size * (0.05 + 0.9 * u[2]))
        ang = 2 * math.pi * u[3]
        p1 = _comb(p0, (_SEG_LEN[kinds[0]] * h * (0.7 + 0.5 * u[8]), (math.cos(ang), math.sin(ang))))
        if u[4] < 0.35:
            r0, r1 = _SEG_RADIUS[kinds[0]]
            _limb(shapes, p0, p1, r0 * w, r1 * w, styles[kinds[0]], _DISTRACTOR_TEX)
            return
        ang += (1 if u[10] < 0.5 else -1) * math.radians(20 + 100 * u[11])
        p2 = _comb(p1, (_SEG_LEN[kinds[1]] * h * (0.7 + 0.5 * u[9]), (math.cos(ang), math.sin(ang))))
        end = (fig.skin if arm else fig.shoe) if u[7] < 0.7 else None
        _chain(shapes, p0, p1, p2, kinds, styles, w, end, (_HAND_LEN if arm else _FOOT_LEN) * h,
               _DISTRACTOR_TEX)

    def _occluder(self, shapes: _raster.Shapes, fig: _Figure, u: list[float]) -> None:
        """A box or ellipse over a random joint of the main figure; its pixels are marked as
        occluding."""
        size = self.image_size
        target = fig.joints[int(u[0] * skeleton.NUM_JOINTS)]
        cx = float(target[0]) + 0.06 * size * (2 * u[1] - 1)
        cy = float(target[1]) + 0.06 * size * (2 * u[2] - 1)
        a, b = size * (0.06 + 0.08 * u[3]), size * (0.06 + 0.08 * u[4])
        ang = math.pi * u[5]
        colour = colorsys.hsv_to_rgb(u[6], 0.6 * u[7], 0.25 + 0.6 * u[6])
        if u[7] < 0.5:
            shapes.ellipse(cx, cy, a, b, ang, colour, mark=True)
        else:
            c, s = math.cos(ang), math.sin(ang)
            pts = [(cx + c * x - s * y, cy + s * x + c * y)
                   for x, y in ((-a, -b), (a, -b), (a, b), (-a, b))]
            shapes.convex(pts, colour, mark=True)
