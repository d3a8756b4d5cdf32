"""Feature Pyramid Network (Lin et al., 2017) over ResNet stages.

Two layouts, chosen by the fields:
  - single-stage detectors (RetinaNet, FCOS): P3-P7. P3-P5 come from C3-C5,
    P6 is a 3x3 stride-2 conv on C5 (RetinaNet) or on P5 (FCOS), P7 a 3x3
    stride-2 conv on ReLU(P6);
  - two-stage detectors (Faster/Mask R-CNN, as in the FPN paper and
    torchvision): P2-P6. P2-P5 come from C2-C5 and P6 is P5 subsampled by a
    stride-2 max pool of size 1 (`p6_from="pool"`, no parameters).
Each P_l from a C_l is a 1x1 lateral conv plus the top-down path (nearest 2x
upsampling and addition), smoothed by a 3x3 conv. Every level has `features`
channels, and level `l` has stride `2**l`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from jaxvision.ops import conv

# Detectron2's `c2_xavier_fill`: uniform with variance 1 / fan_in, zero bias.
fpn_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class FPN(nn.Module):
    """Builds {"p<min_level>", ..., "p<max_level>"} from the backbone's C stages.

    Attributes:
        features: channels of every pyramid level (256 in the papers).
        p6_from: "c5" (RetinaNet) or "p5" (FCOS): the input of the P6 conv;
            "pool": P6 is P5 max-pooled with stride 2 (Faster R-CNN).
        min_level: 3 (P3 from C3) or 2 (P2 from C2, for two-stage detectors).
        max_level: 7 (P6 and P7) or 6 (P6 only; "pool" allows nothing above 6).
        dtype: compute dtype.
        param_dtype: parameter dtype.
    """

    features: int = 256
    p6_from: str = "c5"
    min_level: int = 3
    max_level: int = 7
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, c: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Maps C_l (`[B, H / 2**l, W / 2**l, C_l]`) to P_l (`[B, H / 2**l, W / 2**l, F]`)."""
        if self.p6_from not in ("c5", "p5", "pool"):
            raise ValueError(f"FPN.p6_from must be 'c5', 'p5' or 'pool', not {self.p6_from!r}.")
        if self.min_level not in (2, 3) or self.max_level not in (6, 7) or (
            self.p6_from == "pool" and self.max_level != 6
        ):
            raise ValueError(
                f"FPN levels P{self.min_level}-P{self.max_level} with p6_from="
                f"{self.p6_from!r} are not a supported layout; use P3-P7 or P2-P6 ('pool')."
            )

        def level_conv(kernel: int, strides: int, name: str) -> nn.Conv:
            return nn.Conv(
                self.features, (kernel, kernel), strides=strides, padding="SAME",
                kernel_init=fpn_init, dtype=self.dtype, param_dtype=self.param_dtype,
                conv_general_dilated=conv.conv_general_dilated,  # 1x1: a matmul on CPUs.
                name=name,
            )

        p = {}
        top_down = None
        for level in range(5, self.min_level - 1, -1):
            x = level_conv(1, 1, f"lateral{level}")(c[f"c{level}"])  # [B, h_l, w_l, F]
            if top_down is not None:
                # Nearest 2x upsampling, to the lateral's size (odd sizes too).
                x = x + jax.image.resize(top_down, x.shape, "nearest")
            top_down = x
            p[f"p{level}"] = level_conv(3, 1, f"output{level}")(x)  # [B, h_l, w_l, F]
        if self.p6_from == "pool":  # torchvision's LastLevelMaxPool.
            p["p6"] = p["p5"][:, ::2, ::2]  # [B, ceil(h_5 / 2), ceil(w_5 / 2), F]
        else:
            p["p6"] = level_conv(3, 2, "p6")(c["c5"] if self.p6_from == "c5" else p["p5"])
        if self.max_level == 7:
            p["p7"] = level_conv(3, 2, "p7")(nn.relu(p["p6"]))  # [B, h_7, w_7, F]
        return p

