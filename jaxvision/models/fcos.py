"""FCOS: Fully Convolutional One-Stage object detection (Tian et al., 2019).

The "improvements" setting of the FCOS repository, AdelaiDet and detectron2:
centre sampling, GIoU box loss, centerness on the regression tower and
regression outputs normalized by the level's stride. Every location ("point")
of every pyramid level predicts K class logits, the distances (l, t, r, b) in
pixels from the point to the four sides of its box, and a centerness logit.

Boxes are xyxy in pixels (see `jaxvision.ops.boxes`); points are `(x, y)`
pixel centres of the feature cells (see `jaxvision.ops.anchors`). A point
`(x, y)` with distances `(l, t, r, b)` stands for the box
`(x - l, y - t, x + r, y + b)`.

Top to bottom: the `FCOS` module (its prediction convs on the backbone, FPN and
towers of `jaxvision.models.dense_head`; `loss`, `detect`, `level_sizes`), then
the pure functions it uses: `fcos_targets` (target assignment for one image),
`centerness_target` and `ltrb_to_boxes`.
"""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.typing import Dtype

from jaxvision import losses
from jaxvision.models.dense_head import (
    DenseDetector,
    backbone_pyramid,
    head_conv,
    prior_bias_init,
)
from jaxvision.ops import anchors as anchor_ops
from jaxvision.ops import boxes as box_ops

# The box loss divides by the sum of centerness targets; this keeps an image
# batch without positives at 0 / eps = 0 (AdelaiDet's 1e-6).
_CENTERNESS_SUM_EPS = 1e-6

# The class label `fcos_targets` gives points that match no box.
BACKGROUND_LABEL = -1


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level in FCOS).

    Levels share the regression conv; the scale lets each level adjust the
    range of its outputs.

    Attributes:
        init_value: initial value of the scalar (1.0 in FCOS).
        param_dtype: parameter dtype.
    """

    init_value: float = 1.0
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[...]` -> `[...]`, multiplied by the scalar (in `x`'s dtype)."""
        scale = self.param(
            "scale", nn.initializers.constant(self.init_value), (), self.param_dtype
        )
        return x * scale.astype(x.dtype)


class FCOS(DenseDetector):
    """FCOS detector: ResNet, FPN (P6 from P5), shared head over every level.

    Its fields are those of `DenseDetector` (classes, backbone, towers, focal
    loss, dtypes) and the target assignment's:

    Attributes:
        size_ranges: boundaries between the levels' ranges of the largest
            regression distance `max(l, t, r, b)` of a positive point. Level
            `i` takes `[b[i - 1], b[i]]` (b[-1] = 0), the last level everything
            above its lower bound. FCOS: (64, 128, 256, 512) for P3-P7; only the
            first `len(levels) - 1` boundaries are used.
        center_sampling_radius: a point is positive only within this many
            strides of its box's centre (1.5 in FCOS); 0 disables centre
            sampling (every point inside the box is a candidate).
    """

    size_ranges: tuple[float, ...] = (64, 128, 256, 512)
    center_sampling_radius: float = 1.5

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """Per-point predictions of every level, concatenated (P3 first, row-major).

        Args:
          images: `[B, H, W, C]` normalized images.
          train: batch statistics in the backbone's BatchNorm (else running ones).

        Returns:
          float32 `"logits"` `[B, N, K]`, `"ltrb"` `[B, N, 4]` distances in
          pixels (>= 0) and `"centerness"` `[B, N]` logits;
          `N = sum(self.level_sizes((H, W)))`.
        """
        chex.assert_rank(images, 4)
        return self.head(self.pyramid(images, train), images.shape)

    @nn.nowrap
    def pyramid(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """The backbone and FPN (children "backbone", "fpn"): `{"p3": [B, H/8, W/8, F], ...}`.

        Call it inside a compact method (`__call__` here, `JDE.__call__`).
        """
        return backbone_pyramid(
            self.backbone, self.backbone_width, self.fpn_features, "p5", self.dtype,
            self.param_dtype, images, train, frozen_bn=self.frozen_bn,
        )

    @nn.nowrap
    def head(
        self, pyramid: dict[str, jax.Array], image_shape: tuple[int, ...]
    ) -> dict[str, jax.Array]:
        """The towers and prediction convs on `pyramid`: `__call__`'s outputs.

        Call it inside a compact method; `image_shape` is the input's `(B, H, W, C)`.
        """
        # One instance of each conv, applied to every level: shared weights.
        conv = functools.partial(head_conv, dtype=self.dtype, param_dtype=self.param_dtype)
        cls_conv = conv(self.num_classes, "cls_logits", bias_init=prior_bias_init(self.prior_prob))
        box_conv = conv(4, "bbox_pred")
        ctr_conv = conv(1, "centerness")

        def predict(level: int, cls_x: jax.Array, box_x: jax.Array) -> tuple:
            batch, height, width, _ = cls_x.shape  # [B, h, w, F]
            num_points = height * width
            logits = cls_conv(cls_x).reshape(batch, num_points, self.num_classes)
            reg = box_conv(box_x).astype(jnp.float32)  # [B, h, w, 4]
            # Normalized regression: the conv predicts distances in strides.
            scale = Scale(param_dtype=self.param_dtype, name=f"scale_p{level}")
            reg = nn.relu(scale(reg))
            (stride,) = anchor_ops.fpn_strides((level,))
            ltrb = reg.reshape(batch, num_points, 4) * stride  # [B, h * w, 4] pixels
            centerness = ctr_conv(box_x).reshape(batch, num_points)  # [B, h * w]
            return logits, ltrb, centerness  # [B, h * w, K], [B, h * w, 4], [B, h * w]

        logits, ltrb, centerness = self.per_level(pyramid, predict)
        outputs = {
            "logits": logits.astype(jnp.float32),  # [B, N, K]
            "ltrb": ltrb.astype(jnp.float32),  # [B, N, 4]
            "centerness": centerness.astype(jnp.float32),  # [B, N]
        }
        total = sum(self.level_sizes(image_shape[1:3]))
        chex.assert_shape(outputs["logits"], (image_shape[0], total, self.num_classes))
        return outputs

    def level_sizes(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        """Points per level, `ceil(H / s) * ceil(W / s)` for each stride `s`."""
        return tuple(
            math.prod(anchor_ops.feature_size(tuple(image_size), stride))
            for stride in anchor_ops.fpn_strides(self.levels)
        )

    def points(
        self, image_size: tuple[int, int]
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Every point with its level's stride and size range, in output order.

        Args:
          image_size: static `(H, W)` of the (padded) input images.

        Returns:
          points `[N, 2]` `(x, y)` pixels, strides `[N]` and size ranges
          `[N, 2]` `(min, max)` of `max(l, t, r, b)` (inclusive, max may be inf).
        """
        num_levels = len(self.levels)
        if len(self.size_ranges) < num_levels - 1:
            raise ValueError(
                f"FCOS.size_ranges {self.size_ranges} needs at least "
                f"{num_levels - 1} boundaries for levels {self.levels}."
            )
        bounds = (0.0, *self.size_ranges[: num_levels - 1], math.inf)
        sizes = self.level_sizes(image_size)
        strides = anchor_ops.fpn_strides(self.levels)
        points = jnp.concatenate(anchor_ops.points(image_size, self.levels))  # [N, 2]
        point_strides = jnp.concatenate(
            [jnp.full((n,), s, jnp.float32) for n, s in zip(sizes, strides, strict=True)]
        )  # [N]
        point_ranges = jnp.concatenate(
            [
                jnp.tile(jnp.array([lo, hi], jnp.float32), (n, 1))  # [N_l, 2]
                for n, lo, hi in zip(sizes, bounds[:-1], bounds[1:], strict=True)
            ]
        )  # [N, 2]
        return points, point_strides, point_ranges

    def loss(
        self,
        outputs: dict[str, jax.Array],
        boxes: jax.Array,
        labels: jax.Array,
        box_mask: jax.Array,
        image_size: tuple[int, int],
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Focal + GIoU + centerness BCE, normalized over the whole batch.

        Args:
          outputs: `__call__`'s predictions for images of size `image_size`.
          boxes: `[B, M, 4]` xyxy ground truth in pixels (padded).
          labels: `[B, M]` int class ids in `[0, K)`.
          box_mask: `[B, M]` bool, False for padding rows (ignored entirely).
          image_size: static `(H, W)` of the images.

        Returns:
          The scalar total `cls + box_loss_weight * box + centerness` and the
          metrics "loss", "cls_loss", "box_loss", "centerness_loss",
          "num_positives" (float32 scalars).
        """
        logits, ltrb, ctr_logits = (
            outputs["logits"].astype(jnp.float32),
            outputs["ltrb"].astype(jnp.float32),
            outputs["centerness"].astype(jnp.float32),
        )
        batch, num_points, num_classes = logits.shape
        chex.assert_shape(ltrb, (batch, num_points, 4))
        chex.assert_shape(ctr_logits, (batch, num_points))
        chex.assert_shape(boxes, (batch, None, 4))
        chex.assert_equal_shape([labels, box_mask])
        chex.assert_shape(labels, boxes.shape[:2])

        points, strides, ranges = self.points(image_size)  # [N, 2], [N], [N, 2]
        chex.assert_shape(points, (num_points, 2))
        assign = functools.partial(
            fcos_targets, center_sampling_radius=self.center_sampling_radius
        )
        target_labels, target_ltrb, positive = jax.vmap(
            assign, in_axes=(None, None, None, 0, 0, 0)
        )(points, strides, ranges, boxes, labels, box_mask)  # [B, N], [B, N, 4], [B, N]

        num_pos = jnp.sum(positive).astype(jnp.float32)
        pos_norm = jnp.maximum(num_pos, 1.0)

        # Background points (label -1) get all-zero targets.
        cls_targets = jax.nn.one_hot(target_labels, num_classes)  # [B, N, K]
        cls_loss = losses.sigmoid_focal_loss(
            logits, cls_targets, alpha=self.focal_alpha, gamma=self.focal_gamma
        ).sum() / pos_norm

        ctr_targets = jnp.where(positive, centerness_target(target_ltrb), 0.0)  # [B, N]
        giou = losses.giou_loss(
            ltrb_to_boxes(points, ltrb), ltrb_to_boxes(points, target_ltrb)
        )  # [B, N]
        box_loss = jnp.sum(jnp.where(positive, ctr_targets * giou, 0.0)) / jnp.maximum(
            jnp.sum(ctr_targets), _CENTERNESS_SUM_EPS
        )

        bce = optax.sigmoid_binary_cross_entropy(ctr_logits, ctr_targets)  # [B, N]
        ctr_loss = jnp.sum(jnp.where(positive, bce, 0.0)) / pos_norm

        total = cls_loss + self.box_loss_weight * box_loss + ctr_loss
        metrics = {
            "loss": total,
            "cls_loss": cls_loss,
            "box_loss": box_loss,
            "centerness_loss": ctr_loss,
            "num_positives": num_pos,
        }
        return total, metrics

    def detect(
        self, outputs: dict[str, jax.Array], image_size: tuple[int, int]
    ) -> tuple[jax.Array, jax.Array]:
        """Decoded candidates before NMS.

        Args:
          outputs: `__call__`'s predictions for images of size `image_size`.
          image_size: static `(H, W)` of the images.

        Returns:
          boxes `[B, N, 4]` float32 xyxy pixels clipped to the image and scores
          `[B, N, K]` = `sqrt(sigmoid(logit) * sigmoid(centerness))` in [0, 1]
          (detectron2's FCOS inference).
        """
        ltrb = outputs["ltrb"].astype(jnp.float32)  # [B, N, 4]
        logits = outputs["logits"].astype(jnp.float32)  # [B, N, K]
        ctr = outputs["centerness"].astype(jnp.float32)  # [B, N]
        chex.assert_shape(ltrb, (*logits.shape[:2], 4))
        chex.assert_shape(ctr, logits.shape[:2])
        points, _, _ = self.points(image_size)  # [N, 2]
        boxes = box_ops.clip(ltrb_to_boxes(points, ltrb), *image_size)  # [B, N, 4]
        scores = jnp.sqrt(jax.nn.sigmoid(logits) * jax.nn.sigmoid(ctr)[..., None])
        return boxes, scores  # [B, N, 4], [B, N, K]


def fcos_targets(
    points: jax.Array,
    strides: jax.Array,
    size_ranges: jax.Array,
    boxes: jax.Array,
    labels: jax.Array,
    box_mask: jax.Array,
    center_sampling_radius: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """FCOS target assignment for one image (vectorized over points x boxes).

    Point `p` is a candidate for box `m` when (all comparisons as in AdelaiDet):
    - it is strictly inside the box: `min(l, t, r, b) > 0`;
    - with centre sampling (`center_sampling_radius > 0`), it is also strictly
      inside the box's centre region: the square of half-side
      `radius * stride(p)` around the box centre, clipped to the box;
    - `max(l, t, r, b)` lies in its level's range `[min, max]` (inclusive);
    - the box is real (`box_mask[m]`); padding rows are never candidates,
      whatever they hold (NaN included).
    Among its candidates a point takes the box of smallest area (the first on
    ties); a point without candidates is background.

    Args:
      points: `[N, 2]` `(x, y)` in pixels.
      strides: `[N]` stride of each point's level.
      size_ranges: `[N, 2]` `(min, max)` of `max(l, t, r, b)` at each point's level.
      boxes: `[M, 4]` xyxy ground truth in pixels.
      labels: `[M]` int class ids.
      box_mask: `[M]` bool, False for padding.
      center_sampling_radius: static; centre region half-side in strides, 0 = off.

    Returns:
      labels `[N]` int32 (the winning box's class, `BACKGROUND_LABEL` = -1 for
      negatives), ltrb `[N, 4]` float32 distances in pixels from the point to
      the winning box's sides (0 for negatives), and positive `[N]` bool.
    """
    chex.assert_shape(points, (None, 2))
    num_points = points.shape[0]
    chex.assert_shape(strides, (num_points,))
    chex.assert_shape(size_ranges, (num_points, 2))
    chex.assert_shape(boxes, (None, 4))
    chex.assert_shape([labels, box_mask], (boxes.shape[0],))
    if boxes.shape[0] == 0:  # Static: no ground-truth slots at all.
        return (
            jnp.full((num_points,), BACKGROUND_LABEL, jnp.int32),
            jnp.zeros((num_points, 4), jnp.float32),
            jnp.zeros((num_points,), bool),
        )

    points = points.astype(jnp.float32)
    boxes = jnp.where(box_mask[:, None], boxes.astype(jnp.float32), 0.0)  # [M, 4]
    x, y = points[:, 0, None], points[:, 1, None]  # [N, 1] each
    ltrb = jnp.stack(
        [x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], axis=-1
    )  # [N, M, 4]
    candidate = (jnp.min(ltrb, axis=-1) > 0) & box_mask[None, :]  # [N, M]

    if center_sampling_radius > 0:
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # [M, 2]
        radius = center_sampling_radius * strides[:, None, None]  # [N, 1, 1]
        top_left = jnp.maximum(centers - radius, boxes[:, :2])  # [N, M, 2]
        bottom_right = jnp.minimum(centers + radius, boxes[:, 2:])  # [N, M, 2]
        xy = points[:, None, :]  # [N, 1, 2]
        in_center = jnp.all((xy > top_left) & (xy < bottom_right), axis=-1)  # [N, M]
        candidate &= in_center

    max_dist = jnp.max(ltrb, axis=-1)  # [N, M]
    candidate &= (max_dist >= size_ranges[:, :1]) & (max_dist <= size_ranges[:, 1:])

    areas = jnp.where(candidate, box_ops.area(boxes)[None, :], jnp.inf)  # [N, M]
    best = jnp.argmin(areas, axis=1)  # [N]
    positive = jnp.any(candidate, axis=1)  # [N]
    target_labels = jnp.where(positive, labels[best], BACKGROUND_LABEL).astype(jnp.int32)
    best_ltrb = jnp.take_along_axis(ltrb, best[:, None, None], axis=1)[:, 0]  # [N, 4]
    target_ltrb = jnp.where(positive[:, None], best_ltrb, 0.0)  # [N, 4]
    return target_labels, target_ltrb, positive


def centerness_target(ltrb: jax.Array) -> jax.Array:
    """`sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`: 1 at the box centre.

    Args:
      ltrb: `[..., 4]` distances `(l, t, r, b)` (any unit: the ratio is scale-free).

    Returns:
      `[...]` float32 in `[0, 1]`; 0 where a side pair is all zeros (negatives).
    """
    l, t, r, b = jnp.moveaxis(ltrb.astype(jnp.float32), -1, 0)  # 4 x [...]

    def ratio(a: jax.Array, c: jax.Array) -> jax.Array:
        hi = jnp.maximum(a, c)
        return jnp.where(hi > 0, jnp.minimum(a, c) / jnp.where(hi > 0, hi, 1.0), 0.0)

    return jnp.sqrt(ratio(l, r) * ratio(t, b))


def ltrb_to_boxes(points: jax.Array, ltrb: jax.Array) -> jax.Array:
    """xyxy boxes `(x - l, y - t, x + r, y + b)` from points and distances.

    Args:
      points: `[N, 2]` `(x, y)` in pixels.
      ltrb: `[..., N, 4]` distances in pixels.

    Returns:
      `[..., N, 4]` xyxy boxes (not clipped).
    """
    xyxy = jnp.tile(points, 2)  # [N, 4] as (x, y, x, y)
    sign = jnp.array([-1.0, -1.0, 1.0, 1.0], ltrb.dtype)  # [4]
    return xyxy + sign * ltrb  # [..., N, 4]
