"""The compiled rasteriser behind SyntheticPoses (cpm_lab.data._raster): each primitive paints
the pixels whose centres lie in the shape, in painting order, with its colour rules; checked
against float64 geometry written out here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cpm_lab.data import _raster

SIZE = 96
RED, BLUE, GREEN = (0.9, 0.1, 0.1), (0.1, 0.2, 0.8), (0.2, 0.7, 0.3)
_NO_NOISE = np.zeros((0, 0, 0), dtype=np.float32)


def paint(shapes: _raster.Shapes, img=None, tex=None):
    """Paint ``shapes`` on a black image (or ``img``); returns (image, mask of marked pixels)."""
    img = np.zeros((3, SIZE, SIZE), dtype=np.float32) if img is None else img
    tex = np.zeros((1, SIZE, SIZE), dtype=np.float32) if tex is None else tex
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    _raster.paint(img, shapes.table(), tex, mask, _NO_NOISE, 0, 0, True)
    return img, mask


def centres():
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    return x, y


def assert_same_up_to_the_outline(painted, inside, slack):
    """``painted`` equals the float64 ``inside`` test except where the shape's own distance
    function is within ``slack`` of its boundary (float32 may round either way there)."""
    differ = painted != inside
    assert not (differ & ~slack).any(), np.argwhere(differ & ~slack)[:5]


def test_ellipse_paints_the_pixels_inside_and_marks_them():
    shapes = _raster.Shapes(SIZE)
    cx, cy, a, b, angle = 47.3, 50.6, 30.0, 12.5, 0.6
    shapes.ellipse(cx, cy, a, b, angle, RED, mark=True)
    img, mask = paint(shapes)
    x, y = centres()
    u = ((x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)) / a
    v = (-(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)) / b
    level = u * u + v * v
    painted = img[0] > 0
    assert_same_up_to_the_outline(painted, level <= 1, np.abs(level - 1) < 1e-5)
    assert painted.sum() == pytest.approx(math.pi * a * b, rel=0.02)
    assert np.array_equal(mask, painted)
    np.testing.assert_array_equal(img[:, painted].T, np.tile(np.float32(RED), (painted.sum(), 1)))


def test_convex_polygon_in_either_winding():
    pts = [(10.2, 80.5), (70.9, 60.1), (30.4, 8.3)]
    images = []
    for order in (pts, pts[::-1]):
        shapes = _raster.Shapes(SIZE)
        shapes.convex(order, GREEN)
        images.append(paint(shapes)[0])
    assert np.array_equal(images[0], images[1])
    x, y = centres()
    sides = []   # signed distance to each edge, positive inside (pts wind clockwise on screen)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        sides.append(((x - x0) * (y1 - y0) - (y - y0) * (x1 - x0)) / math.hypot(x1 - x0, y1 - y0))
    sides = np.stack(sides)
    inside = (sides >= 0).all(axis=0) if (sides[:, 48, 40] > 0).all() else (sides <= 0).all(axis=0)
    painted = images[0][1] > 0
    assert_same_up_to_the_outline(painted, inside, (np.abs(sides) < 1e-4).any(axis=0))
    area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1])))
    assert painted.sum() == pytest.approx(area, rel=0.03)


def test_convex_bands_and_split():
    shapes = _raster.Shapes(SIZE)
    square = [(20, 20), (80, 20), (80, 80), (20, 80)]
    # Stripes of period 10 px along x; below y = 50 (projection on -y under -50) all blue.
    shapes.convex(square, RED, bands=((20.0, 0.0), (1.0, 0.0), 10.0, GREEN),
                  split=((0.0, 50.0), (0.0, -1.0), -0.5, BLUE))
    img, _ = paint(shapes)
    top_row = img[:, 30, 20:81].T
    expected = [GREEN if (c % 10) >= 5 else RED for c in range(0, 61)]
    np.testing.assert_array_equal(top_row, np.float32(expected))
    assert (img[:, 52:81, 20:81] == np.float32(BLUE)[:, None, None]).all()


def test_capsule_covers_the_tapered_segment_with_shading_tip_and_stripes():
    (x0, y0), (x1, y1), r0, r1 = (20.0, 30.0), (76.0, 44.0), 9.0, 5.0
    x, y = centres()
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    along = ((x - x0) * ux + (y - y0) * uy) / length
    t = np.clip(along, 0, 1)
    dist = np.hypot(x - (x0 + t * (x1 - x0)), y - (y0 + t * (y1 - y0)))
    radius = r0 + t * (r1 - r0)

    shapes = _raster.Shapes(SIZE)
    shapes.capsule((x0, y0), (x1, y1), r0, r1, RED, shade=0.35)
    img, _ = paint(shapes)
    painted = img[0] > 0
    assert_same_up_to_the_outline(painted, dist <= radius, np.abs(dist - radius) < 1e-3)
    # Shading: the colour times 1 - shade * (distance / radius)^2.
    want = np.float32(RED)[:, None] * (1 - 0.35 * (dist / radius) ** 2)[painted]
    np.testing.assert_allclose(img[:, painted], want, atol=1e-5)

    shapes = _raster.Shapes(SIZE)
    shapes.capsule((x0, y0), (x1, y1), r0, r1, RED, shade=0, stripes=(8.0, GREEN), tip=(0.75, BLUE))
    img, _ = paint(shapes)
    painted = img[0] > 0
    band = (t * length / 8.0) % 1.0 >= 0.5
    want = np.where(t > 0.75, 2, np.where(band, 1, 0))
    got = np.select([(img == np.float32(c)[:, None, None]).all(axis=0) for c in (RED, GREEN, BLUE)], [0, 1, 2], -1)
    wrong = painted & (got != want)
    # Only where float32 rounds a band or tip boundary differently from float64.
    edge = (np.abs((t * length / 8.0 + 0.5) % 0.5 - 0.25) > 0.2499) | (np.abs(t - 0.75) < 1e-5)
    assert not (wrong & ~edge).any() and (got[painted] >= 0).all()
    assert {0, 1, 2} <= set(got[painted].tolist())


def test_grain_is_added_from_the_field_at_the_offset():
    tex = np.random.default_rng(0).standard_normal((2, SIZE + 8, SIZE + 8)).astype(np.float32)
    shapes = _raster.Shapes(SIZE)
    shapes.capsule((30.0, 30.0), (60.0, 60.0), 8.0, 8.0, (0.5, 0.5, 0.5), shade=0, grain=(0.1, 1, 3, 5))
    img, _ = paint(shapes, tex=tex)
    painted = (img > 0).any(axis=0)
    want = np.float32(0.5) + np.float32(0.1) * tex[1, 3:3 + SIZE, 5:5 + SIZE]
    np.testing.assert_array_equal(img[0][painted], np.clip(want, 0, 1)[painted])


def test_painting_order_opacity_boxes_and_pixels():
    shapes = _raster.Shapes(SIZE)
    shapes.box(10, 10, 50.5, 50.5, RED)
    shapes.box(30, 30, 70, 70, BLUE, alpha=0.25)    # blends over red and over black
    shapes.pixel((40.4, 39.6), GREEN)                # the pixel nearest to the point
    shapes.box(200, 200, 300, 300, GREEN)            # off the image: dropped
    assert shapes.table().shape == (3, _raster.WIDTH)
    img, _ = paint(shapes)
    red, blue = np.float32(RED), np.float32(BLUE)
    np.testing.assert_array_equal(img[:, 20, 20], red)
    np.testing.assert_array_equal(img[:, 35, 35], red * np.float32(0.75) + blue * np.float32(0.25))
    np.testing.assert_array_equal(img[:, 60, 60], blue * np.float32(0.25))
    np.testing.assert_array_equal(img[:, 40, 40], np.float32(GREEN))
    assert (img[:, 9, :] == 0).all() and (img[:, 51, 10:30] == 0).all()   # box edges: pixel centres in [x0, x1]


def test_noise_is_added_or_subtracted_then_clipped():
    shapes = _raster.Shapes(SIZE)
    noise = np.full((3, SIZE + 4, SIZE + 4), 0.3, dtype=np.float32)
    noise[:, 2:, 2:] = 0.7
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for add, want in ((True, 1.0), (False, 0.0)):
        img = np.full((3, SIZE, SIZE), 0.5, dtype=np.float32)
        _raster.paint(img, shapes.table(), np.zeros((1, 1, 1), np.float32), mask, noise, 2, 2, add)
        assert (img == np.float32(want)).all()


def test_upsample_is_bilinear_with_clamped_edges():
    from cpm_lab.data.synthetic import _upsample
    grid = np.random.default_rng(1).random((3, 4, 4), dtype=np.float32)
    out = _upsample(grid, 32)
    pos = np.clip((np.arange(32) + 0.5) / 32 * 4 - 0.5, 0, 3)
    lo = np.minimum(np.floor(pos).astype(int), 2)
    w = pos - lo
    g = grid.astype(np.float64)
    rows = g[:, :, lo] * (1 - w) + g[:, :, lo + 1] * w
    want = rows[:, lo] * (1 - w)[:, None] + rows[:, lo + 1] * w[:, None]
    np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_array_equal(out[:, 0, 0], grid[:, 0, 0])
