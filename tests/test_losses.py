"""Losses against hand-computed values."""

import math

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
