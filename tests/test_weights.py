"""Pretrained weights in: torchvision state dicts (logits against torchvision), files, init.

The reference logits come from `tests/golden/make_resnet_golden.py` (torch and
torchvision ran once there); its `random_state_dict` rebuilds the same seeded
weights here without torch.
"""

import functools
import importlib.util
import json
import logging
import os
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from jaxvision import models, parallel, weights
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.experiment import init_variables, variable_shardings
from jaxvision.train import TrainState

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")
_spec = importlib.util.spec_from_file_location(
    "make_resnet_golden", os.path.join(GOLDEN_DIR, "make_resnet_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def _abstract(model, input_shape=(1, 64, 64, 3)):
    init = functools.partial(init_variables, model=model, input_shape=input_shape)
    return jax.eval_shape(init, jax.random.PRNGKey(0))


def _fake_init(model, input_shape=(1, 64, 64, 3), seed=0):
    """Variables shaped like `model`'s init, of random values (a real init is slow on CPU)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape).astype(s.dtype)),
                        _abstract(model, input_shape))


def _write_safetensors(path, arrays):
    """A .safetensors file as its format says: u64 LE header size, JSON header, raw LE bytes."""
    codes = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64"}
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()  # This machine is little-endian.
        header[name] = {"dtype": codes[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # Writers pad the header to 8 bytes.
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def state7():
    """A resnet18 state dict with 7 classes (seeded, torchvision's names)."""
    return golden.random_state_dict("resnet18", 7, seed=0)


@pytest.fixture(scope="module")
def variables7(state7):
    return weights.from_torchvision(state7, "resnet18")


@pytest.fixture(scope="module")
def npz7(state7, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("weights") / "resnet18.npz")
    np.savez(path, **state7)
    return path


@pytest.mark.parametrize("name", list(golden.CASES))
def test_logits_equal_torchvisions(name):
    reference = np.load(os.path.join(GOLDEN_DIR, "resnet_torchvision.npz"))
    num_classes, seed, inputs = golden.CASES[name]
    assert reference[f"{name}_num_classes"] == num_classes and reference[f"{name}_seed"] == seed
    variables = weights.from_torchvision(golden.random_state_dict(name, num_classes, seed), name)
    model = models.get_model(name, num_classes=num_classes)
    expected = _abstract(model, (1, 224, 224, 3))
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    for x, e in zip(jax.tree.leaves(variables), jax.tree.leaves(expected), strict=True):
        assert x.shape == e.shape and x.dtype == np.float32
    apply = jax.jit(functools.partial(model.apply, train=False))
    for i, (input_seed, shape) in enumerate(inputs):
        assert reference[f"{name}_input{i}_seed"] == input_seed
        assert tuple(reference[f"{name}_input{i}_shape"]) == shape
        images = golden.random_input(input_seed, shape).transpose(0, 2, 3, 1)  # [B, H, W, 3]
        logits = np.asarray(apply(variables, images))  # [B, K]
        want = reference[f"{name}_input{i}_logits"]
        # Summation order differs (oneDNN vs XLA), so a logit near 0 has no
        # meaningful relative error: atol is 2e-5 of the logit scale (~1e-6
        # of it is measured).
        np.testing.assert_allclose(logits, want, rtol=1e-4,
                                   atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", ["resnet34", "resnet101", "resnet152"])
def test_every_registered_resnet_converts(name):
    shapes = golden.state_dict_shapes(name, 5)
    state = {k: np.zeros(s, np.int64 if not s else np.float32) for k, s in shapes.items()}
    variables = weights.from_torchvision(state, name)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(variables))
    assert variables["params"]["head"]["kernel"].shape == (shapes["fc.weight"][1], 5)
    assert not any("num_batches_tracked" in str(path)
                   for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0])


def test_layouts_are_converted(state7, variables7):
    params, stats = variables7["params"], variables7["batch_stats"]
    np.testing.assert_array_equal(params["backbone"]["stem_conv"]["kernel"],
                                  state7["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["head"]["kernel"], state7["fc.weight"].T)
    np.testing.assert_array_equal(params["head"]["bias"], state7["fc.bias"])
    block = params["backbone"]["stage2_block0"]
    np.testing.assert_array_equal(block["downsample_conv"]["kernel"][0, 0],
                                  state7["layer2.0.downsample.0.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(block["bn1"]["scale"], state7["layer2.0.bn1.weight"])
    down = stats["backbone"]["stage2_block0"]["downsample_bn"]
    np.testing.assert_array_equal(down["mean"], state7["layer2.0.downsample.1.running_mean"])
    np.testing.assert_array_equal(down["var"], state7["layer2.0.downsample.1.running_var"])


def test_files_and_wrappers_give_the_same_variables(state7, variables7, npz7, tmp_path):
    _assert_trees_equal(weights.from_torchvision(npz7, "resnet18"), variables7)
    path = tmp_path / "resnet18.safetensors"
    _write_safetensors(path, state7)
    _assert_trees_equal(weights.from_torchvision(path, "resnet18"), variables7)
    wrapped = {"module." + k: v for k, v in state7.items()}
    for outer in ({"state_dict": wrapped, "epoch": 3}, {"model": wrapped}, wrapped):
        _assert_trees_equal(weights.from_torchvision(outer, "resnet18"), variables7)


def test_safetensors_half_precision_is_read_as_float32(state7, variables7, tmp_path):
    state = dict(state7, **{
        "fc.weight": state7["fc.weight"].astype(ml_dtypes.bfloat16),
        "conv1.weight": state7["conv1.weight"].astype(np.float16),
    })
    path = tmp_path / "half.safetensors"
    _write_safetensors(path, state)
    variables = weights.from_torchvision(str(path), "resnet18")
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(variables))
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  state["fc.weight"].astype(np.float32).T)
    np.testing.assert_array_equal(variables["params"]["backbone"]["stem_conv"]["kernel"],
                                  state["conv1.weight"].astype(np.float32).transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["backbone"]["stem_bn"]["scale"],
                                  variables7["params"]["backbone"]["stem_bn"]["scale"])


def test_torch_files_and_tensors(state7, variables7, tmp_path):
    torch = pytest.importorskip("torch")  # An optional extra: only where it is installed.
    tensors = {k: torch.from_numpy(v) for k, v in state7.items()}
    _assert_trees_equal(weights.from_torchvision(tensors, "resnet18"), variables7)
    torch.save({"model": tensors, "epoch": 3}, tmp_path / "resnet18.pth")
    _assert_trees_equal(weights.from_torchvision(tmp_path / "resnet18.pth", "resnet18"),
                        variables7)


def test_a_pth_file_without_torch_is_explained(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # As if torch were not installed.
    with pytest.raises(UserError, match=r"needs PyTorch: pip install torch.*\.safetensors"):
        weights.from_torchvision(path, "resnet18")


@pytest.mark.parametrize(("change", "message"), [
    ({"layer3.1.conv2.weight": np.zeros((256, 256, 1, 1), np.float32)},
     (r"layer3\.1\.conv2\.weight has shape \(256, 256, 1, 1\) but resnet18 needs "
      r"\(256, 256, 3, 3\)")),
    ({"layer2.0.bn1.running_var": None}, r"missing key 'layer2\.0\.bn1\.running_var'"),
    ({"fc2.weight": np.zeros((3, 3), np.float32)}, r"unexpected key 'fc2\.weight'"),
    # timm's deep stem ("resnet18d"): conv1 is a Sequential.
    ({"conv1.weight": None, "conv1.0.weight": np.zeros((32, 3, 3, 3), np.float32)},
     r"unexpected key 'conv1\.0\.weight', missing key 'conv1\.weight'.*deep-stem"),
])
def test_a_state_dict_that_does_not_fit_is_one_error_naming_the_key(state7, change, message):
    state = {k: v for k, v in {**state7, **change}.items() if v is not None}
    with pytest.raises(UserError, match=message):
        weights.from_torchvision(state, "resnet18")


def test_num_batches_tracked_is_dropped_whatever_its_shape(state7, variables7):
    state = dict(state7, **{"layer1.0.bn1.num_batches_tracked": np.zeros(3, np.int64)})
    _assert_trees_equal(weights.from_torchvision(state, "resnet18"), variables7)


def test_unreadable_files_are_one_error_naming_them(tmp_path):
    for name, content in [("a.safetensors", b"\xff" * 20), ("b.npz", b"garbage"),
                          ("c.safetensors", (1000).to_bytes(8, "little") + b"{}")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UserError, match=f"Cannot read {path}"):
            weights.from_torchvision(str(path), "resnet18")
    with pytest.raises(UserError, match="No weights file at .*missing.npz"):
        weights.from_torchvision(str(tmp_path / "missing.npz"), "resnet18")
    (tmp_path / "d.h5").write_bytes(b"")
    with pytest.raises(UserError, match=r"format of .*d\.h5.*\.safetensors"):
        weights.from_torchvision(str(tmp_path / "d.h5"), "resnet18")
    with pytest.raises(UserError, match="Unknown ResNet 'resnet19'"):
        weights.from_torchvision({}, "resnet19")


def test_initialize_from_keeps_a_head_of_other_classes(variables7, npz7, caplog):
    mesh = parallel.make_mesh(data=4, fsdp=2)
    fresh = _fake_init(models.get_model("resnet18", num_classes=10))
    # bfloat16 and split over the mesh: both are kept.
    fresh = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x, jnp.bfloat16), s),
                         fresh, variable_shardings(mesh, fresh))
    with caplog.at_level(logging.INFO):
        out = weights.initialize_from(f"torchvision:{npz7}", fresh)
    assert "head re-initialised: checkpoint has 7 classes, this model 10" in caplog.text
    assert f"Initialised 100 of 102 arrays from torchvision:{npz7}: backbone." in caplog.text
    assert jax.tree.structure(out) == jax.tree.structure(fresh)
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(fresh), strict=True):
        assert x.dtype == jnp.bfloat16 and x.sharding == y.sharding
    _assert_trees_equal(out["params"]["head"], fresh["params"]["head"])
    want = jax.tree.map(lambda x: x.astype(jnp.bfloat16), variables7)
    _assert_trees_equal(out["params"]["backbone"], want["params"]["backbone"])
    _assert_trees_equal(out["batch_stats"], want["batch_stats"])


def test_initialize_from_loads_a_head_of_the_same_classes(variables7, npz7):
    fresh = _fake_init(models.get_model("resnet18", num_classes=7))
    _assert_trees_equal(weights.initialize_from(f"timm:{npz7}", fresh), variables7)


def test_initialize_from_fills_a_detectors_backbone_only(variables7, npz7):
    model = models.get_model("fcos", num_classes=3, backbone="resnet18")
    fresh = _fake_init(model, (1, 128, 128, 3))
    out = weights.initialize_from(f"torchvision:{npz7}", fresh)
    for collection in ("params", "batch_stats"):
        _assert_trees_equal(out[collection]["backbone"], variables7[collection]["backbone"])
        rest = {k: v for k, v in out[collection].items() if k != "backbone"}
        _assert_trees_equal(rest, {k: v for k, v in fresh[collection].items() if k != "backbone"})


def test_initialize_from_refuses_a_backbone_that_does_not_fit(npz7):
    small = _fake_init(models.get_model("resnet18", num_classes=7, small_inputs=True))
    with pytest.raises(UserError, match=r"backbone: params/backbone/stem_conv/kernel is "
                                        r"\(7, 7, 3, 64\) there and \(3, 3, 3, 64\) here"):
        weights.initialize_from(f"torchvision:{npz7}", small)
    deeper = _fake_init(models.get_model("resnet34", num_classes=7))
    with pytest.raises(UserError, match=r"not a resnet34 state dict.*missing key 'layer1\.2"):
        weights.initialize_from(f"torchvision:{npz7}", deeper)
    with pytest.raises(UserError, match="no ResNet backbone"):
        weights.initialize_from(f"torchvision:{npz7}", {"params": {"conv": {}}})


@pytest.mark.parametrize("spec", ["resnet18.pth", "imagenet:x.pth", "workdir:", "torch:x"])
def test_a_malformed_spec_lists_the_accepted_forms(spec):
    with pytest.raises(UserError, match="'torchvision:PATH'.*'timm:PATH'.*'workdir:PATH'"):
        weights.initialize_from(spec, {"params": {}})


@pytest.fixture(scope="module")
def run_dir(variables7, tmp_path_factory):
    """A jaxvision run directory whose checkpoint (step 5) holds a 7-class resnet18."""
    workdir = tmp_path_factory.mktemp("run")
    params = jax.tree.map(jnp.asarray, variables7["params"])

    class Position:
        def get_state(self):
            return {"next_batch": 5}

    state = TrainState(
        step=jnp.asarray(5, jnp.int32), params=params,
        batch_stats=jax.tree.map(jnp.asarray, variables7["batch_stats"]),
        opt_state=(optax.TraceState(trace=params), optax.EmptyState()),  # SGD's, with momentum.
        rng=jax.random.PRNGKey(0),
    )
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    ckpt.save(5, state, Position(), {"model": {"name": "resnet18"}})
    ckpt.close()
    return str(workdir)


def test_initialize_from_a_workdir(run_dir, variables7, caplog):
    fresh = _fake_init(models.get_model("resnet18", num_classes=10))
    with caplog.at_level(logging.INFO):
        out = weights.initialize_from(f"workdir:{run_dir}", fresh)
    assert "head re-initialised: checkpoint has 7 classes, this model 10" in caplog.text
    assert f"from workdir:{run_dir} (step 5): backbone." in caplog.text
    _assert_trees_equal(out["params"]["head"], fresh["params"]["head"])
    _assert_trees_equal(out["params"]["backbone"], variables7["params"]["backbone"])
    _assert_trees_equal(out["batch_stats"], variables7["batch_stats"])

    detector = _fake_init(models.get_model("retinanet", num_classes=3, backbone="resnet18"),
                          (1, 128, 128, 3))
    with caplog.at_level(logging.INFO):
        out = weights.initialize_from(f"workdir:{run_dir}", detector)
    assert "Kept their initialisation (not in workdir:" in caplog.text
    _assert_trees_equal(out["params"]["backbone"], variables7["params"]["backbone"])
    _assert_trees_equal(out["params"]["fpn"], detector["params"]["fpn"])


def test_a_workdir_without_checkpoints_is_an_error(tmp_path):
    with pytest.raises(UserError, match=f"No checkpoints in {tmp_path}/checkpoints"):
        weights.initialize_from(f"workdir:{tmp_path}", {"params": {}})
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="No complete checkpoint in"):
        weights.initialize_from(f"workdir:{tmp_path}", {"params": {}})


def test_a_workdir_of_any_model_fills_the_layers_that_fit(tmp_path, caplog):
    def variables(num_centres):
        rng = np.random.default_rng(num_centres)
        return {"params": {"class_centres": jnp.asarray(rng.normal(size=(num_centres, 2))),
                           "body": {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3)))}}},
                "batch_stats": {}}

    saved, fresh = variables(4), variables(8)

    class Position:
        def get_state(self):
            return {}

    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    ckpt.save(1, saved, Position(), {})
    ckpt.close()
    with caplog.at_level(logging.INFO):
        out = weights.initialize_from(f"workdir:{tmp_path}", fresh)
    assert "Kept their initialisation (not in workdir:" in caplog.text
    assert "other shapes): the model's own arrays" in caplog.text
    _assert_trees_equal(out["params"]["body"], saved["params"]["body"])
    _assert_trees_equal(out["params"]["class_centres"], fresh["params"]["class_centres"])
