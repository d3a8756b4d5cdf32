"""`conv_general_dilated` for flax's `nn.Conv`: a 1x1 convolution runs as a matmul on a CPU.

XLA:CPU runs a 1x1 convolution (and its two gradients) 1.5-5x slower than the
same contraction written as a matmul (docs/performance.md has the
measurements); ResNet-50's bottlenecks and the FPN's laterals are mostly 1x1
convolutions. On other platforms the convolution is left as it is (cuDNN
handles 1x1 convolutions well). Use it as
`nn.Conv(..., conv_general_dilated=conv.conv_general_dilated)`; the
parameters are the same, so checkpoints do not change.
"""

import jax
import jax.numpy as jnp
from jax import lax

# flax's `nn.Conv` on NHWC inputs with an HWIO kernel.
_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides, padding, *, lhs_dilation=None,
    rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
    precision=None,
) -> jax.Array:
    """`lax.conv_general_dilated`, except that a plain 1x1 convolution is a matmul on CPUs.

    Plain: NHWC input `[B, H, W, C]`, HWIO kernel `[1, 1, C, O]`, no padding
    ("SAME" and "VALID" pad a 1x1 kernel by nothing), no dilation, no groups;
    a stride s keeps every s-th row and column first.
    """

    def conv(lhs, rhs):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision,
        )

    # A 1x1 kernel pads nothing under "SAME" or "VALID".
    unpadded = padding in ("SAME", "VALID") or all(tuple(p) == (0, 0) for p in padding)
    plain = (
        lhs.ndim == 4 and rhs.shape[:2] == (1, 1) and feature_group_count == 1 and unpadded
        and all(d == 1 for d in (lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1)))
        and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if not plain:
        return conv(lhs, rhs)

    def matmul(lhs, rhs):
        rows, cols = window_strides
        x = lhs[:, ::rows, ::cols]  # [B, H', W', C]
        return jnp.einsum("bhwc,co->bhwo", x, rhs[0, 0], precision=precision)  # [B, H', W', O]

    return lax.platform_dependent(lhs, rhs, cpu=matmul, default=conv)
