"""JDE: one network that detects objects and embeds each for tracking (Wang et al., 2020).

Joint Detection and Embedding, here on FCOS: the detector of `models/fcos.py`
plus an appearance-embedding branch on every pyramid level, so one forward
pass per video frame gives the boxes *and* a feature per box for the
tracker's appearance cost (`jaxvision.tracking`). As in JDE and FairMOT, the
embedding of a location is trained to classify the identity of the object
that location detects, among all identities of the training set; the
classifier here is the recognition task's margin softmax (ArcFace by default,
`models.embedding.margin_head`), not JDE's plain softmax:

  images [B, H, W, C] -> ResNet, FPN -> P3..P7
    -> FCOS towers and convs -> "logits", "ltrb", "centerness"  (the detector)
    -> embedding tower (`embedding_convs` 3x3 convs) -> 3x3 conv -> BatchNorm -> "embedding" [B, N, E]

Training (`training_loss`) adds to FCOS's loss `embedding_loss_weight` times
the margin softmax cross-entropy of the first `embedding_points` positive
locations of each image (FCOS's own positives: centre sampling and size
ranges), each labelled with the identity of its box. Prediction (`predict`)
returns FCOS's detections plus the L2-normalised embedding of the location
each detection came from.

The identities are the margin head's classes, `class_centres` [K', E] with
K = `num_identities` padded to `centre_multiple`; like the recognizer's, the
matrix is split over the mesh (`experiment.variable_shardings`).
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import losses
from jaxvision.errors import UserError
from jaxvision.models.dense_head import ConvTower
from jaxvision.models.embedding import MARGINS, l2_normalize, margin_head
from jaxvision.models.fcos import FCOS, fcos_targets


class JDE(FCOS):
    """FCOS with a per-location appearance embedding, trained on track identities.

    Its fields are FCOS's and:

    Attributes:
        num_identities: K, the identities of the training set (labels 0..K-1).
        embedding_dim: E, the size of each location's embedding (JDE: 512,
            FairMOT: 128; small objects of few identities need less).
        embedding_convs: 3x3 convs (with GroupNorm, ReLU) of the embedding
            tower before its output conv; shared by all levels.
        margin: a `models.embedding.MARGINS` name.
        scale: the margin softmax's logit scale s.
        easy_margin: see `losses.combined_margin_logits`.
        embedding_loss_weight: weight of the identity loss in the total loss.
        embedding_points: positive locations per image whose embeddings are
            trained (the first ones in output order); a static bound, so the
            identity logits are `[B * embedding_points, K']` whatever the
            image size.
        centre_multiple: the identity centres are padded to a multiple of this.
    """

    num_identities: int = 1
    embedding_dim: int = 64
    embedding_convs: int = 1
    margin: str = "arcface"
    scale: float = 32.0
    easy_margin: bool = False
    embedding_loss_weight: float = 1.0
    embedding_points: int = 64
    centre_multiple: int = 128

    def __post_init__(self):
        if self.margin not in MARGINS:
            raise UserError(
                f"Unknown config.model.margin {self.margin!r}; use one of {', '.join(MARGINS)}."
            )
        if self.num_identities < 1:
            raise UserError(
                f"config.model.num_identities is {self.num_identities}; set it to the number "
                "of identities in the training split."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """FCOS's per-point outputs plus float32 "embedding" `[B, N, E]` (not normalised)."""
        chex.assert_rank(images, 4)
        pyramid = self.pyramid(images, train)
        outputs = self.head(pyramid, images.shape)
        tower = ConvTower(
            self.fpn_features, self.embedding_convs, self.norm_groups, dtype=self.dtype,
            param_dtype=self.param_dtype, name="embedding_tower",
        )
        # Not `head_conv`'s N(0, 0.01): L2 normalisation divides by the output's norm,
        # so tiny initial outputs would make the first updates swing the directions wildly.
        conv = nn.Conv(
            self.embedding_dim, (3, 3), padding="SAME", dtype=self.dtype,
            param_dtype=self.param_dtype, name="embedding",
        )
        rows = []
        for level in self.levels:
            x = conv(tower(pyramid[f"p{level}"]))  # [B, h, w, E]
            rows.append(x.reshape(x.shape[0], -1, self.embedding_dim))  # [B, h * w, E]
        embedding = jnp.concatenate(rows, axis=1)  # [B, N, E]
        # insightface's last BatchNorm (no scale), over every location of every level:
        # centring across the batch removes the one direction all locations share,
        # without which the identity loss first collapses every embedding onto it.
        embedding = nn.BatchNorm(
            use_running_average=not train, use_scale=False, dtype=self.dtype,
            param_dtype=self.param_dtype, name="embedding_norm",
        )(embedding)
        outputs["embedding"] = embedding.astype(jnp.float32)  # [B, N, E]
        num_centres = -(-self.num_identities // self.centre_multiple) * self.centre_multiple
        # Read back by `training_loss`; compared by angle, so the initial scale does not matter.
        self.param(
            "class_centres", nn.initializers.normal(0.01),
            (num_centres, self.embedding_dim), self.param_dtype,
        )  # [K', E]
        return outputs

    def training_loss(
        self, images: jax.Array, targets: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """FCOS's loss plus the weighted identity loss (call with `method=`, train BatchNorm).

        Args:
          images: `[B, H, W, C]` normalized, augmented images.
          targets: "boxes" `[B, M, 4]` xyxy pixels, "labels" `[B, M]` int32,
            "box_mask" `[B, M]` bool and "identities" `[B, M]` int32 (-1: unknown,
            not trained).

        Returns:
          The scalar loss and FCOS's metrics plus "embedding_loss",
          "identity_accuracy" and "num_embedding_points".
        """
        image_size = images.shape[1:3]
        outputs = self(images, train=True)
        detection_loss, metrics = self.loss(
            outputs, targets["boxes"], targets["labels"], targets["box_mask"], image_size
        )
        centres = self.variables["params"]["class_centres"]  # [K', E]
        embedding_loss, embedding_metrics = self.embedding_loss(
            outputs["embedding"], centres, targets["boxes"], targets["identities"],
            targets["box_mask"], image_size,
        )
        total = detection_loss + self.embedding_loss_weight * embedding_loss
        return total, {**metrics, **embedding_metrics, "loss": total}

    @nn.nowrap
    def embedding_loss(
        self, embedding: jax.Array, centres: jax.Array, boxes: jax.Array,
        identities: jax.Array, box_mask: jax.Array, image_size: tuple[int, int],
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean margin softmax cross-entropy of the positive locations' identities.

        Args:
          embedding: `[B, N, E]` per-point embeddings.
          centres: `[K', E]` identity centres.
          boxes: `[B, M, 4]` xyxy ground truth in pixels; box_mask `[B, M]`.
          identities: `[B, M]` int identity of each box (-1: unknown).
          image_size: static `(H, W)`.

        Returns:
          The loss (0 without positives) and its metrics.
        """
        _, num_points, dim = embedding.shape
        points, strides, ranges = self.points(image_size)  # [N, 2], [N], [N, 2]
        assign = functools.partial(
            fcos_targets, center_sampling_radius=self.center_sampling_radius
        )
        point_ids, _, positive = jax.vmap(assign, in_axes=(None, None, None, 0, 0, 0))(
            points, strides, ranges, boxes, identities.astype(jnp.int32), box_mask
        )  # [B, N], _, [B, N]
        positive &= point_ids >= 0  # Boxes of unknown identity train only the detector.
        # The first `embedding_points` positives of each image (a stable sort puts them first).
        count = min(self.embedding_points, num_points)
        chosen = jnp.argsort(~positive, axis=1, stable=True)[:, :count]  # [B, P]
        valid = jnp.take_along_axis(positive, chosen, axis=1).reshape(-1)  # [B * P]
        labels = jnp.take_along_axis(point_ids, chosen, axis=1).reshape(-1)  # [B * P]
        labels = jnp.where(valid, labels, 0)
        features = jnp.take_along_axis(embedding, chosen[..., None], axis=1)  # [B, P, E]
        logits = margin_head(
            features.reshape(-1, dim), centres, labels, num_classes=self.num_identities,
            margin=self.margin, scale=self.scale, easy_margin=self.easy_margin,
        )  # [B * P, K']
        cross_entropy = losses.softmax_cross_entropy(logits, labels)  # [B * P]
        num_valid = jnp.sum(valid).astype(jnp.float32)
        norm = jnp.maximum(num_valid, 1.0)
        loss = jnp.sum(jnp.where(valid, cross_entropy, 0.0)) / norm
        correct = (jnp.argmax(logits, axis=-1) == labels) & valid  # [B * P]
        return loss, {
            "embedding_loss": loss,
            "identity_accuracy": jnp.sum(correct) / norm,
            "num_embedding_points": num_valid,
        }

    def predict(
        self, images: jax.Array, *, score_threshold: float, pre_nms_topk: int,
        nms_iou: float, max_detections: int,
    ) -> dict[str, jax.Array]:
        """FCOS's detections (`DenseDetector.predict`) plus each one's embedding.

        Returns:
          "boxes" `[B, D, 4]`, "scores", "labels", "valid" `[B, D]` as FCOS's and
          "embeddings" float32 `[B, D, E]`, L2-normalised (zeros on empty slots).
        """
        outputs = self(images, train=False)
        detections, rows = self.postprocess(
            outputs, images.shape[1:3], score_threshold=score_threshold,
            pre_nms_topk=pre_nms_topk, nms_iou=nms_iou, max_detections=max_detections,
        )  # rows [B, D]
        embeddings = jnp.take_along_axis(outputs["embedding"], rows[..., None], axis=1)
        detections["embeddings"] = jnp.where(
            detections["valid"][..., None], l2_normalize(embeddings), 0.0
        )  # [B, D, E]
        return detections
