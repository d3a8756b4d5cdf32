"""dense_head: the backbone pyramid, towers shared across levels, row order, prior bias."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.dense_head import (
    ConvTower,
    DenseDetector,
    backbone_pyramid,
    head_conv,
    prior_bias_init,
)
from tests.models.common import TINY, key


class Pyramid(nn.Module):
    """Just `backbone_pyramid`, as a detector's `__call__` would call it."""

    p6_from: str

    @nn.compact
    def __call__(self, images, train):
        width, features = TINY["backbone_width"], TINY["fpn_features"]
        return backbone_pyramid(
            "resnet18", width, features, self.p6_from, jnp.float32, jnp.float32, images, train
        )


@pytest.mark.parametrize("p6_from,p6_inputs", [("c5", 8 * 8), ("p5", 32)])
def test_backbone_pyramid_levels_and_parameter_names(p6_from, p6_inputs):
    images = jnp.zeros((2, 96, 64, 3))
    pyramid, variables = jax.eval_shape(
        functools.partial(Pyramid(p6_from).init_with_output, train=False), key(0), images
    )
    # Level l has stride 2**l, sizes rounded up: 96x64 -> 12x8, 6x4, 3x2, 2x1, 1x1.
    assert {k: v.shape for k, v in pyramid.items()} == {
        "p3": (2, 12, 8, 32), "p4": (2, 6, 4, 32), "p5": (2, 3, 2, 32),
        "p6": (2, 2, 1, 32), "p7": (2, 1, 1, 32),
    }
    # The caller's own children, not wrapped in a submodule.
    assert set(variables["params"]) == {"backbone", "fpn"}
    # P6 reads C5 (resnet18 at width 8: 64 channels) or P5 (F channels).
    assert variables["params"]["fpn"]["p6"]["kernel"].shape == (3, 3, p6_inputs, 32)


def test_conv_tower_with_and_without_group_norm():
    x = jnp.zeros((1, 4, 4, 8))  # [B, h, w, F_in]
    tower = ConvTower(16, 2, 4)
    params = jax.eval_shape(tower.init, key(0), x)["params"]
    assert set(params) == {"conv0", "norm0", "conv1", "norm1"}
    assert params["conv0"]["kernel"].shape == (3, 3, 8, 16)
    assert set(jax.eval_shape(ConvTower(16, 2, 0).init, key(0), x)["params"]) == {"conv0", "conv1"}


def test_prior_bias_and_head_conv_init():
    conv = head_conv(3, "cls", jnp.float32, jnp.float32, bias_init=prior_bias_init(0.01))
    params = conv.init(key(0), jnp.zeros((1, 2, 2, 8)))["params"]
    np.testing.assert_allclose(jax.nn.sigmoid(params["bias"]), 0.01, rtol=1e-6)
    np.testing.assert_allclose(params["bias"], -math.log(99), rtol=1e-6)
    assert float(jnp.std(params["kernel"])) == pytest.approx(0.01, rel=0.3)  # N(0, 0.01)
    zero_bias = head_conv(3, "box", jnp.float32, jnp.float32).init(key(0), jnp.zeros((1, 2, 2, 8)))
    np.testing.assert_array_equal(zero_bias["params"]["bias"], 0.0)


class LevelIds(DenseDetector):
    """A toy head on a given pyramid: each row holds its level, then one conv's output."""

    @nn.compact
    def __call__(self, pyramid):
        conv = head_conv(2, "toy_conv", self.dtype, self.param_dtype)

        def predict(level, cls_x, box_x):
            batch, height, width, _ = cls_x.shape  # [B, h, w, F]
            ids = jnp.full((batch, height * width * 3), level)  # 3 rows per cell
            return ids, conv(box_x).reshape(batch, height * width, 2)

        return self.per_level(pyramid, predict)


def test_per_level_concatenates_p3_first_with_towers_shared():
    model = LevelIds(num_classes=1, fpn_features=8, head_convs=1, norm_groups=2, levels=(3, 4, 5))
    rng = np.random.default_rng(0)
    pyramid = {
        f"p{level}": jnp.asarray(rng.normal(size=(2, size, size, 8)), jnp.float32)
        for level, size in ((3, 4), (4, 2), (5, 1), (6, 1))  # p6 is not in `levels`.
    }
    (ids, rows), variables = jax.jit(model.init_with_output)(key(0), pyramid)
    np.testing.assert_array_equal(ids[0], [3] * 48 + [4] * 12 + [5] * 3)
    assert rows.shape == (2, 16 + 4 + 1, 2)
    # One tower instance each for all levels, next to the head's own conv.
    params = variables["params"]
    assert set(params) == {"cls_tower", "box_tower", "toy_conv"}
    assert params["box_tower"]["conv0"]["kernel"].shape == (3, 3, 8, 8)
    # The P4 rows are the head on P4 alone, with those same (shared) weights.
    box_tower = ConvTower(8, 1, 2).bind({"params": params["box_tower"]})
    toy_conv = head_conv(2, "toy_conv", jnp.float32, jnp.float32).bind(
        {"params": params["toy_conv"]}
    )
    p4 = toy_conv(box_tower(pyramid["p4"])).reshape(2, 4, 2)
    np.testing.assert_allclose(rows[:, 16:20], p4, rtol=1e-6)
