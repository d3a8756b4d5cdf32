"""Anchor and point generation: counts per level and exact coordinates."""

import math

import numpy as np

from jaxvision.ops import anchors


def test_fpn_strides():
    assert anchors.fpn_strides() == (8, 16, 32, 64, 128)
    assert anchors.fpn_strides((2, 3)) == (4, 8)


def test_anchor_and_point_counts_per_level():
    per_level = anchors.anchors((128, 128))
    assert [a.shape for a in per_level] == [
        (16 * 16 * 9, 4),
        (8 * 8 * 9, 4),
        (4 * 4 * 9, 4),
        (2 * 2 * 9, 4),
        (1 * 1 * 9, 4),
    ]
    assert [p.shape for p in anchors.points((128, 128))] == [
        (256, 2),
        (64, 2),
        (16, 2),
        (4, 2),
        (1, 2),
    ]


def test_counts_use_ceil_for_sizes_not_divisible_by_stride():
    # 100 x 60: ceil(100/8)=13, ceil(60/8)=8; ... ; ceil(100/128)=ceil(60/128)=1.
    assert anchors.feature_size((100, 60), 8) == (13, 8)
    counts = [a.shape[0] for a in anchors.anchors((100, 60))]
    assert counts == [13 * 8 * 9, 7 * 4 * 9, 4 * 2 * 9, 2 * 1 * 9, 1 * 1 * 9]
    assert anchors.points_for_level((100, 60), 16).shape == (7 * 4, 2)


def test_points_exact_coordinates_row_major():
    got = anchors.points_for_level((16, 24), 8)  # 2 rows x 3 columns.
    np.testing.assert_allclose(
        got, [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    )


def test_first_anchors_exact_coordinates():
    got = anchors.anchors_for_level(
        (16, 16), 8, sizes=(32.0, 64.0), aspect_ratios=(0.5, 1.0, 2.0)
    )
    assert got.shape == (2 * 2 * 6, 4)
    r = math.sqrt(2.0)
    # Cell (0, 0) centred at (4, 4); size 32: ratio h/w 0.5, 1, 2; then size 64.
    want = [
        [4 - 16 * r, 4 - 8 * r, 4 + 16 * r, 4 + 8 * r],
        [-12, -12, 20, 20],
        [4 - 8 * r, 4 - 16 * r, 4 + 8 * r, 4 + 16 * r],
        [4 - 32 * r, 4 - 16 * r, 4 + 32 * r, 4 + 16 * r],
        [-28, -28, 36, 36],
        [4 - 16 * r, 4 - 32 * r, 4 + 16 * r, 4 + 32 * r],
    ]
    np.testing.assert_allclose(got[:6], want, rtol=1e-6)
    # Next anchors belong to cell (0, 1): shifted right by one stride.
    np.testing.assert_allclose(got[6:12], np.array(want) + [8, 0, 8, 0], rtol=1e-6)


def test_retinanet_sizes_and_area():
    p3 = anchors.anchors((128, 128))[0]
    first = np.asarray(p3[:9])
    widths, heights = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    sides = [32 * 2 ** (k / 3) for k in range(3)]
    np.testing.assert_allclose(
        np.sqrt(widths * heights), np.repeat(sides, 3), rtol=1e-5
    )
    np.testing.assert_allclose(heights / widths, [0.5, 1, 2] * 3, rtol=1e-5)
