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
ankles) and scaled to pixels. It lives, with the sampling and painting of a person, in
:mod:`cpm_lab.data._figure`; this module builds the scene around the person (background,
clutter, distractors, a second person, occluders, noise) and validates the knobs.
"""
from __future__ import annotations

import colorsys
import math
import operator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cpm_lab import skeleton
from cpm_lab.data import _raster
from cpm_lab.data._figure import (
    _FOOT_LEN,
    _HAND_LEN,
    _SEG_LEN,
    _SEG_RADIUS,
    _TEX_PAD,
    LimbStyle,
    _chain,
    _comb,
    _draw_figure,
    _Figure,
    _limb,
    _sample_figure,
)
from cpm_lab.targets import OCCLUDED, VISIBLE

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
#: occluders            (lo, hi) count of shapes drawn over the person; hidden joints are OCCLUDED
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
# Cached helpers. All caches are deterministic functions of their key.
# ---------------------------------------------------------------------------------------------
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
    ``index`` int. The joint flag (``cpm_lab.targets``) is OCCLUDED (1) when the joint is
    outside the image or under an occluder (its coordinates are the true ones), VISIBLE (2)
    otherwise; self-occlusion (an arm in front of the torso) counts as visible.
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
        # Visible = the joint's nearest pixel is inside the image and not occluded; every other
        # joint is labelled but occluded (its position is known).
        kp = np.empty((len(fig.joints), 3), dtype=np.float32)
        kp[:, :2] = fig.joints
        kp[:, 2] = [VISIBLE if 0 <= c < size and 0 <= r < size and (not occ_u or not occluded[r, c]) else OCCLUDED
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
