"""Losses against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import losses


def test_cross_entropy_hand_computed():
    # softmax([0, ln 3]) = [1/4, 3/4].
    logits = jnp.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    labels = jnp.array([1, 0])
    got = losses.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(got, [-math.log(0.75), -math.log(0.25)], rtol=1e-6)


def test_cross_entropy_label_smoothing_hand_computed():
    # K=2, smoothing 0.2: targets [0.1, 0.9] for label 1.
    logits = jnp.array([[0.0, math.log(3.0)]])
    got = losses.softmax_cross_entropy(logits, jnp.array([1]), label_smoothing=0.2)
    want = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    np.testing.assert_allclose(got, [want], rtol=1e-6)


def test_cross_entropy_is_float32_for_bf16_logits_and_stable():
    logits = jnp.array([[1000.0, 0.0, -1000.0]], jnp.bfloat16)
    got = losses.softmax_cross_entropy(logits, jnp.array([0]))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, [0.0], atol=1e-6)


def test_cross_entropy_checks_shapes():
    with pytest.raises(AssertionError):
        losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32))


def test_sigmoid_focal_loss_hand_computed():
    # logit 0: p = 0.5. Target 1: 0.25 * 0.5**2 * log 2; target 0: 0.75 * 0.5**2 * log 2.
    got = losses.sigmoid_focal_loss(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]))
    want = [[0.25 * 0.25 * math.log(2.0), 0.75 * 0.25 * math.log(2.0)]]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # logit ln 3: p = 3/4, target 1: alpha 0.25 * (1/4)**2 * -log(3/4).
    got = losses.sigmoid_focal_loss(jnp.array([math.log(3.0)]), jnp.array([1.0]))
    np.testing.assert_allclose(got, [0.25 * (1 / 16) * -math.log(0.75)], rtol=1e-6)


def test_sigmoid_focal_loss_gamma_0_no_alpha_is_bce():
    logits = jnp.array([[-3.0, 0.5, 2.0], [1.0, -0.2, 4.0]])
    targets = jnp.array([[0, 1, 1], [1, 0, 0]], jnp.int32)
    got = losses.sigmoid_focal_loss(logits, targets, alpha=None, gamma=0.0)
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    t = np.asarray(targets)
    want = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sigmoid_focal_loss_stable_for_large_logits():
    logits = jnp.array([100.0, -100.0, 100.0, -100.0], jnp.bfloat16)
    targets = jnp.array([1.0, 0.0, 0.0, 1.0])
    got = losses.sigmoid_focal_loss(logits, targets)
    assert got.dtype == jnp.float32
    # Confident right: ~0. Confidently wrong: alpha_t * 1 * 100.
    np.testing.assert_allclose(got, [0.0, 0.0, 75.0, 25.0], atol=1e-6)
    grads = jax.grad(lambda x: losses.sigmoid_focal_loss(x, targets).sum())(
        logits.astype(jnp.float32)
    )
    assert np.isfinite(grads).all()


def test_sigmoid_focal_loss_checks_shapes():
    with pytest.raises(AssertionError):
        losses.sigmoid_focal_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_giou_loss_hand_computed():
    pred = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    target = jnp.array(
        [[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]]
    )
    got = losses.giou_loss(pred, target)
    np.testing.assert_allclose(got, [1 - (1 / 7 - 2 / 9), 0.0, 1 + 3 / 8], rtol=1e-6)


def test_giou_loss_checks_shapes():
    with pytest.raises(AssertionError):
        losses.giou_loss(jnp.zeros((2, 4)), jnp.zeros((3, 4)))
    with pytest.raises(AssertionError):
        losses.giou_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)))


def test_smooth_l1_loss_hand_computed():
    pred = jnp.array([[0.05, -0.3, 1.0], [2.0, 0.0, -0.1]])
    target = jnp.array([[0.0, 0.0, 1.0], [0.5, 0.1, 0.0]])
    # beta 0.1, n = |pred - target| = [[0.05, 0.3, 0], [1.5, 0.1, 0.1]]:
    #   n < beta: 0.5 * n**2 / beta -> 0.05: 0.0125; 0: 0.
    #   n >= beta: n - 0.05        -> 0.3: 0.25; 1.5: 1.45; 0.1 (the seam): 0.05.
    got = losses.smooth_l1_loss(pred, target, beta=0.1)
    want = [[0.0125, 0.25, 0.0], [1.45, 0.05, 0.05]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # beta 1: every n <= 1.5 -> 0.5 * n**2 except 1.5 -> 1.5 - 0.5 = 1.
    got = losses.smooth_l1_loss(pred, target, beta=1.0)
    want = [[0.00125, 0.045, 0.0], [1.0, 0.005, 0.005]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # beta 0: plain L1.
    got = losses.smooth_l1_loss(pred, target, beta=0.0)
    np.testing.assert_allclose(got, [[0.05, 0.3, 0.0], [1.5, 0.1, 0.1]], rtol=1e-6)


def test_smooth_l1_loss_float32_with_finite_gradients():
    pred = jnp.array([0.0, 0.05, -2.0], jnp.bfloat16)
    got = losses.smooth_l1_loss(pred, jnp.zeros(3), beta=0.1)
    assert got.dtype == jnp.float32
    # d/dpred: n / beta inside the quadratic zone (0, 0.5), sign outside (-1).
    grads = jax.grad(lambda x: losses.smooth_l1_loss(x, jnp.zeros(3), 0.1).sum())(
        jnp.array([0.0, 0.05, -2.0])
    )
    np.testing.assert_allclose(grads, [0.0, 0.5, -1.0], rtol=1e-6)


def test_smooth_l1_loss_checks_shapes():
    with pytest.raises(AssertionError):
        losses.smooth_l1_loss(jnp.zeros((2, 4)), jnp.zeros((3, 4)), beta=0.1)


def _target_logits(cos, **margin):
    """The margin logits of class 0 for examples whose class-0 cosines are `cos` [N]."""
    cos = jnp.atleast_1d(jnp.asarray(cos, jnp.float32))
    cosines = jnp.stack([cos, jnp.full_like(cos, 0.3)], axis=1)  # [N, 2]
    labels = jnp.zeros(len(cos), jnp.int32)
    return np.asarray(losses.combined_margin_logits(cosines, labels, **margin)[:, 0])


def _target_logit(cos, **margin):
    return float(_target_logits(cos, **margin)[0])


ARCFACE = {"scale": 2.0, "m1": 1.0, "m2": 0.5, "m3": 0.0}
COSFACE = {"scale": 2.0, "m1": 1.0, "m2": 0.0, "m3": 0.35}
SPHEREFACE = {"scale": 2.0, "m1": 1.35, "m2": 0.0, "m3": 0.0}


def test_margin_logits_hand_computed():
    # theta = 60 degrees (cos 0.5): arcface cos(60 deg + 0.5 rad) = 0.5 cos 0.5 - sin(60 deg) sin 0.5.
    arc = 0.5 * math.cos(0.5) - math.sqrt(0.75) * math.sin(0.5)  # 0.023589
    assert _target_logit(0.5, **ARCFACE) == pytest.approx(2 * arc, abs=1e-6)
    assert _target_logit(0.5, **COSFACE) == pytest.approx(2 * (0.5 - 0.35), abs=1e-6)
    # sphereface: cos(1.35 * pi / 3) = cos(1.41372) = 0.156434.
    assert _target_logit(0.5, **SPHEREFACE) == pytest.approx(2 * 0.156434, abs=1e-5)
    # The other class keeps s * cos.
    logits = losses.combined_margin_logits(jnp.array([[0.5, 0.3]]), jnp.array([0]), **ARCFACE)
    assert float(logits[0, 1]) == pytest.approx(0.6, abs=1e-6)
    # (1, 0, 0): the normalised softmax, s * cos everywhere.
    plain = losses.combined_margin_logits(
        jnp.array([[0.5, 0.3]]), jnp.array([0]), scale=2.0, m1=1.0, m2=0.0, m3=0.0)
    np.testing.assert_allclose(plain, [[1.0, 0.6]], atol=1e-6)


def test_margin_logits_near_theta_0_and_pi():
    # theta = 0: cos(0 + 0.5) = 0.877583 (sin theta is floored at 1e-3: within 5e-4).
    assert _target_logit(1.0, **ARCFACE) == pytest.approx(2 * math.cos(0.5), abs=1e-3)
    # theta = pi is past arcface's boundary pi - 0.5 (cos -0.877583): the logit
    # continues as cos(theta) - d, d = cos(pi - 0.5) - cos(pi) = 0.122417.
    assert _target_logit(-1.0, **ARCFACE) == pytest.approx(2 * (-1.0 - 0.122417), abs=1e-5)
    # sphereface's boundary is pi / 1.35 (cos -0.686242): d = 0.313758.
    assert _target_logit(-1.0, **SPHEREFACE) == pytest.approx(2 * (-1.313758), abs=1e-5)
    assert _target_logit(-1.0, **COSFACE) == pytest.approx(2 * (-1.35), abs=1e-6)
    # easy margin: no margin where cos <= 0.
    assert _target_logit(-1.0, **ARCFACE, easy_margin=True) == pytest.approx(-2.0, abs=1e-6)
    assert _target_logit(1.0, **ARCFACE, easy_margin=True) == pytest.approx(
        _target_logit(1.0, **ARCFACE))


@pytest.mark.parametrize("margin", [ARCFACE, COSFACE, SPHEREFACE])
def test_margin_logits_continuous_and_decreasing_in_theta(margin):
    thetas = np.linspace(0.0, math.pi, 2001)
    target = _target_logits(np.cos(thetas), **margin)
    steps = np.diff(target)
    assert np.all(steps <= 1e-5), "the target logit must never grow as theta grows"
    assert np.max(np.abs(steps)) < 0.02  # No jump (a 1-mrad step moves it < 0.01 * s).


@pytest.mark.parametrize("margin", [ARCFACE, COSFACE, SPHEREFACE])
@pytest.mark.parametrize("cos", [1.0, 0.9999999, -0.9999999, -1.0])
def test_margin_loss_finite_gradients_at_the_ends(margin, cos):
    def loss(cosines):
        logits = losses.combined_margin_logits(cosines, jnp.array([0, 1]), **margin)
        return losses.softmax_cross_entropy(logits, jnp.array([0, 1])).sum()

    cosines = jnp.array([[cos, 0.1], [0.2, cos]], jnp.float32)
    value, grad = jax.value_and_grad(loss)(cosines)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
