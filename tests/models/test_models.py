"""Tests for jaxvision.models: parameter counts, shapes, dtypes, registry."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import (
    MODELS,
    BasicBlock,
    BottleneckBlock,
    ResNet,
    ResNetBackbone,
    get_model,
)
from tests.models.common import count_params, key

# Trainable parameters: batch_stats excluded, as torchvision's count excludes buffers.
PINNED = {
    # Digits setting: num_classes=10 on 8x8x1; 8x8 -> pool -> 4x4 -> pool -> 2x2.
    #   block0_conv 3*3*1*32 + 32     =    320
    #   block1_conv 3*3*32*64 + 64    = 18,496
    #   hidden      (2*2*64)*128 + 128 = 32,896
    #   head        128*10 + 10        =  1,290
    #   total                          = 53,002
    "cnn": 53_002,
    # num_classes=1000: torchvision's sum(p.numel() for p in model.parameters()).
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    # COCO setting (num_classes=80, ResNet-50 FPN, 4-conv GroupNorm towers); the
    # arithmetic is in tests/models/test_fcos.py and test_retinanet.py.
    "fcos": 32_297_370,
    "retinanet": 37_972_788,
    # torchvision's fasterrcnn_resnet50_fpn / maskrcnn_resnet50_fpn layers at 80
    # classes (detectron2's K + 1 logits and 4K deltas); arithmetic in
    # tests/models/test_faster_rcnn.py.
    "faster_rcnn": 41_753_056,
    "mask_rcnn": 44_396_336,
    # Faces setting (configs/faces_arcface_r50.py): ResNet-50 body on 112x112x3,
    # CASIA-WebFace's 10,572 identities.
    #   body (resnet50 without its fc: 25,557,032 - 2,049,000)  = 23,508,032
    #   map_bn        2 * 2048 (c5 is 4x4x2048)                  =      4,096
    #   fc            (4*4*2048)*512 + 512                       = 16,777,728
    #   embedding_bn  512 (bias only)                            =        512
    #   class_centres 10,624 (10,572 padded to 83 * 128) * 512   =  5,439,488
    #   total                                                    = 45,729,856
    "recognizer": 45_729_856,
    # JDE on FCOS's COCO setting with one class and 1,000 identities:
    #   fcos at 1 class (32,297,370 - 80-class cls_logits 184,400 + 3*3*256*1 + 1) = 32,115,275
    #   embedding_tower  one 3x3 conv 3*3*256*256 + 256 and its GroupNorm 2*256      =    590,592
    #   embedding        3*3*256*64 + 64                                            =    147,520
    #   embedding_norm   BatchNorm without scale: 64 biases                         =         64
    #   class_centres    1,024 (1,000 padded to 8 * 128) * 64                       =     65,536
    #   total                                                                       = 32,918,987
    "jde": 32_918_987,
}
# Outputs are dicts of per-location predictions (dense) or of the pyramid and RPN (two-stage).
DETECTORS = ("fcos", "retinanet", "faster_rcnn", "mask_rcnn", "jde")

# (kwargs, input shape) that PINNED counts refer to; also used for the shape tests.
SETTINGS = {name: ({"num_classes": 1000}, (2, 32, 32, 3)) for name in MODELS}
SETTINGS["cnn"] = ({"num_classes": 10}, (2, 8, 8, 1))
SETTINGS.update({name: ({"num_classes": 80}, (1, 64, 64, 3)) for name in DETECTORS})
SETTINGS["recognizer"] = ({"num_classes": 10_572}, (1, 112, 112, 3))
SETTINGS["jde"] = ({"num_classes": 1, "num_identities": 1000}, (1, 64, 64, 3))
EMBEDDERS = ("recognizer",)  # Output embeddings, not logits (tests/models/test_embedding.py).


def abstract_init(model, input_shape):
    """Variables' shapes and dtypes, without computing them."""
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, key(0), jnp.zeros(input_shape))


def abstract_train_apply(model, variables, input_shape):
    """Output shapes of the train step's call: dropout rng, mutable batch_stats."""
    apply = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    return jax.eval_shape(
        lambda v, x, rng: apply(v, x, rngs={"dropout": rng}),
        variables,
        jnp.zeros(input_shape),
        key(1),
    )


def abstract_features(backbone, input_shape):
    """Shapes of the backbone's feature dict and of its variables."""
    variables = abstract_init(backbone, input_shape)
    apply = functools.partial(backbone.apply, train=False)
    return jax.eval_shape(apply, variables, jnp.zeros(input_shape)), variables


def test_every_registered_model_has_a_pinned_count():
    assert sorted(MODELS) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_param_count(name):
    assert name in PINNED, f"pin the parameter count of {name!r} in PINNED"
    kwargs, input_shape = SETTINGS[name]
    variables = abstract_init(get_model(name, **kwargs), input_shape)
    assert count_params(variables) == PINNED[name]


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(DETECTORS) - set(EMBEDDERS)))
def test_logits_shape_and_dtype_in_train_step_call(name):
    kwargs, input_shape = SETTINGS[name]
    model = get_model(name, **kwargs)
    variables = abstract_init(model, input_shape)
    logits, updates = abstract_train_apply(model, variables, input_shape)
    assert logits.shape == (input_shape[0], kwargs["num_classes"])
    assert logits.dtype == jnp.float32
    assert set(updates) == ({"batch_stats"} if "batch_stats" in variables else set())


@pytest.mark.parametrize("input_shape", [(2, 8, 8, 1), (2, 28, 28, 1), (2, 32, 32, 3)])
def test_cnn_forward(input_shape):
    model = get_model("cnn", num_classes=10)
    x = jax.random.normal(key(0), input_shape)
    variables = model.init(key(1), x, train=False)

    logits = model.apply(variables, x, train=False)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(logits, model.apply(variables, x, train=False))

    def train_logits(seed):
        logits, _ = model.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": key(seed)},
            mutable=["batch_stats"],
        )
        return logits

    # Dropout is on in training only: different keys give different logits.
    assert not np.allclose(train_logits(2), train_logits(3))


@pytest.fixture(scope="module")
def resnet18_and_variables():
    model = get_model("resnet18", num_classes=10)
    # Jitted: one compile instead of one per op.
    init = jax.jit(functools.partial(model.init, train=False))
    return model, init(key(0), jnp.zeros((2, 32, 32, 3)))


def test_resnet18_forward_train_and_eval(resnet18_and_variables):
    model, variables = resnet18_and_variables
    x = jax.random.normal(key(1), (2, 32, 32, 3))

    logits, updates = model.apply(
        variables, x, train=True, rngs={"dropout": key(2)}, mutable=["batch_stats"]
    )
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    # Training moves the running mean toward the batch mean: 0.9 * 0 + 0.1 * mean.
    old_mean = variables["batch_stats"]["backbone"]["stem_bn"]["mean"]
    new_mean = updates["batch_stats"]["backbone"]["stem_bn"]["mean"]
    np.testing.assert_array_equal(old_mean, 0.0)
    assert np.any(new_mean != 0.0)

    # Eval uses the running statistics and needs no rng and nothing mutable.
    eval_logits = model.apply(variables, x, train=False)
    assert eval_logits.shape == (2, 10) and np.all(np.isfinite(eval_logits))


def test_resnet_conv_init_is_kaiming_normal_fan_out(resnet18_and_variables):
    _, variables = resnet18_and_variables
    kernel = variables["params"]["backbone"]["stem_conv"]["kernel"]  # [7, 7, 3, 64]
    fan_out = 7 * 7 * 64
    np.testing.assert_allclose(np.std(kernel), math.sqrt(2.0 / fan_out), rtol=0.03)


@pytest.mark.parametrize(
    "block_cls, channels",
    [
        (BasicBlock, (64, 64, 128, 256, 512)),
        (BottleneckBlock, (64, 256, 512, 1024, 2048)),
    ],
)
def test_backbone_feature_shapes_and_strides(block_cls, channels):
    backbone = ResNetBackbone(stage_sizes=(2, 2, 2, 2), block_cls=block_cls)
    features, _ = abstract_features(backbone, (2, 64, 64, 3))
    strides = {"stem": 4, "c2": 4, "c3": 8, "c4": 16, "c5": 32}
    expected = {
        name: (2, 64 // stride, 64 // stride, c)
        for (name, stride), c in zip(strides.items(), channels, strict=True)
    }
    assert {name: f.shape for name, f in features.items()} == expected


def test_small_inputs_stem_keeps_resolution():
    backbone = ResNetBackbone(
        stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, small_inputs=True
    )
    features, variables = abstract_features(backbone, (2, 32, 32, 3))
    assert features["stem"].shape == (2, 32, 32, 64)
    assert features["c5"].shape == (2, 4, 4, 512)
    assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 64)


@pytest.mark.parametrize(
    "name, compute_module",
    [("cnn", ("block0_conv",)), ("resnet18", ("backbone", "stem_conv"))],
)
def test_bf16_compute_keeps_float32_params_and_logits(name, compute_module):
    kwargs, input_shape = SETTINGS[name]
    model = get_model(name, **kwargs, dtype=jnp.bfloat16)
    variables = abstract_init(model, input_shape)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))

    apply = functools.partial(
        model.apply, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    logits, state = jax.eval_shape(apply, variables, jnp.zeros(input_shape))
    assert logits.dtype == jnp.float32
    # The convs really compute in bfloat16.
    activations = functools.reduce(
        dict.__getitem__, compute_module, state["intermediates"]
    )
    assert activations["__call__"][0].dtype == jnp.bfloat16


def test_zero_init_residual_zeroes_last_bn_scale_of_each_block(resnet18_and_variables):
    model = ResNet(
        stage_sizes=(1, 1, 1, 1),
        block_cls=BasicBlock,
        num_classes=10,
        width=8,
        zero_init_residual=True,
    )
    init = jax.jit(functools.partial(model.init, train=False))
    backbone = init(key(0), jnp.zeros((1, 32, 32, 3)))["params"]["backbone"]
    for i in range(1, 5):
        np.testing.assert_array_equal(backbone[f"stage{i}_block0"]["bn1"]["scale"], 1.0)
        np.testing.assert_array_equal(backbone[f"stage{i}_block0"]["bn2"]["scale"], 0.0)

    # Off by default.
    _, variables = resnet18_and_variables
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["stage1_block0"]["bn2"]["scale"], 1.0
    )


def test_get_model_passes_fields():
    model = get_model("resnet18", num_classes=7, width=16)
    assert isinstance(model, ResNet)
    assert (model.num_classes, model.width, model.block_cls) == (7, 16, BasicBlock)


def test_get_model_unknown_name_lists_known_names():
    with pytest.raises(UserError) as excinfo:
        get_model("resnet19", num_classes=10)
    assert ", ".join(sorted(MODELS)) in str(excinfo.value)


def test_get_model_bad_field_is_a_user_error():
    with pytest.raises(UserError, match="num_clases"):
        get_model("cnn", num_clases=10)
