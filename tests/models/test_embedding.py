"""The recognition model: embeddings, margin logits, and Partial FC's sharded centres."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digit_instances_arcface
from jaxvision import data, experiment, losses, parallel, train
from jaxvision.models import embedding, get_model
from jaxvision.tasks import recognition

TINY = {"backbone": "resnet18", "backbone_width": 4, "small_inputs": True, "embedding_dim": 8}


def _model(margin="arcface"):
    return get_model("recognizer", num_classes=5, margin=margin, scale=10.0, centre_multiple=4,
                     **TINY)


@pytest.fixture(scope="module")
def tiny():
    """One initialised tiny model (every margin has the same variables): variables, images."""
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 1))
    return _model().init(jax.random.PRNGKey(1), images, train=False), images


def test_embeddings_are_unit_length_and_a_zero_vector_stays_zero(tiny):
    variables, images = tiny
    embeddings = _model().apply(variables, images)
    assert embeddings.shape == (4, 8) and embeddings.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    zero = embedding.l2_normalize(jnp.zeros((2, 3)))
    np.testing.assert_array_equal(zero, 0.0)
    grad = jax.grad(lambda x: embedding.l2_normalize(x).sum())(jnp.zeros((2, 3)))
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("margin", sorted(embedding.MARGINS))
def test_margin_logits_follow_the_margin_and_mask_the_padding(tiny, margin):
    variables, images = tiny
    model = _model(margin)
    labels = jnp.array([0, 1, 4, 2])
    logits, _ = model.apply(variables, images, labels, train=True, method="margin_logits",
                            mutable=["batch_stats"])
    assert logits.shape == (4, 8)  # 5 centres padded to 8.
    np.testing.assert_array_equal(logits[:, 5:], embedding._PADDING_LOGIT)
    features, _ = model.apply(variables, images, True, method="features", mutable=["batch_stats"])
    centres = variables["params"]["class_centres"][:5]  # [5, D]
    if margin == "softmax":  # Plain dot products, no normalisation.
        np.testing.assert_allclose(logits[:, :5], features @ centres.T, rtol=1e-5, atol=1e-5)
    else:
        cosines = (embedding.l2_normalize(features) @ embedding.l2_normalize(centres).T)
        m1, m2, m3 = embedding.MARGINS[margin]
        expected = losses.combined_margin_logits(
            cosines, labels, scale=10.0, m1=m1, m2=m2, m3=m3)
        np.testing.assert_allclose(logits[:, :5], expected, rtol=1e-5, atol=1e-5)
    # The padding adds nothing to the loss and gets no gradient.
    loss = losses.softmax_cross_entropy(logits, labels)
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(
        loss, losses.softmax_cross_entropy(logits[:, :5], labels), rtol=1e-6)


def test_unknown_margin_is_one_clear_error():
    from jaxvision.errors import UserError

    with pytest.raises(UserError, match="Unknown config.model.margin 'arcfase'; use one of"):
        _model("arcfase").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)), train=False)


def test_sharded_centres_give_the_same_loss_and_gradients_on_1_and_8_devices():
    """Partial FC: the centres split over 8 devices, the same numbers as on 1."""
    config = digit_instances_arcface.get_config("smoke")
    config.model.update(backbone_width=4, embedding_dim=16)
    info = data.DatasetInfo(num_classes=300, class_names=(), num_examples={},
                            image_shape=(32, 32, 1))  # 300 identities -> 384 centres.
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8),
             "label": rng.integers(0, 300, 16).astype(np.int32)}
    results = {}
    for num_devices in (1, 8):
        mesh = parallel.make_mesh(devices=jax.devices()[:num_devices])
        exp = experiment.Experiment(config, mesh=mesh, info=info)
        trainer = train.Trainer(exp, num_train_examples=1_000)
        state = trainer.init_state()
        centres = state.params["class_centres"]
        assert centres.shape == (384, 16)
        assert centres.sharding.shard_shape(centres.shape) == (384 // num_devices, 16)
        loss_fn = functools.partial(recognition.loss_fn, model=exp.model, config=config)
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        args = (state.params, state.batch_stats, jax.device_put(batch, exp.batch_sharding),
                jax.random.PRNGKey(3))
        (loss, _), grads = grad_fn(*args)
        if num_devices == 8:
            # Partial FC's communication: the [16, 16] embeddings are gathered and each
            # device computes its [16, 48] block of logits; the centres are never gathered.
            hlo = grad_fn.lower(*args).compile().as_text()
            assert re.search(r"= f32\[16,16\]\{[0-9,]*\} all-gather\(", hlo)
            assert not re.search(r"= f32\[384,16\]\{[0-9,]*\} all-gather\(", hlo)
        results[num_devices] = (float(loss), jax.device_get(grads))
    (loss1, grads1), (loss8, grads8) = results[1], results[8]
    assert loss8 == pytest.approx(loss1, rel=1e-5)
    assert np.abs(grads1["class_centres"][:300]).max() > 0  # Real classes learn...
    np.testing.assert_array_equal(grads1["class_centres"][300:], 0.0)  # ...padding does not.
    # Float-level: the all-reduce sums in another order (errors ~1e-5 of the largest entry).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=max(1e-4 * np.abs(b).max(), 1e-6)), grads8, grads1)
