"""Recognition: an embedding per image, trained with a margin softmax, matched by cosine.

Implements the `jaxvision.tasks.Task` protocol for faces and any other
identity data. Training classifies each image's identity through the model's
margin head (`Recognizer.margin_logits`: ArcFace, CosFace, SphereFace or plain
softmax); evaluation never uses that head. It embeds every image of the eval
split, which holds identities never seen in training, and scores the split's
verification pairs (`data.verification_pairs`) by the cosine similarity of
their embeddings (`metrics.verification`):

  verification_accuracy (_std)  the LFW protocol: 10-fold cross-validated
                                accuracy, each fold's threshold chosen on the
                                other nine
  verification_threshold        the mean of those thresholds (a cosine)
  roc_auc, tar@far=1e-2, ...    the ROC of all pairs (`config.eval_far`)
  rank1, rank5                  identification, where identities are known:
                                each identity's first image is the gallery,
                                every other image a probe

With an export dir (`scripts/eval.py`) the ROC curve is drawn to `roc.png`
and written to `roc.json` there. `Matcher` serves `scripts/predict.py`: it
embeds image files, names the closest gallery identity of a query and scores
the image pairs of a pairs file (`read_pairs_file`).

Batches (from `data.RecognitionDecode`) hold "image" uint8 [B, S, S, C],
"label" int32 [B] (the identity; -1 where unknown), "id" int32 [B] (what the
pairs refer to) and at eval "mask" bool [B] (False: padding).
"""

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxvision import data, losses, visualize, writers
from jaxvision.data import augment, identity_files
from jaxvision.data.decode import resize_and_center_crop
from jaxvision.errors import UserError
from jaxvision.metrics import verification
from jaxvision.models.embedding import l2_normalize

_RANKS = (1, 5)  # Identification metrics reported: rank-1 and rank-5 accuracy.


def make_decode(config: ml_collections.ConfigDict) -> data.Decode:
    return data.RecognitionDecode(config.data.image_size)


def input_shape(
    config: ml_collections.ConfigDict, info: data.DatasetInfo
) -> tuple[int, int, int, int]:
    """`(1, S, S, C)`: one image."""
    return (1, config.data.image_size, config.data.image_size, info.channels)


def loss_fn(
    params: Any, batch_stats: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """Mean margin-softmax cross-entropy over the training identities.

    Args:
      params, batch_stats: the model variables.
      batch: `image` uint8 `[B, S, S, C]`, `label` int32 `[B]`.
      rng: key for augmentation and dropout.

    Returns:
      `(loss, (new_batch_stats, metrics))`; "accuracy" is the share of images
      whose margin logit of their own identity is the largest.
    """
    aug = config.augment
    aug_rng, dropout_rng = jax.random.split(rng)
    images = augment.preprocess_for_train(
        batch["image"], aug_rng, crop_size=config.data.image_size, pad=aug.pad,
        flip=aug.flip, mean=aug.mean, std=aug.std,
    )  # [B, S, S, C] float32
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, batch["label"],
        train=True, method="margin_logits", rngs={"dropout": dropout_rng},
        mutable=["batch_stats"],
    )  # [B, K']
    loss = losses.softmax_cross_entropy(logits, batch["label"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (updates["batch_stats"], {"loss": loss, "accuracy": accuracy})


def embed(
    variables: dict[str, Any], images: jax.Array, *, model: nn.Module,
    config: ml_collections.ConfigDict,
) -> jax.Array:
    """L2-normalised embeddings [B, D] of uint8 images [B, S, S, C].

    With `config.eval_flip` (insightface's test-time flip), the features of
    each image and of its mirror image are added before normalising.
    """
    aug = config.augment
    images = augment.preprocess_for_eval(
        images, crop_size=config.data.image_size, mean=aug.mean, std=aug.std
    )  # [B, S, S, C]
    features = model.apply(variables, images, False, method="features")  # [B, D]
    if config.eval_flip:
        features = features + model.apply(variables, images[:, :, ::-1], False, method="features")
    return l2_normalize(features)


def eval_outputs(
    variables: dict[str, Any], batch: dict[str, jax.Array], *,
    model: nn.Module, config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """Each image's embedding [B, D] with its "id", "label" and "mask" (matching is on the host)."""
    return {
        "embedding": embed(variables, batch["image"], model=model, config=config),
        "id": batch["id"], "label": batch["label"], "mask": batch["mask"],
    }


class Evaluator:
    """Collects every real eval image's embedding; verification and identification metrics."""

    def __init__(self, config: ml_collections.ConfigDict, info: data.DatasetInfo, split: str):
        del info  # The eval identities are not the training classes.
        cfg = config.data
        self._split = split
        self._pairs = data.verification_pairs(cfg.name, split, cfg.data_dir)  # [P, 4]
        self._far_targets = tuple(config.eval_far)
        self._rows: dict[str, list[np.ndarray]] = {"embedding": [], "id": [], "label": []}

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        """Adds one batch's `eval_outputs` (fetched to the host)."""
        real = outputs["mask"].astype(bool)  # [B]
        for key, rows in self._rows.items():
            rows.append(outputs[key][real])

    def result(self, export_dir: str | None = None) -> dict[str, float]:
        """The metrics (module docstring); with `export_dir`, `roc.png` and `roc.json` there.

        Raises:
          UserError: no pair has both of its images among the evaluated ones.
        """
        embeddings = np.concatenate(self._rows["embedding"]).astype(np.float64)  # [N, D]
        ids = np.concatenate(self._rows["id"])  # [N]
        labels = np.concatenate(self._rows["label"])  # [N]
        zero = np.linalg.norm(embeddings, axis=1) < 1e-6  # [N]
        if zero.any():
            logging.warning(
                "%d of the %d embeddings of %s are all zeros; their pairs score 0.",
                zero.sum(), len(zero), self._split,
            )
        scores, same, folds = self._score_pairs(embeddings, ids)
        metrics = verification.ten_fold_accuracy(scores, same, folds)
        far, tar, _ = verification.roc_curve(scores, same)
        metrics = {
            "verification_accuracy": metrics["accuracy"],
            "verification_accuracy_std": metrics["accuracy_std"],
            "verification_threshold": metrics["threshold"],
            "roc_auc": verification.roc_auc(far, tar),
            **{f"tar@far={_far_name(f)}": t for f, t in
               verification.tar_at_far(scores, same, self._far_targets).items()},
            "num_pairs": float(len(scores)),
        }
        if (labels >= 0).all():
            gallery, probes = verification.split_gallery_probes(labels)
            cmc = verification.cmc(embeddings[gallery], labels[gallery], embeddings[probes],
                                   labels[probes], max_rank=max(_RANKS))
            metrics.update({f"rank{r}": float(cmc[min(r, len(cmc)) - 1]) for r in _RANKS})
        if export_dir is not None and jax.process_index() == 0:
            os.makedirs(export_dir, exist_ok=True)
            with open(os.path.join(export_dir, "roc.json"), "w") as f:
                json.dump({"far": far.tolist(), "tar": tar.tolist(), **metrics}, f)
            accuracy, auc = metrics["verification_accuracy"], metrics["roc_auc"]
            visualize.plot_roc(
                os.path.join(export_dir, "roc.png"),
                {f"accuracy {accuracy:.4f}, AUC {auc:.4f}": (far, tar)}, title=self._split,
            )
        return metrics

    def _score_pairs(
        self, embeddings: np.ndarray, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cosine scores [P'], same [P'] and folds [P'] of the pairs whose images were evaluated."""
        row_of = np.full(max(ids.max(initial=0), self._pairs[:, :2].max(initial=0)) + 1, -1)
        row_of[ids] = np.arange(len(ids))
        rows = row_of[self._pairs[:, :2]]  # [P, 2]; -1: not evaluated
        present = (rows >= 0).all(axis=1)  # [P]
        if not present.any():
            raise UserError(
                f"None of the {len(self._pairs)} verification pairs of {self._split!r} has "
                "both images in what was evaluated; evaluate the whole split "
                "(config.data.eval_split without a slice)."
            )
        if not present.all():
            logging.warning(
                "%d of the %d verification pairs of %s are left out: their images were "
                "not evaluated.", (~present).sum(), len(present), self._split,
            )
        rows, pairs = rows[present], self._pairs[present]
        scores = verification.cosine_similarity(embeddings[rows[:, 0]], embeddings[rows[:, 1]])
        return scores, pairs[:, 2].astype(bool), pairs[:, 3]


def _far_name(far: float) -> str:
    """1e-3 -> "1e-3" (metric names such as "tar@far=1e-3")."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


class Matcher:
    """A trained recognizer applied to image files: embeddings, identification, pair scores.

    Each image is read with `visualize.load_image`, resized as the datasets
    are (`data.RecognitionDecode`: shorter side to `config.data.image_size`,
    centred square) and embedded by `embed`, in batches of a fixed size (one
    compiled shape).
    """

    def __init__(self, exp: Any, variables: dict[str, Any], batch_size: int = 32):
        """`exp`: the `experiment.Experiment` whose model `variables` belong to."""
        self._variables = variables
        self._size = exp.config.data.image_size
        self._channels = exp.input_shape[-1]
        self._batch_size = batch_size
        self._embed = jax.jit(functools.partial(embed, model=exp.model, config=exp.config))

    def embed_files(self, paths: Sequence[str]) -> np.ndarray:
        """float32 [N, D] L2-normalised embeddings of the image files `paths`.

        Raises:
          UserError: an image cannot be read (naming it).
        """
        chunks = []
        for start in range(0, len(paths), self._batch_size):
            chunk = paths[start : start + self._batch_size]
            batch = np.zeros((self._batch_size, self._size, self._size, self._channels), np.uint8)
            for i, path in enumerate(chunk):
                image = visualize.load_image(path, self._channels)  # [H, W, C]
                batch[i] = resize_and_center_crop(image, self._size)
            chunks.append(np.asarray(self._embed(self._variables, batch))[: len(chunk)])
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def gallery(self, folder: str) -> tuple[tuple[str, ...], np.ndarray]:
        """The identities of an identity folder and their templates [I, D].

        An identity's template is the L2-normalised mean of its images' embeddings.
        """
        source = identity_files.IdentityFolderSource(folder)
        embeddings = self.embed_files([os.path.join(folder, f) for f in source.files])  # [N, D]
        sums = np.zeros((len(source.class_names), embeddings.shape[1]))  # [I, D]
        np.add.at(sums, source.labels, embeddings)
        norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return source.class_names, sums / norms

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """[P] cosine similarities of the image pairs (each distinct file embedded once)."""
        files = sorted({path for pair in pairs for path in pair})
        embeddings = self.embed_files(files)  # [F, D]
        row = {path: i for i, path in enumerate(files)}
        return verification.cosine_similarity(
            embeddings[[row[a] for a, _ in pairs]], embeddings[[row[b] for _, b in pairs]]
        )


def read_pairs_file(path: str) -> tuple[list[tuple[str, str]], list[int | None]]:
    """The image pairs of a text file: one pair per line, `IMAGE_A IMAGE_B [SAME]`.

    Paths are relative to the file's folder (or absolute); SAME, when given,
    is 1 (same identity) or 0. Blank lines and lines starting with "#" are
    skipped.

    Returns:
      `(pairs, same)`: `[(a, b), ...]` and each pair's SAME (None where not given).

    Raises:
      UserError: the file is missing, a line is malformed or names a missing
        image (with its line number).
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"Cannot read the pairs file {path!r} ({e.strerror or e}).") from e
    folder = os.path.dirname(path)
    pairs, same = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] not in ("0", "1")):
            raise UserError(
                f"Line {number} of {path!r} is {line!r}; each line must be "
                "'IMAGE_A IMAGE_B' or 'IMAGE_A IMAGE_B SAME' with SAME 1 or 0."
            )
        images = tuple(os.path.join(folder, os.path.expanduser(p)) for p in fields[:2])
        for image in images:
            if not os.path.isfile(image):
                raise UserError(
                    f"Line {number} of {path!r} names {image!r}, which does not exist; "
                    "image paths are relative to the pairs file's folder."
                )
        pairs.append(images)
        same.append(int(fields[2]) if len(fields) == 3 else None)
    if not pairs:
        raise UserError(f"The pairs file {path!r} holds no pairs; write 'IMAGE_A IMAGE_B' lines.")
    return pairs, same


def logged_threshold(workdir: str) -> float | None:
    """The newest `verification_threshold` in `workdir/metrics.jsonl` (the first eval set's), or None."""
    threshold = None
    for row in writers.read_metrics(workdir):
        keys = [k for k in row if k.split("/")[-1] == "verification_threshold"]  # Eval order.
        if keys:
            threshold = float(row[keys[0]])
    return threshold


def synthetic_batch(
    config: ml_collections.ConfigDict, info: data.DatasetInfo, batch_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Random uint8 "image" `[B, S, S, C]`, "label", "id" `[B]` and "mask" `[B]` (all True)."""
    size = config.data.image_size
    return {
        "image": rng.integers(0, 256, (batch_size, size, size, info.channels), dtype=np.uint8),
        "label": rng.integers(0, info.num_classes, (batch_size,), dtype=np.int32),
        "id": np.arange(batch_size, dtype=np.int32),
        "mask": np.ones((batch_size,), bool),
    }
