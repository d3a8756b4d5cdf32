"""Recognition models: a backbone, an embedding head and a margin head (ArcFace family).

`Recognizer` maps images to L2-normalised embeddings; matching two images is
the cosine similarity of their embeddings (`metrics.verification`). Training
adds one learned *class centre* per training identity and a margin softmax
over the cosines between an embedding and every centre
(`losses.combined_margin_logits`), as in insightface's `arcface_torch`:

  images [B, H, W, C] -> ResNet body -> c5 [B, h, w, F]
    -> EmbeddingHead (BN, dropout, flatten, FC, BN) -> features [B, D]
    -> L2 normalise -> embeddings [B, D]                      (`__call__`)
    -> cosines with the normalised centres [B, K] -> margins   (`margin_logits`)

The centre matrix `class_centres` [K', D] grows with the number of identities
(millions for web-scale face sets), so it is split over every device of the
mesh on its first axis, as insightface's Partial FC splits it
(`experiment.variable_shardings`): each device holds K'/N centres and XLA
computes the logits of those classes. K' is the number of identities rounded
up to `centre_multiple`; the padding centres are masked out of the softmax, so
they change nothing.

Margins by name (`MARGINS`); change them there or pick one with
`config.model.margin`.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from jaxvision import losses
from jaxvision.errors import UserError
from jaxvision.models.resnet import resnet_backbone

# name -> (m1, m2, m3) of the target logit s * (cos(m1 * theta + m2) - m3).
MARGINS: dict[str, tuple[float, float, float] | None] = {
    "arcface": (1.0, 0.5, 0.0),  # Deng et al. 2019: additive angle; insightface's default.
    "cosface": (1.0, 0.0, 0.35),  # Wang et al. 2018: additive cosine (the paper's m = 0.35).
    # Multiplicative angle (Liu et al. 2017); 1.35 is the ArcFace paper's SphereFace
    # setting for its combined-margin comparison (the original m = 4 needs annealing).
    "sphereface": (1.35, 0.0, 0.0),
    # Plain cross-entropy: unnormalised features times unnormalised centres, no
    # scale and no margin (the "softmax" baseline of those papers).
    "softmax": None,
}

_PADDING_LOGIT = -1e9  # Padding centres' logit: exp() is 0, and 0 * logit stays finite.


class EmbeddingHead(nn.Module):
    """insightface's IResNet output layer: BN, dropout, flatten, FC to `dim`, BN.

    The last BatchNorm has no learned scale (insightface freezes it at 1).

    Attributes:
        dim: embedding size D.
        dropout_rate: dropout on the feature map while training.
        dtype, param_dtype: compute and parameter dtypes.
    """

    dim: int = 512
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, train: bool) -> jax.Array:
        """Maps a feature map [B, h, w, F] to float32 features [B, D] (not normalised)."""
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        x = norm(name="map_bn")(features)  # [B, h, w, F]
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = x.reshape(x.shape[0], -1)  # [B, h * w * F]
        x = nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)
        x = norm(use_scale=False, name="embedding_bn")(x)  # [B, D]
        return x.astype(jnp.float32)


class Recognizer(nn.Module):
    """A ResNet body, `EmbeddingHead` and the class centres of the margin head.

    Attributes:
        num_classes: K, the training identities (one centre each).
        backbone: a ResNet name ("resnet18", ..., "resnet152").
        backbone_width: channels of the body's first stage (64 in the papers).
        small_inputs: the body's CIFAR-style stem (no stride before stage 1),
            for images of about 32 px.
        embedding_dim: D.
        dropout_rate: `EmbeddingHead`'s dropout.
        margin: a `MARGINS` name.
        scale: s, the logit scale of the normalised margins (64 for faces).
        easy_margin: see `losses.combined_margin_logits`.
        centre_multiple: the centres are padded to a multiple of this, so that
            they split evenly over up to this many devices (powers of two).
        dtype, param_dtype: compute and parameter dtypes.
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_width: int = 64
    small_inputs: bool = False
    embedding_dim: int = 512
    dropout_rate: float = 0.0
    margin: str = "arcface"
    scale: float = 64.0
    easy_margin: bool = False
    centre_multiple: int = 128
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if self.margin not in MARGINS:
            raise UserError(
                f"Unknown config.model.margin {self.margin!r}; use one of {', '.join(MARGINS)}."
            )
        self.body = resnet_backbone(
            self.backbone, width=self.backbone_width, small_inputs=self.small_inputs,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        self.head = EmbeddingHead(
            self.embedding_dim, self.dropout_rate, dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        num_centres = -(-self.num_classes // self.centre_multiple) * self.centre_multiple
        # Centres are compared by angle only, so their initial scale does not matter.
        self.class_centres = self.param(
            "class_centres", nn.initializers.normal(0.01),
            (num_centres, self.embedding_dim), self.param_dtype,
        )  # [K', D]

    def features(self, images: jax.Array, train: bool) -> jax.Array:
        """Normalised images [B, H, W, C] -> float32 features [B, D], before L2 normalisation."""
        return self.head(self.body(images, train)["c5"], train)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Normalised images [B, H, W, C] -> L2-normalised float32 embeddings [B, D].

        An all-zero feature vector stays all zeros (its similarities are 0, not NaN).
        """
        return l2_normalize(self.features(images, train))

    def margin_logits(self, images: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
        """The margin head's logits of images [B, H, W, C] with identities labels [B].

        Returns:
          float32 [B, K']: the `margin`'s logits for the first K columns, and
          `_PADDING_LOGIT` (never chosen, no gradient) for the padding centres.
        """
        return margin_head(
            self.features(images, train), self.class_centres, labels,
            num_classes=self.num_classes, margin=self.margin, scale=self.scale,
            easy_margin=self.easy_margin,
        )


def margin_head(
    features: jax.Array, centres: jax.Array, labels: jax.Array, *, num_classes: int,
    margin: str, scale: float, easy_margin: bool,
) -> jax.Array:
    """The margin head's logits of features [B, D] against padded class centres [K', D].

    Shared by `Recognizer` and the tracker's joint detection and embedding
    model (`models.jde`).

    Args:
      features: float [B, D] embeddings before L2 normalisation.
      centres: [K', D] class centres; rows from `num_classes` on are padding.
      labels: int [B] true classes in [0, num_classes).
      num_classes: K, the real centres.
      margin: a `MARGINS` name; scale, easy_margin: see `losses.combined_margin_logits`.

    Returns:
      float32 [B, K']: the `margin`'s logits for the first K columns, and
      `_PADDING_LOGIT` (never chosen, no gradient) for the padding centres.
    """
    features = features.astype(jnp.float32)  # [B, D]
    centres = centres.astype(jnp.float32)  # [K', D]
    margins = MARGINS[margin]
    if margins is None:  # softmax
        logits = features @ centres.T  # [B, K']
    else:
        cosines = l2_normalize(features) @ l2_normalize(centres).T  # [B, K']
        m1, m2, m3 = margins
        logits = losses.combined_margin_logits(
            cosines, labels, scale=scale, m1=m1, m2=m2, m3=m3, easy_margin=easy_margin,
        )  # [B, K']
    is_real = jnp.arange(centres.shape[0]) < num_classes  # [K']
    return jnp.where(is_real, logits, _PADDING_LOGIT)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows of x [..., D] scaled to unit length; a zero row stays zero."""
    squared_norm = jnp.sum(jnp.square(x), axis=-1, keepdims=True)  # [..., 1]
    return x * jax.lax.rsqrt(jnp.maximum(squared_norm, eps**2))  # Finite gradient at 0.
