"""The Kalman filter against a float64 NumPy transcription of ByteTrack's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import kalman

WP, WV = 1 / 20, 1 / 160  # ByteTrack's std weights (position, velocity).
MOTION = np.eye(8) + np.eye(8, k=4)  # [8, 8]
OBSERVE = np.eye(4, 8)  # [4, 8]
NUM = 64  # Random cases per test, batched with vmap (one compilation each).

initiate = jax.jit(jax.vmap(kalman.initiate))
predict = jax.jit(jax.vmap(kalman.predict))
project = jax.jit(jax.vmap(kalman.project))
update = jax.jit(jax.vmap(kalman.update))
gating_distance = jax.jit(jax.vmap(kalman.gating_distance))


def np_initiate(z):
    h = z[3]
    std = [2 * WP * h, 2 * WP * h, 1e-2, 2 * WP * h,
           10 * WV * h, 10 * WV * h, 1e-5, 10 * WV * h]  # fmt: skip
    return np.r_[z, np.zeros(4)], np.diag(np.square(std))


def np_predict(mean, cov):
    h = mean[3]
    std = [WP * h, WP * h, 1e-2, WP * h, WV * h, WV * h, 1e-5, WV * h]
    return MOTION @ mean, MOTION @ cov @ MOTION.T + np.diag(np.square(std))


def np_project(mean, cov):
    h = mean[3]
    std = [WP * h, WP * h, 1e-1, WP * h]
    return OBSERVE @ mean, OBSERVE @ cov @ OBSERVE.T + np.diag(np.square(std))


def np_update(mean, cov, z):
    projected_mean, s = np_project(mean, cov)
    gain = cov @ OBSERVE.T @ np.linalg.inv(s)  # [8, 4]
    return mean + gain @ (z - projected_mean), cov - gain @ s @ gain.T


def np_gating_distance(mean, cov, measurements):
    projected_mean, s = np_project(mean, cov)
    d = measurements - projected_mean  # [N, 4]
    return np.einsum("ni,ij,nj->n", d, np.linalg.inv(s), d)


def random_measurements(rng, n):
    """`[n, 4]` plausible `(cx, cy, a, h)`."""
    return np.stack(
        [
            rng.uniform(0, 600, n),
            rng.uniform(0, 400, n),
            rng.uniform(0.3, 2.0, n),
            rng.uniform(20, 200, n),
        ],
        axis=1,
    )


def random_states(rng, n):
    """`[n, 8]` means and `[n, 8, 8]` random positive-definite covariances.

    Standard deviations on the scale the filter produces (a few times the
    process noise), with random correlations.
    """
    z = random_measurements(rng, n)  # [n, 4]
    h = z[:, 3:]
    velocity = rng.normal(size=(n, 4)) * np.array([2.0, 2.0, 0.01, 1.0])
    mean = np.concatenate([z, velocity], axis=1)  # [n, 8]
    scale = np.concatenate(
        [WP * h, WP * h, np.full_like(h, 1e-2), WP * h,
         WV * h, WV * h, np.full_like(h, 1e-3), WV * h], axis=1,
    ) * rng.uniform(0.5, 3.0, size=(n, 8))  # fmt: skip
    a = rng.normal(size=(n, 8, 8))
    corr = a @ a.transpose(0, 2, 1) + 8 * np.eye(8)  # [n, 8, 8]
    d = np.sqrt(np.diagonal(corr, axis1=1, axis2=2))  # [n, 8]
    corr = corr / d[:, :, None] / d[:, None, :]
    cov = corr * scale[:, :, None] * scale[:, None, :]  # [n, 8, 8]
    return mean, cov


def f32(x):
    return jnp.asarray(x, jnp.float32)


def assert_close(got, want, rtol=1e-4):
    """Relative to the scale of `want` per case (float32 vs float64)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).reshape(len(want), -1).max(1)  # [n]
    err = np.abs(got - want).reshape(len(want), -1).max(1)
    assert np.all(err <= rtol * scale + 1e-12), (err / scale).max()


@pytest.mark.parametrize("seed", [0, 1])
def test_initiate_predict_project_match_numpy(seed):
    rng = np.random.default_rng(seed)
    z = random_measurements(rng, NUM)
    mean, cov = initiate(f32(z))
    want = [np_initiate(x) for x in z]
    assert_close(mean, np.stack([w[0] for w in want]))
    assert_close(cov, np.stack([w[1] for w in want]))

    mean, cov = random_states(rng, NUM)
    for ours, ref in ((predict, np_predict), (project, np_project)):
        got = ours(f32(mean), f32(cov))
        want = [ref(m, c) for m, c in zip(mean, cov)]
        assert_close(got[0], np.stack([w[0] for w in want]))
        assert_close(got[1], np.stack([w[1] for w in want]))


@pytest.mark.parametrize("seed", [0, 1])
def test_update_and_gating_distance_match_numpy(seed):
    rng = np.random.default_rng(seed)
    mean, cov = random_states(rng, NUM)  # [n, 8], [n, 8, 8]
    noise = rng.normal(size=(NUM, 5, 4)) * np.array([3.0, 3.0, 0.05, 3.0])
    measurements = mean[:, None, :4] + noise  # [n, 5, 4]
    got_mean, got_cov = update(f32(mean), f32(cov), f32(measurements[:, 0]))
    want = [np_update(m, c, z[0]) for m, c, z in zip(mean, cov, measurements)]
    assert_close(got_mean, np.stack([w[0] for w in want]))
    # The covariance shrinks by cancellation, so float32 keeps fewer digits.
    assert_close(got_cov, np.stack([w[1] for w in want]), rtol=1e-3)

    got = gating_distance(f32(mean), f32(cov), f32(measurements))  # [n, 5]
    want = np.stack(
        [np_gating_distance(*args) for args in zip(mean, cov, measurements)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    # The noise is a few sigmas: both sides of the gate occur.
    assert 0 < np.mean(want <= kalman.CHI2_95_4DOF) < 1


def test_constant_velocity_motion_is_tracked():
    box = np.array([100.0, 50.0, 130.0, 110.0])  # 30 x 60, moving 2 px/frame in x
    step = np.array([2.0, 0.0, 2.0, 0.0])
    mean, cov = kalman.initiate(kalman.boxes_to_measurements(f32(box)))
    for frame in range(1, 11):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(
            mean, cov, kalman.boxes_to_measurements(f32(box + frame * step))
        )
    mean, cov = kalman.predict(mean, cov)
    np.testing.assert_allclose(kalman.states_to_boxes(mean), box + 11 * step, atol=0.5)
    assert abs(mean[4] - 2) < 0.25  # The x velocity is learned.
    # The predicted box passes the gate; one 20 px off (in x and y) does not.
    z = kalman.boxes_to_measurements(f32([box + 11 * step, box + 11 * step + 20]))
    inside, outside = kalman.gating_distance(mean, cov, z)
    assert inside < 1 < kalman.CHI2_95_4DOF < outside


def test_box_measurement_round_trip():
    boxes = f32([[10, 20, 40, 80], [0, 0, 1, 1]])
    measurements = kalman.boxes_to_measurements(boxes)
    np.testing.assert_allclose(measurements, [[25, 50, 0.5, 60], [0.5, 0.5, 1, 1]])
    np.testing.assert_allclose(kalman.states_to_boxes(measurements), boxes)
    state = jnp.concatenate([measurements, jnp.ones((2, 4))], axis=1)  # [2, 8]
    np.testing.assert_allclose(kalman.states_to_boxes(state), boxes)
