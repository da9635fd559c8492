"""The person of :mod:`cpm_lab.data.synthetic`: body model, pose and clothing sampling, painting.

Holds the body proportions and joint-angle table (in units of the standing height, head top to
ankles), the skin, hair and cloth colours, :class:`LimbStyle` and the sampled :class:`_Figure`,
the sampling of a pose (:func:`_sample_pose`) and of a whole figure (:func:`_sample_figure`), and
the shape primitives (:func:`_limb`, :func:`_chain`, :func:`_dot`) with which
:func:`_draw_figure` queues a person for the rasteriser of :mod:`cpm_lab.data._raster`.
Only :func:`_sample_figure` draws random numbers, from the item's own generator.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cpm_lab import skeleton
from cpm_lab.data import _raster

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


#: Margin of the fixed grain and noise fields beyond the image side: a figure's grain and an
#: item's pixel noise are crops of them at offsets in [0, _TEX_PAD).
_TEX_PAD = 64


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
