"""JDE: FCOS plus a per-location embedding trained on identities (models/jde.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import get_model
from jaxvision.models.fcos import fcos_targets
from tests.models.common import TINY, key

SIZE = 64  # Input side; levels P3-P5: 8x8 + 4x4 + 2x2 = 84 points.


def _model(**kw):
    fields = {"num_classes": 1, "num_identities": 5, "levels": (3, 4, 5), "embedding_dim": 8,
              "centre_multiple": 4, "scale": 10.0, **TINY, **kw}
    return get_model("jde", **fields)


@pytest.fixture(scope="module")
def tiny():
    """One initialised tiny JDE and a batch: variables, images, targets."""
    images = jax.random.normal(key(0), (2, SIZE, SIZE, 1))
    variables = jax.jit(lambda k, x: _model().init(k, x, train=False))(key(1), images)
    targets = {
        "boxes": jnp.array([[[4, 4, 28, 28], [30, 30, 62, 60]], [[8, 8, 40, 40], [0, 0, 0, 0]]],
                           jnp.float32),  # [B, M, 4]; the last row is padding.
        "labels": jnp.zeros((2, 2), jnp.int32),
        "box_mask": jnp.array([[True, True], [True, False]]),
        "identities": jnp.array([[3, -1], [4, -1]], jnp.int32),  # -1: unknown, detector only.
    }
    return variables, images, targets


def test_outputs_and_centres(tiny):
    variables, images, _ = tiny
    outputs = jax.eval_shape(functools.partial(_model().apply, train=False), variables, images)
    assert outputs["embedding"].shape == (2, 84, 8) and outputs["logits"].shape == (2, 84, 1)
    assert variables["params"]["class_centres"].shape == (8, 8)  # 5 identities padded to 8.


def test_embedding_loss_matches_a_numpy_reference(tiny):
    """The plain-softmax variant: cross-entropy of embedding @ centres over FCOS's positives."""
    _, _, targets = tiny
    model = _model(margin="softmax", embedding_points=6)
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(2, 84, 8)).astype(np.float32)
    centres = rng.normal(size=(8, 8)).astype(np.float32)
    loss, metrics = model.embedding_loss(
        jnp.asarray(embedding), jnp.asarray(centres), targets["boxes"], targets["identities"],
        targets["box_mask"], (SIZE, SIZE),
    )
    points, strides, ranges = model.points((SIZE, SIZE))
    terms = []
    for b in range(2):
        ids, _, positive = fcos_targets(points, strides, ranges, targets["boxes"][b],
                                        targets["identities"][b], targets["box_mask"][b], 1.5)
        rows = np.flatnonzero(np.asarray(positive) & (np.asarray(ids) >= 0))[:6]  # The first 6.
        assert len(rows) > 0
        for row in rows:
            logits = (embedding[b, row] @ centres.T)[:5]  # The 3 padding centres never count.
            target = int(ids[row])
            terms.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target])
    np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)
    assert float(metrics["num_embedding_points"]) == len(terms)


def test_training_loss_adds_the_weighted_identity_loss(tiny):
    variables, images, targets = tiny
    model = _model(embedding_loss_weight=0.5)

    def loss_fn(params):
        (loss, metrics), _ = model.apply({**variables, "params": params}, images, targets,
                                         method="training_loss", mutable=["batch_stats"])
        return loss, metrics

    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        variables["params"])
    detection = metrics["cls_loss"] + metrics["box_loss"] + metrics["centerness_loss"]
    np.testing.assert_allclose(loss, detection + 0.5 * metrics["embedding_loss"], rtol=1e-5)
    assert float(jnp.abs(grads["class_centres"]).sum()) > 0
    assert float(jnp.abs(grads["embedding"]["kernel"]).sum()) > 0
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_predict_gives_each_detection_the_embedding_of_its_point(tiny):
    variables, images, _ = tiny
    model = _model()

    @jax.jit
    def run(variables, images):
        dets = model.apply(variables, images, method="predict", score_threshold=0.0,
                           pre_nms_topk=20, nms_iou=0.6, max_detections=5)
        outputs = model.apply(variables, images, train=False)
        boxes, _ = model.apply(variables, outputs, (SIZE, SIZE), method="detect")  # [B, N, 4]
        return dets, outputs["embedding"], boxes

    dets, embedding, boxes = run(variables, images)
    norms = np.linalg.norm(dets["embeddings"], axis=-1)  # [B, D]
    valid = np.asarray(dets["valid"])
    assert valid.any()
    np.testing.assert_allclose(norms[valid], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(norms[~valid], 0.0)
    expected = np.array(embedding)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    for b, d in zip(*np.nonzero(valid), strict=True):
        # The detection's point: the one whose decoded box it is.
        point = np.flatnonzero(np.all(np.isclose(boxes[b], dets["boxes"][b, d]), axis=1))[0]
        np.testing.assert_allclose(dets["embeddings"][b, d], expected[b, point], atol=1e-5)


def test_bad_fields_are_errors():
    with pytest.raises(UserError, match="num_identities"):
        _model(num_identities=0)
    with pytest.raises(UserError, match="margin"):
        _model(margin="nope")
