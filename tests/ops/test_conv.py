"""`ops.conv.conv_general_dilated`: the same numbers as lax's convolution, a matmul on CPUs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import conv

X = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, 16))  # [B, H, W, C]; odd sizes.


def _pair(kernel, strides, padding, **kwargs):
    """The same nn.Conv with lax's convolution and with ours, and shared parameters."""
    theirs = nn.Conv(8, kernel, strides=strides, padding=padding, **kwargs)
    ours = nn.Conv(8, kernel, strides=strides, padding=padding,
                   conv_general_dilated=conv.conv_general_dilated, **kwargs)
    return theirs, ours, theirs.init(jax.random.PRNGKey(1), X)


def _uses_dot(module, variables) -> bool:
    """Whether the jitted forward and backward contain a dot (else only convolutions)."""
    loss = lambda v, x: jnp.sum(module.apply(v, x) ** 2)
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, X).as_text()
    return "dot_general" in text


@pytest.mark.parametrize("strides, padding", [
    (1, "VALID"), (1, "SAME"), (2, "SAME"), (2, [(0, 0), (0, 0)]), ((2, 1), "VALID"),
])
def test_1x1_is_a_matmul_with_the_same_values_and_gradients(strides, padding):
    theirs, ours, variables = _pair((1, 1), strides, padding)
    np.testing.assert_allclose(ours.apply(variables, X), theirs.apply(variables, X),
                               rtol=1e-5, atol=1e-5)
    grad = lambda m: jax.grad(
        lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))), argnums=(0, 1))(variables, X)
    for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(theirs)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert _uses_dot(ours, variables) and not _uses_dot(theirs, variables)


@pytest.mark.parametrize("kernel, padding, kwargs", [
    ((3, 3), "SAME", {}),  # A 3x3 kernel.
    ((1, 1), [(1, 1), (1, 1)], {}),  # A padded 1x1.
    ((1, 1), "SAME", {"feature_group_count": 2}),  # Grouped.
    ((1, 1), "SAME", {"kernel_dilation": 2}),  # Dilated (a no-op for 1x1, but not plain).
])
def test_other_convolutions_are_left_to_lax(kernel, padding, kwargs):
    theirs, ours, variables = _pair(kernel, 1, padding, **kwargs)
    np.testing.assert_array_equal(ours.apply(variables, X), theirs.apply(variables, X))
    assert not _uses_dot(ours, variables)
