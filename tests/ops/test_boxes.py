"""Box ops against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.ops import boxes


def pairwise_giou(a, b):
    """GIoU of every box in `a` [N, 4] with every box in `b` [M, 4] -> `[N, M]`, by broadcasting."""
    return boxes.elementwise_giou(a[:, None, :], b[None, :, :])


def test_cxcywh_round_trip_hand_computed():
    xyxy = jnp.array([[1.0, 2.0, 11.0, 14.0]])
    cxcywh = boxes.xyxy_to_cxcywh(xyxy)
    np.testing.assert_allclose(cxcywh, [[6.0, 8.0, 10.0, 12.0]])
    np.testing.assert_allclose(boxes.cxcywh_to_xyxy(cxcywh), xyxy)


def test_area_clamps_inverted_boxes_to_zero():
    got = boxes.area(jnp.array([[0.0, 0.0, 2.0, 3.0], [2.0, 0.0, 0.0, 3.0]]))
    np.testing.assert_allclose(got, [6.0, 0.0])


def test_pairwise_iou_and_giou_hand_computed():
    a = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    b = jnp.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    # Overlap: inter 1, union 7, enclosing 9. Identical: 1. Disjoint: inter 0,
    # union 5, enclosing [0, 0, 4, 2] = 8.
    iou = boxes.pairwise_iou(a, b)
    giou = pairwise_giou(a, b)
    assert iou.shape == giou.shape == (1, 3)
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(giou, [[1 / 7 - 2 / 9, 1.0, -3 / 8]], rtol=1e-6)


def test_elementwise_matches_pairwise_diagonal_and_vmaps():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, size=(2, 5, 2, 2))
    b = jnp.asarray(np.concatenate([corners.min(2), corners.max(2)], -1))  # [2, 5, 4]
    np.testing.assert_allclose(
        boxes.elementwise_iou(b[0], b[1]),
        jnp.diag(boxes.pairwise_iou(b[0], b[1])),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        boxes.elementwise_giou(b[0], b[1]),
        jnp.diag(pairwise_giou(b[0], b[1])),
        rtol=1e-6,
    )
    batched = jax.vmap(boxes.pairwise_iou)(b, b)  # [2, 5, 5]
    assert batched.shape == (2, 5, 5)
    np.testing.assert_allclose(jnp.diagonal(batched, axis1=1, axis2=2), 1.0, rtol=1e-6)


def test_zero_area_boxes_give_finite_values_and_gradients():
    point = jnp.array([1.0, 1.0, 1.0, 1.0])
    box = jnp.array([0.0, 0.0, 2.0, 2.0])
    a = jnp.stack([point, point, box])
    b = jnp.stack([point, box, point])
    np.testing.assert_allclose(boxes.elementwise_iou(a, b), [0.0, 0.0, 0.0])
    # Point inside the box: union = enclosing = 4, so GIoU 0; two equal points: 0.
    np.testing.assert_allclose(boxes.elementwise_giou(a, b), [0.0, 0.0, 0.0])
    grads = jax.grad(lambda x: boxes.elementwise_giou(x, b).sum())(a)
    assert np.isfinite(grads).all()
    grads = jax.grad(lambda x: boxes.elementwise_iou(x, b).sum())(a)
    assert np.isfinite(grads).all()


def test_encode_hand_computed():
    deltas = boxes.encode(
        jnp.array([1.0, 2.0, 11.0, 14.0]), jnp.array([0.0, 0.0, 10.0, 10.0])
    )
    np.testing.assert_allclose(
        deltas, [0.1, 0.3, 0.0, math.log(1.2)], rtol=1e-6, atol=1e-7
    )
    weighted = boxes.encode(
        jnp.array([1.0, 2.0, 11.0, 14.0]),
        jnp.array([0.0, 0.0, 10.0, 10.0]),
        (10, 10, 5, 5),
    )
    np.testing.assert_allclose(
        weighted, [1.0, 3.0, 0.0, 5 * math.log(1.2)], rtol=1e-6, atol=1e-6
    )


def test_encode_decode_round_trip():
    rng = np.random.default_rng(1)
    # Sides in [4, 64]: ratios stay far below the decode clamp (1000 / 16).
    centers = rng.uniform(0, 100, size=(2, 7, 2))
    sides = rng.uniform(4, 64, size=(2, 7, 2))
    xyxy = boxes.cxcywh_to_xyxy(
        jnp.asarray(np.concatenate([centers, sides], -1))
    )  # [2, 7, 4]
    box, anchor = xyxy[0], xyxy[1]
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        deltas = boxes.encode(box, anchor, weights)
        np.testing.assert_allclose(
            boxes.decode(deltas, anchor, weights), box, rtol=1e-4, atol=1e-3
        )


def test_decode_clamps_scale():
    anchor = jnp.array([0.0, 0.0, 16.0, 16.0])
    got = boxes.decode(jnp.array([0.0, 0.0, 100.0, 100.0]), anchor)
    # exp(log(1000 / 16)) * 16 = 1000, centred on the anchor centre 8.
    np.testing.assert_allclose(got, [-492.0, -492.0, 508.0, 508.0], rtol=1e-5)


def test_clip():
    got = boxes.clip(jnp.array([[-5.0, 3.0, 70.0, 50.0]]), height=40, width=64)
    np.testing.assert_allclose(got, [[0.0, 3.0, 64.0, 40.0]])
