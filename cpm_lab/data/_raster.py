"""The rasteriser behind :class:`~cpm_lab.data.SyntheticPoses`: one compiled call paints all
the shapes of an image, in order, then adds pixel noise and clips to [0, 1].

A shape is one row of a float64 table of :data:`WIDTH` columns, built by :class:`Shapes`.
Every row starts with the same fields:

======  ===================================================================================
column  meaning
======  ===================================================================================
0       kind: CAPSULE, CONVEX, ELLIPSE or BOX
1-4     bounding box bx0, by0, bx1, by1 (pixels, clipped to the image, half-open)
5       1 if the shape's pixels are also marked in the ``mask`` passed to :func:`paint`
6-8     RGB colour in [0, 1]
9       opacity: 1 paints over, less blends with what is below
10-13   grain: amplitude (0 = none), and the layer, row and column offset in the ``tex``
        field of the image's pixel (0, 0)
======  ===================================================================================

and the columns from 14 on are the kind's own (offsets ``_CAP*``, ``_POLY_*`` and ``_ELL``). Pixel (row r,
column c) has its centre at x = c, y = r.

Arithmetic is float32 unless a comment says otherwise, one IEEE operation at a time in a
fixed order, compiled without fast-math (no reassociation, no fused multiply-add): an image
is a pure function of its table on any machine with IEEE floats.
"""
from __future__ import annotations

import math

import numba
import numpy as np

CAPSULE, CONVEX, ELLIPSE, BOX = 0, 1, 2, 3
#: Columns per shape.
WIDTH = 44
# Capsule: per-pixel coefficients (see Shapes.capsule), stripes (factor 0 = none) and tip.
_CAP, _CAP_STRIPES, _CAP_TIP = 14, 24, 28
# Convex polygon: edge count and up to 4 edges as (a, b, c); stripes; split.
_POLY_EDGES, _POLY_BANDS, _POLY_SPLIT = 14, 27, 35
# Ellipse: centre and the four coefficients of its axes.
_ELL = 14

_f32 = np.float32


@numba.njit(cache=True, nogil=True)
def _blend(img, y, x, c0, c1, c2, alpha):
    """Write colour (c0, c1, c2) into pixel (y, x), blended with opacity ``alpha`` < 1 as
    below * (1 - alpha) + colour * alpha."""
    if alpha >= 1.0:
        img[0, y, x], img[1, y, x], img[2, y, x] = c0, c1, c2
    else:
        keep, a = _f32(1.0 - alpha), _f32(alpha)   # rounded from float64, like numpy scalars
        img[0, y, x] = img[0, y, x] * keep + c0 * a
        img[1, y, x] = img[1, y, x] * keep + c1 * a
        img[2, y, x] = img[2, y, x] * keep + c2 * a


@numba.njit(cache=True, nogil=True)
def paint(img, ops, tex, mask, noise, noise_y, noise_x, noise_add):
    """Paint the shapes ``ops`` (K, WIDTH) float64 into ``img`` (3, S, S) float32 in row order
    and mark the pixels of those flagged in column 5 in ``mask`` (S, S) bool (may be (0, 0)
    when none is flagged). Then, if ``noise`` is not empty, add (``noise_add``) or subtract
    ``noise[:, noise_y:noise_y + S, noise_x:noise_x + S]``; finally clip to [0, 1]. ``tex``
    (L, >= S, >= S) float32 is the grain field that the shapes' grain offsets point into."""
    # Each kind's loop finishes its pixels itself (grain, blend, mark): one per-pixel helper
    # shared by all four kinds measured ~17% slower over whole images.
    zero, one = _f32(0.0), _f32(1.0)
    for k in range(ops.shape[0]):
        op = ops[k]
        kind = int(op[0])
        bx0, by0, bx1, by1 = int(op[1]), int(op[2]), int(op[3]), int(op[4])
        marks = op[5] != 0.0
        r0, g0, b0 = _f32(op[6]), _f32(op[7]), _f32(op[8])
        alpha = op[9]
        grain, layer, ty, tx = _f32(op[10]), int(op[11]), int(op[12]), int(op[13])
        if kind == BOX:
            for y in range(by0, by1):
                for x in range(bx0, bx1):
                    _blend(img, y, x, r0, g0, b0, alpha)
        elif kind == CAPSULE:
            # With xs, ys relative to p0: xs * A + ys * B is the position along the axis (0..1
            # between the ends), xs * C - ys * D the signed distance across it.
            x0, a_, c_ = _f32(op[_CAP]), _f32(op[_CAP + 1]), _f32(op[_CAP + 2])
            len2, dr, rad0 = _f32(op[_CAP + 3]), _f32(op[_CAP + 4]), _f32(op[_CAP + 5])
            neg_shade = _f32(op[_CAP + 6])
            y0, b_, d_ = _f32(op[_CAP + 7]), _f32(op[_CAP + 8]), _f32(op[_CAP + 9])
            stripes = op[_CAP_STRIPES]                  # float64 bands per axis length
            r1, g1, b1 = _f32(op[_CAP_STRIPES + 1]), _f32(op[_CAP_STRIPES + 2]), _f32(op[_CAP_STRIPES + 3])
            tipped, tip_from = op[_CAP_TIP] != 0.0, _f32(op[_CAP_TIP + 1])
            r2, g2, b2 = _f32(op[_CAP_TIP + 2]), _f32(op[_CAP_TIP + 3]), _f32(op[_CAP_TIP + 4])
            for y in range(by0, by1):
                ys = _f32(y - by0) + y0
                along_y, across_y = ys * b_, ys * d_
                for x in range(bx0, bx1):
                    xs = _f32(x - bx0) + x0
                    q = xs * a_ + along_y
                    t = min(max(q, zero), one)
                    d = xs * c_ - across_y
                    d2 = d * d
                    over = q - t                        # overshoot beyond an end cap
                    over = over * over
                    d2 = d2 + over * len2               # squared distance to the segment
                    rr = t * dr + rad0
                    rr = rr * rr
                    if not d2 <= rr:
                        continue
                    c0, c1, c2 = r0, g0, b0
                    if stripes > 0.0:
                        band = stripes * np.float64(t)   # float64, as in the band formula
                        if band - math.floor(band) >= 0.5:
                            c0, c1, c2 = r1, g1, b1
                    if tipped and t > tip_from:
                        c0, c1, c2 = r2, g2, b2
                    if neg_shade < zero:                # darker towards the outline
                        s = d2 / rr
                        s = s * neg_shade + one
                        c0, c1, c2 = c0 * s, c1 * s, c2 * s
                    if grain > zero:
                        n = grain * tex[layer, ty + y, tx + x]
                        c0, c1, c2 = c0 + n, c1 + n, c2 + n
                    img[0, y, x], img[1, y, x], img[2, y, x] = c0, c1, c2
                    if marks:
                        mask[y, x] = True
        elif kind == CONVEX:
            n_edges = int(op[_POLY_EDGES])
            banded, split = op[_POLY_BANDS] != 0.0, op[_POLY_SPLIT] != 0.0
            box_, boy, bux, buy = (_f32(op[_POLY_BANDS + 1]), _f32(op[_POLY_BANDS + 2]),
                                   _f32(op[_POLY_BANDS + 3]), _f32(op[_POLY_BANDS + 4]))
            r1, g1, b1 = _f32(op[_POLY_BANDS + 5]), _f32(op[_POLY_BANDS + 6]), _f32(op[_POLY_BANDS + 7])
            sox, soy, sux, suy = (_f32(op[_POLY_SPLIT + 1]), _f32(op[_POLY_SPLIT + 2]),
                                  _f32(op[_POLY_SPLIT + 3]), _f32(op[_POLY_SPLIT + 4]))
            offset = _f32(op[_POLY_SPLIT + 5])
            r2, g2, b2 = _f32(op[_POLY_SPLIT + 6]), _f32(op[_POLY_SPLIT + 7]), _f32(op[_POLY_SPLIT + 8])
            for y in range(by0, by1):
                fy = _f32(y)
                for x in range(bx0, bx1):
                    fx = _f32(x)
                    inside = True
                    for ei in range(n_edges):   # on the inner side of edge ei: x * a >= y * b - c
                        col = _POLY_EDGES + 1 + 3 * ei
                        if not fx * _f32(op[col]) >= fy * _f32(op[col + 1]) - _f32(op[col + 2]):
                            inside = False
                            break
                    if not inside:
                        continue
                    c0, c1, c2 = r0, g0, b0
                    if banded:   # stripes across the axis
                        phase = (fx - box_) * bux + (fy - boy) * buy
                        if phase - _f32(math.floor(phase)) >= _f32(0.5):
                            c0, c1, c2 = r1, g1, b1
                    if split and (fx - sox) * sux + (fy - soy) * suy < offset:
                        c0, c1, c2 = r2, g2, b2
                    if grain > zero:
                        n = grain * tex[layer, ty + y, tx + x]
                        c0, c1, c2 = c0 + n, c1 + n, c2 + n
                    _blend(img, y, x, c0, c1, c2, alpha)
                    if marks:
                        mask[y, x] = True
        else:   # ELLIPSE: u and v are the coordinates along its axes in units of the semi-axes
            cx, cy = _f32(op[_ELL]), _f32(op[_ELL + 1])
            ux_, uy_, vx_, vy_ = _f32(op[_ELL + 2]), _f32(op[_ELL + 3]), _f32(op[_ELL + 4]), _f32(op[_ELL + 5])
            for y in range(by0, by1):
                fy = _f32(y) - cy
                u_y, v_y = fy * uy_, fy * vy_
                for x in range(bx0, bx1):
                    fx = _f32(x) - cx
                    u = fx * ux_ + u_y
                    v = fx * vx_ + v_y
                    if u * u + v * v <= one:
                        _blend(img, y, x, r0, g0, b0, alpha)
                        if marks:
                            mask[y, x] = True
    size_y, size_x = img.shape[1], img.shape[2]
    use_noise = noise.shape[0] > 0
    for c in range(3):
        for y in range(size_y):
            for x in range(size_x):
                v = img[c, y, x]
                if use_noise:
                    n = noise[c, noise_y + y, noise_x + x]
                    v = v + n if noise_add else v - n
                img[c, y, x] = min(max(v, zero), one)


@numba.njit(cache=True, nogil=True)
def upsample(grid, lo, w):
    """Bilinear upsampling of ``grid`` (C, k, k) float32 to (C, S, S): pixel i of an axis reads
    cells lo[i] and lo[i] + 1 (lo (S,) int) with weight w[i] (float32) on the second. Along x
    first, then along y, each as a + (b - a) * w."""
    channels, k, size = grid.shape[0], grid.shape[1], lo.shape[0]
    rows = np.empty((channels, k, size), dtype=np.float32)
    for c in range(channels):
        for r in range(k):
            for i in range(size):
                a = grid[c, r, lo[i]]
                rows[c, r, i] = a + (grid[c, r, lo[i] + 1] - a) * w[i]
    out = np.empty((channels, size, size), dtype=np.float32)
    for c in range(channels):
        for j in range(size):
            r, wj = lo[j], w[j]
            for i in range(size):
                a = rows[c, r, i]
                out[c, j, i] = (rows[c, r + 1, i] - a) * wj + a
    return out


def _bbox(size: int, x0: float, x1: float, y0: float, y1: float):
    """Pixels [bx0, bx1) x [by0, by1) whose centres can lie in [x0, x1] x [y0, y1], clipped
    to a size x size image; None if empty."""
    bx0, bx1 = max(math.floor(x0), 0), min(math.ceil(x1) + 1, size)
    by0, by1 = max(math.floor(y0), 0), min(math.ceil(y1) + 1, size)
    if bx0 >= bx1 or by0 >= by1:
        return None
    return bx0, by0, bx1, by1


_PAD = [0.0] * WIDTH


class Shapes:
    """The shapes of one size x size image, queued in painting order as rows for :func:`paint`.

    ``grain`` arguments are (amplitude, layer, row offset, column offset) into the grain field,
    or None. ``mark=True`` also marks the shape's pixels in ``paint``'s mask.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: list[float] = []   # flat: WIDTH values per shape

    def _add(self, row: list) -> None:
        row += _PAD[len(row):]
        self._rows += row

    def table(self) -> np.ndarray:
        """(K, WIDTH) float64: the queued shapes."""
        return np.array(self._rows, dtype=np.float64).reshape(-1, WIDTH)

    def capsule(self, p0, p1, r0: float, r1: float, colour, shade: float,
                stripes: tuple | None = None, tip: tuple | None = None, grain=None) -> None:
        """Tapered capsule from p0 (radius r0) to p1 (radius r1), its radius linear along the
        axis; shaded darker towards the outline as colour * (1 - shade * (distance / radius)^2);
        ``stripes`` = (period in pixels, RGB) paints bands across the axis; ``tip`` = (t0, RGB)
        paints the part beyond fraction t0 of the axis."""
        x0, y0, x1, y1 = float(p0[0]), float(p0[1]), float(p1[0]), float(p1[1])
        rmax = r0 if r0 > r1 else r1
        lo_x, hi_x = (x0, x1) if x0 < x1 else (x1, x0)
        lo_y, hi_y = (y0, y1) if y0 < y1 else (y1, y0)
        box = _bbox(self.size, lo_x - rmax, hi_x + rmax, lo_y - rmax, hi_y + rmax)
        if box is None:
            return
        bx0, by0 = box[0], box[1]
        vx, vy = x1 - x0, y1 - y0
        len2 = vx * vx + vy * vy
        if len2 < 1e-6:   # a zero-length capsule (a disk) as a tiny segment
            vx = 1e-3
            len2 = vx * vx + vy * vy
        length = math.sqrt(len2)
        self._add([
            CAPSULE, *box, 0.0, *colour, 1.0, *(grain or (0.0, 0.0, 0.0, 0.0)),
            # Per pixel, relative to p0: X0, A, C, len2, r1 - r0, r0, -shade; per row: Y0, B, D.
            bx0 - x0, vx / len2, vy / length, len2, r1 - r0, r0, -shade, by0 - y0, vy / len2, vx / length,
            *((length / stripes[0], *stripes[1]) if stripes else (0.0, 0.0, 0.0, 0.0)),
            *((1.0, *tip[:1], *tip[1]) if tip else ()),
        ])

    def convex(self, pts, colour, alpha: float = 1.0, bands=None, grain=None, split=None,
               mark: bool = False) -> None:
        """Filled convex polygon (3 or 4 vertices, either winding) with vertices ``pts``
        ((n, 2) array or (x, y) pairs). ``bands`` = (origin, unit axis, period, RGB) paints
        stripes across the axis; ``split`` = (origin, unit axis, offset, RGB) paints RGB where
        the projection on the axis is below the offset, over the stripes."""
        p = pts.tolist() if isinstance(pts, np.ndarray) else pts
        if not 3 <= len(p) <= 4:
            raise ValueError(f"a convex shape has 3 or 4 vertices, got {len(p)}")
        xs_p, ys_p = [v[0] for v in p], [v[1] for v in p]
        box = _bbox(self.size, min(xs_p), max(xs_p), min(ys_p), max(ys_p))
        if box is None:
            return
        # Inside = on the inner side of every edge (xi, yi) -> (xj, yj): in float32,
        # x * a >= y * b - c with (a, b, c) = (dy, dx, dx * yi - dy * xi), all negated for the
        # other winding (negation is exact and rounding symmetric, so either side is exact).
        area, edges = 0.0, []
        xi, yi = p[-1]
        for xj, yj in p:
            area += xi * yj - xj * yi
            dx, dy = xj - xi, yj - yi
            edges.append((dy, dx, dx * yi - dy * xi))
            xi, yi = xj, yj
        sign = -1.0 if area >= 0 else 1.0
        row = [CONVEX, *box, float(mark), *colour, alpha, *(grain or (0.0, 0.0, 0.0, 0.0)), len(p)]
        for a, b, c in edges:
            row += (sign * a, sign * b, sign * c)
        row += _PAD[len(row):_POLY_BANDS]
        if bands is not None:
            (ox, oy), (ux, uy), period, colour2 = bands
            row += (1.0, ox, oy, ux / period, uy / period, *colour2)
        else:
            row += _PAD[:8]
        if split is not None:
            (ox, oy), (ux, uy), offset, colour3 = split
            row += (1.0, ox, oy, ux, uy, offset, *colour3)
        self._add(row)

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float, colour,
                alpha: float = 1.0, mark: bool = False) -> None:
        """Filled ellipse centred at (cx, cy) with semi-axes a (along ``angle`` radians) and b."""
        r = max(a, b)
        box = _bbox(self.size, cx - r, cx + r, cy - r, cy + r)
        if box is None:
            return
        c, s = math.cos(angle), math.sin(angle)
        self._add([ELLIPSE, *box, float(mark), *colour, alpha, 0.0, 0.0, 0.0, 0.0,
                   cx, cy, c / a, s / a, -s / b, c / b])

    def box(self, x0: float, y0: float, x1: float, y1: float, colour, alpha: float = 1.0) -> None:
        """Axis-aligned filled rectangle: the pixel centres in [x0, x1] x [y0, y1]."""
        box = _bbox(self.size, math.ceil(x0), math.floor(x1), math.ceil(y0), math.floor(y1))
        if box is not None:
            self._add([BOX, *box, 0.0, *colour, alpha])

    def pixel(self, p, colour) -> None:
        """The one pixel nearest to point p."""
        x, y = math.floor(p[0] + 0.5), math.floor(p[1] + 0.5)
        if 0 <= x < self.size and 0 <= y < self.size:
            self._add([BOX, x, y, x + 1, y + 1, 0.0, *colour, 1.0])
