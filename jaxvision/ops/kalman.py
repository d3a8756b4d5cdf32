"""The constant-velocity Kalman filter of DeepSORT / ByteTrack, in `jnp`.

The state of one track is `[8]` = `(cx, cy, a, h, vcx, vcy, va, vh)`: the box
centre, its aspect ratio `a = w / h`, its height, and their velocities in
pixels (or ratio) per frame. A detection is observed directly as the
measurement `[4]` = `(cx, cy, a, h)`. As in ByteTrack
(`yolox/tracker/kalman_filter.py`), every noise standard deviation is scaled by
the current height `h` (`STD_WEIGHT_POSITION * h` for positions,
`STD_WEIGHT_VELOCITY * h` for velocities) except the aspect ratio's, which is
fixed (`1e-2` / `1e-5` process noise, `1e-1` measurement noise).

Every function works on ONE track (`mean` `[8]`, `covariance` `[8, 8]`);
batch with `jax.vmap`, e.g. `jax.vmap(kalman.predict)(means, covs)` on
`[T, 8]`, `[T, 8, 8]`. All are pure and jittable. Boxes need a positive
height (`a = w / h`); give padding a real box before converting it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.ops import boxes as box_ops

# The 0.95 quantile of the chi-square distribution with 4 degrees of freedom:
# a squared Mahalanobis distance on (cx, cy, a, h) above it fails the gate.
CHI2_95_4DOF = 9.4877
# Noise standard deviations relative to the box height (ByteTrack / DeepSORT).
STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160

# x' = F x with dt = 1 frame: positions move by their velocities.
_MOTION = np.eye(8, dtype=np.float32) + np.eye(8, k=4, dtype=np.float32)  # [8, 8]


def boxes_to_measurements(boxes: jax.Array) -> jax.Array:
    """`[..., 4]` xyxy boxes -> `[..., 4]` measurements `(cx, cy, w / h, h)`."""
    cx, cy, w, h = jnp.moveaxis(box_ops.xyxy_to_cxcywh(boxes), -1, 0)  # 4 x [...]
    return jnp.stack([cx, cy, w / h, h], axis=-1)  # [..., 4]


def states_to_boxes(mean: jax.Array) -> jax.Array:
    """`[..., 8]` states (or `[..., 4]` measurements) -> `[..., 4]` xyxy boxes."""
    cx, cy, a, h = jnp.moveaxis(mean[..., :4], -1, 0)  # 4 x [...]
    return box_ops.cxcywh_to_xyxy(jnp.stack([cx, cy, a * h, h], axis=-1))  # [..., 4]


def initiate(measurement: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A new track from an unmatched measurement.

    Args:
      measurement: `[4]` `(cx, cy, a, h)`.

    Returns:
      `(mean [8], covariance [8, 8])`: the measurement with zero velocities,
      and a diagonal covariance (position std `2 * STD_WEIGHT_POSITION * h`,
      velocity std `10 * STD_WEIGHT_VELOCITY * h`).
    """
    h = measurement[3]
    pos, vel = 2 * STD_WEIGHT_POSITION * h, 10 * STD_WEIGHT_VELOCITY * h
    std = jnp.stack(
        [pos, pos, jnp.full_like(h, 1e-2), pos, vel, vel, jnp.full_like(h, 1e-5), vel]
    )  # [8]
    mean = jnp.concatenate([measurement, jnp.zeros_like(measurement)])  # [8]
    return mean, jnp.diag(jnp.square(std))  # [8], [8, 8]


def predict(mean: jax.Array, covariance: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One frame of constant-velocity motion: `(mean [8], cov [8, 8])` -> same shapes.

    `mean' = F mean`, `cov' = F cov F^T + Q` with `Q` diagonal, position std
    `STD_WEIGHT_POSITION * h` and velocity std `STD_WEIGHT_VELOCITY * h`.
    """
    h = mean[3]
    pos, vel = STD_WEIGHT_POSITION * h, STD_WEIGHT_VELOCITY * h
    std = jnp.stack(
        [pos, pos, jnp.full_like(h, 1e-2), pos, vel, vel, jnp.full_like(h, 1e-5), vel]
    )  # [8]
    motion = jnp.asarray(_MOTION, mean.dtype)  # [8, 8]
    mean = motion @ mean  # [8]
    covariance = motion @ covariance @ motion.T + jnp.diag(jnp.square(std))  # [8, 8]
    return mean, covariance


def project(mean: jax.Array, covariance: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The state distribution in measurement space: `([8], [8, 8])` -> `([4], [4, 4])`.

    `H mean` and `H cov H^T + R`, `H` keeping the first 4 dims and `R`
    diagonal with std `(STD_WEIGHT_POSITION * h) x 2, 1e-1, STD_WEIGHT_POSITION * h`.
    """
    pos = STD_WEIGHT_POSITION * mean[3]
    std = jnp.stack([pos, pos, jnp.full_like(pos, 1e-1), pos])  # [4]
    return mean[:4], covariance[:4, :4] + jnp.diag(jnp.square(std))  # [4], [4, 4]


def update(
    mean: jax.Array, covariance: jax.Array, measurement: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The Kalman correction with one measurement.

    Args:
      mean: `[8]` predicted state.
      covariance: `[8, 8]` its covariance.
      measurement: `[4]` `(cx, cy, a, h)`.

    Returns:
      `(mean [8], covariance [8, 8])`: `mean + K (z - H mean)` and
      `cov - K S K^T`, with `S` the projected covariance and
      `K = cov H^T S^-1` (solved with a Cholesky factor of `S`).
    """
    projected_mean, projected_cov = project(mean, covariance)  # [4], [4, 4]
    factor = jax.scipy.linalg.cho_factor(projected_cov, lower=True)
    # K^T = S^-1 (cov H^T)^T, S symmetric.
    gain = jax.scipy.linalg.cho_solve(factor, covariance[:, :4].T).T  # [8, 4]
    new_mean = mean + gain @ (measurement - projected_mean)  # [8]
    new_covariance = covariance - gain @ projected_cov @ gain.T  # [8, 8]
    return new_mean, new_covariance


def gating_distance(
    mean: jax.Array, covariance: jax.Array, measurements: jax.Array
) -> jax.Array:
    """Squared Mahalanobis distances of measurements to one track's projection.

    Args:
      mean: `[8]` state.
      covariance: `[8, 8]` its covariance.
      measurements: `[N, 4]` `(cx, cy, a, h)`.

    Returns:
      `[N]` squared Mahalanobis distances on the 4 measurement dims; compare
      with `CHI2_95_4DOF`.
    """
    projected_mean, projected_cov = project(mean, covariance)  # [4], [4, 4]
    lower = jnp.linalg.cholesky(projected_cov)  # [4, 4]
    d = measurements - projected_mean  # [N, 4]
    z = jax.scipy.linalg.solve_triangular(lower, d.T, lower=True)  # [4, N]
    return jnp.sum(z * z, axis=0)  # [N]
