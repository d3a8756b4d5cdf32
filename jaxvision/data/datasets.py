"""The boundary between configs and data: dataset names in, random-access sources out.

Builders defined in jaxvision (e.g. "digits") are prepared on first use, offline.
Catalog datasets ("mnist", "cifar10", "imagenet2012", ...) must be prepared
beforehand with `tfds build` in the array_record format, which needs
TensorFlow; reading them never does. Datasets in `FILE_DATASETS` are read
from the user's own files, with nothing to prepare; their splits are paths.
"""

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from jaxvision.data import identity_files
from jaxvision.errors import UserError

_CATALOG_URL = "https://www.tensorflow.org/datasets/catalog/overview"

# The tfds builders defined in jaxvision (importing `jaxvision.data` registers
# them); they are prepared locally on first use. Add new builders here.
BUILTIN_DATASETS = ("digits", "digit_detection", "digit_instances")
# Datasets read from the user's files. A split is a path, relative to the data dir:
#   identity_folder: a folder with one sub-folder of images per identity (the
#     CASIA-WebFace / insightface layout), or an insightface verification `.bin`.
FILE_DATASETS = ("identity_folder",)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a config needs to know about a dataset.

    Attributes:
        num_classes: Number of label classes.
        class_names: One name per class, indexed by label.
        num_examples: Examples per split; empty while the dataset is not prepared.
        image_shape: (H, W, C) of every image, or None when sizes vary.
        is_detection: Whether records hold object boxes ("objects", as in
            tfds `coco`) rather than one label per image.
        has_instance_masks: Whether records hold an instance-id map
            ("instances", as in `digit_detection` 1.1.0) giving each object's mask.
    """

    num_classes: int
    class_names: tuple[str, ...]
    num_examples: dict[str, int]
    image_shape: tuple[int, int, int] | None
    is_detection: bool = False
    has_instance_masks: bool = False

    @property
    def channels(self) -> int:
        """Channels of every image: from `image_shape`, else 3 (RGB)."""
        return self.image_shape[-1] if self.image_shape else 3


def load_source(name: str, split: str, data_dir: str | None = None) -> Sequence[Any]:
    """Returns a random-access source (`len`, `[i]`) of dict records for one split.

    Args:
        name: A jaxvision builder ("digits") or any tfds catalog name ("mnist").
        split: A split of that dataset, e.g. "train" or "test" (tfds slicing
            such as "train[:90%]" works too).
        data_dir: The tfds data dir; None means tfds's default
            (`$TFDS_DATA_DIR` or ~/tensorflow_datasets).
    """
    if name in FILE_DATASETS:
        return _identity_source(split, data_dir)
    builder = _builder(name, data_dir)
    # Splits are only known once prepared (and never under tfds mock_data).
    available = list(builder.info.splits)
    if available:
        for part in split.split("+"):
            if part.split("[")[0].strip() not in available:
                raise UserError(
                    f"Dataset {name!r} has no split {split!r}; use one of {available}."
                )
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError as e:  # Not prepared, or prepared as tfrecord.
        raise UserError(_not_prepared_message(builder, name)) from e


def dataset_info(
    name: str, data_dir: str | None = None, split: str = "train"
) -> DatasetInfo:
    """Returns the classes, split sizes and image shape of a dataset.

    jaxvision's own datasets are prepared first, so their split sizes are known.

    Args:
        name: A jaxvision builder, tfds catalog name or `FILE_DATASETS` name.
        data_dir: The tfds data dir (a file dataset's root); None means tfds's default.
        split: File datasets only: the split (path) described, whose
            identities are the classes (a `.bin` verification set has none).
    """
    if name in FILE_DATASETS:
        source = _identity_source(split, data_dir)
        names = getattr(source, "class_names", ())
        return DatasetInfo(
            num_classes=len(names), class_names=names, num_examples={split: len(source)},
            image_shape=None,  # Sizes vary; images are decoded to RGB.
        )
    info = _builder(name, data_dir).info
    is_detection = "objects" in info.features
    label = info.features["objects"]["label"] if is_detection else info.features["label"]
    shape = tuple(info.features["image"].shape)  # (H, W, C); None where it varies.
    return DatasetInfo(
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        num_examples={s: info.splits[s].num_examples for s in info.splits},
        image_shape=None if None in shape else shape,
        is_detection=is_detection,
        has_instance_masks="instances" in info.features,
    )


def verification_pairs(name: str, split: str, data_dir: str | None = None) -> np.ndarray:
    """The verification pairs of a split: int32 `[P, 4]` rows `(id_a, id_b, same, fold)`.

    `id_a` and `id_b` are the examples' "id" fields, `same` is 1 for two images
    of one identity, and `fold` numbers the cross-validation folds (LFW's
    protocol has 10). They come from the dataset's pairs list (as in
    `digit_instances`' test split), an insightface `.bin` file, or, for an
    identity folder, `identity_files.folder_pairs` (seeded, LFW-style).

    Raises:
      UserError: the split has no pairs list.
    """
    if name in FILE_DATASETS:
        source = _identity_source(split, data_dir)
        if isinstance(source, identity_files.VerificationBinSource):
            return source.pairs()
        return identity_files.folder_pairs(source.labels, name=source.path)
    metadata = _builder(name, data_dir).info.metadata or {}
    pairs = metadata.get("pairs", {})
    if split not in pairs:
        raise UserError(
            f"Dataset {name!r} has no verification pairs for split {split!r} (it has them "
            f"for {sorted(pairs) or 'no split'}); set config.data.eval_split to one of those."
        )
    return np.asarray(pairs[split], np.int32).reshape(-1, 4)


@functools.lru_cache(maxsize=16)
def _identity_source(
    split: str, data_dir: str | None
) -> identity_files.IdentityFolderSource | identity_files.VerificationBinSource:
    """The `identity_folder` split at path `data_dir/split`: a folder or a `.bin` file."""
    if data_dir is None and not os.path.isabs(os.path.expanduser(split)):
        raise UserError(
            f"Dataset 'identity_folder' reads your files: set config.data.data_dir to the "
            f"folder holding split {split!r}, or give the split as an absolute path."
        )
    path = os.path.join(os.path.expanduser(data_dir or ""), os.path.expanduser(split))
    if path.lower().endswith(".bin"):
        return identity_files.VerificationBinSource(path)
    return identity_files.IdentityFolderSource(path)


def prepare(name: str, data_dir: str | None = None):
    """Prepares a jaxvision dataset once per machine, process 0 first.

    In a multi-process run every process calls this: process 0 builds the
    dataset, the others wait for it and then find it built (shared data dir)
    or build their own copy (a data dir local to their host), so two processes
    never write the same files at once. Catalog and file datasets are left alone.
    """
    if name in FILE_DATASETS:
        return
    if jax.process_count() == 1:
        _builder(name, data_dir)
        return
    if jax.process_index() == 0:
        _builder(name, data_dir)
    multihost_utils.sync_global_devices(f"jaxvision: {name} prepared by process 0")
    if jax.process_index() != 0:
        _builder(name, data_dir)


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """Returns the tfds builder for `name`, preparing jaxvision's own builders."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UserError(
            f"Unknown dataset {name!r}; use one of jaxvision's built-in datasets "
            f"{list(BUILTIN_DATASETS)}, a file dataset {list(FILE_DATASETS)} "
            "or a name from the tfds catalog "
            f"({_CATALOG_URL})."
        ) from e
    except ModuleNotFoundError as e:
        if "No module named 'tensorflow'" not in str(e):
            raise
        # Some catalog builders (e.g. coco) need TensorFlow to be constructed;
        # their prepared copy is read from its directory without it.
        return _prepared_builder(name, data_dir)
    if builder.name in BUILTIN_DATASETS and not builder.is_prepared():
        older = _older_prepared_versions(builder)
        if older:
            note = builder.RELEASE_NOTES.get(str(builder.version), "is newer")
            logging.info(
                "Preparing %s %s in %s (first use; version %s %s; the older %s copy "
                "is left in place).", name, builder.version, builder.data_dir_root,
                builder.version, note, " and ".join(older),
            )
        else:
            logging.info("Preparing %s in %s (first use).", name, builder.data_dir_root)
        builder.download_and_prepare(
            file_format="array_record",
            # The data ships with the code; never ask GCS for a prepared copy.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    return builder


def _older_prepared_versions(builder: tfds.core.DatasetBuilder) -> list[str]:
    """The versions of `builder`'s dataset older than its own prepared in its data dir."""
    root = os.path.dirname(builder.data_dir)  # <data_dir>/<name>[/<config>]
    return sorted(
        (v for v in (os.listdir(root) if os.path.isdir(root) else [])
         if tfds.core.Version.is_valid(v) and tfds.core.Version(v) < builder.version
         and os.path.isfile(os.path.join(root, v, "dataset_info.json"))),
        key=tfds.core.Version,
    )


def _prepared_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The builder of a prepared catalog dataset ("coco/2017"), read from its files.

    Uses the dataset's newest prepared version, or the one named as in
    "coco/2017:1.1.0".
    """
    name, _, version = name.partition(":")
    base = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
    root = os.path.join(base, *name.split("/"))
    versions = [version] if version else sorted(
        (v for v in (os.listdir(root) if os.path.isdir(root) else [])
         if tfds.core.Version.is_valid(v)),
        key=tfds.core.Version,
    )
    if not versions or not os.path.isfile(os.path.join(root, versions[-1], "dataset_info.json")):
        raise UserError(
            f"Dataset {name!r} is not prepared in {root}; prepare it once with "
            f'`pip install -e ".[prepare]" && tfds build {name} --data_dir {base} '
            "--file_format array_record` "
            "(its tfds builder needs TensorFlow, reading it does not)."
        )
    return tfds.builder_from_directory(os.path.join(root, versions[-1]))


def _not_prepared_message(builder: tfds.core.DatasetBuilder, name: str) -> str:
    data_dir = builder.data_dir_root
    manual = ""
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        manual = (
            " after placing its manually downloaded files (named on its tfds "
            f"catalog page) in {data_dir}/downloads/manual"
        )
    return (
        f"Dataset {name!r} is not prepared in array_record format in {data_dir}; "
        f'prepare it once with `pip install -e ".[prepare]" && tfds build {name} '
        f"--data_dir {data_dir} --file_format array_record`{manual}."
    )
