"""Feature Pyramid Network (Lin et al., 2017) over ResNet stages, P3-P7 as in RetinaNet/FCOS.

P3-P5 come from C3-C5 through 1x1 lateral convs and a top-down path (nearest
2x upsampling and addition), each smoothed by a 3x3 conv. P6 is a 3x3 stride-2
conv on C5 (RetinaNet) or on P5 (FCOS), P7 a 3x3 stride-2 conv on ReLU(P6).
Every level has `features` channels, and level `l` has stride `2**l`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from jaxvision.ops import conv

# Detectron2's `c2_xavier_fill`: uniform with variance 1 / fan_in, zero bias.
fpn_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class FPN(nn.Module):
    """Builds {"p3", ..., "p7"} from the backbone's {"c3", "c4", "c5"}.

    Attributes:
        features: channels of every pyramid level (256 in the papers).
        p6_from: "c5" (RetinaNet) or "p5" (FCOS): the input of the P6 conv.
        dtype: compute dtype.
        param_dtype: parameter dtype.
    """

    features: int = 256
    p6_from: str = "c5"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, c: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Maps C3-C5 (`[B, H / 2**l, W / 2**l, C_l]`) to P3-P7 (`[B, H / 2**l, W / 2**l, F]`)."""
        if self.p6_from not in ("c5", "p5"):
            raise ValueError(f"FPN.p6_from must be 'c5' or 'p5', not {self.p6_from!r}.")

        def level_conv(kernel: int, strides: int, name: str) -> nn.Conv:
            return nn.Conv(
                self.features, (kernel, kernel), strides=strides, padding="SAME",
                kernel_init=fpn_init, dtype=self.dtype, param_dtype=self.param_dtype,
                conv_general_dilated=conv.conv_general_dilated,  # 1x1: a matmul on CPUs.
                name=name,
            )

        p = {}
        top_down = None
        for level in (5, 4, 3):
            x = level_conv(1, 1, f"lateral{level}")(c[f"c{level}"])  # [B, h_l, w_l, F]
            if top_down is not None:
                # Nearest 2x upsampling, to the lateral's size (odd sizes too).
                x = x + jax.image.resize(top_down, x.shape, "nearest")
            top_down = x
            p[f"p{level}"] = level_conv(3, 1, f"output{level}")(x)  # [B, h_l, w_l, F]
        p["p6"] = level_conv(3, 2, "p6")(c["c5"] if self.p6_from == "c5" else p["p5"])
        p["p7"] = level_conv(3, 2, "p7")(nn.relu(p["p6"]))  # [B, h_7, w_7, F]
        return p

