"""The boundary between configs and data: dataset names in, random-access sources out.

Builders defined in jaxvision (e.g. "digits") are prepared on first use, offline.
Catalog datasets ("mnist", "cifar10", "imagenet2012", ...) must be prepared
beforehand with `tfds build` in the array_record format, which needs
TensorFlow; reading them never does. Datasets in `FILE_DATASETS` are read
from the user's own files, with nothing to prepare; their splits name paths.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from jaxvision.data import coco_json, identity_files, idx_files, image_folder, mot_files
from jaxvision.errors import UserError

_CATALOG_URL = "https://www.tensorflow.org/datasets/catalog/overview"

# The tfds builders defined in jaxvision (importing `jaxvision.data` registers
# them); they are prepared locally on first use. Add new builders here.
BUILTIN_DATASETS = ("digits", "digit_detection", "digit_instances", "moving_digits")


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
        category_ids: The dataset's own category id of each label (as in a
            COCO JSON), for writing results; None means label + 1.
    """

    num_classes: int
    class_names: tuple[str, ...]
    num_examples: dict[str, int]
    image_shape: tuple[int, int, int] | None
    is_detection: bool = False
    has_instance_masks: bool = False
    category_ids: tuple[int, ...] | None = None

    @property
    def channels(self) -> int:
        """Channels of every image: from `image_shape`, else 3 (RGB)."""
        return self.image_shape[-1] if self.image_shape else 3


@dataclasses.dataclass(frozen=True)
class SequenceMetadata:
    """One video sequence of a tracking split (see `sequence_metadata`).

    Attributes:
        name: The sequence's name (a MOT folder name, or "test-007").
        num_frames: Frames of it in the split (its frame range, for "mot").
        first_frame: The 1-based number of its first frame in the split.
        frame_rate: Frames per second.
        height, width: Image size in pixels.
    """

    name: str
    num_frames: int
    first_frame: int
    frame_rate: float
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class _FileDataset:
    """How a dataset read from the user's files opens and describes a split.

    Attributes:
        open: (split, *the split's paths under the data dir) -> random-access source.
        info: (source, split) -> its `DatasetInfo`.
        paths: split -> the paths it names, each relative to the data dir unless
            absolute (the split itself, unless it carries more, such as a frame
            range, or names two paths).
        sequences: source -> its video sequences; None for datasets of images.
    """

    open: Callable[..., Any]
    info: Callable[[Any, str], DatasetInfo]
    paths: Callable[[str], tuple[str, ...]] = lambda split: (split,)
    sequences: Callable[[Any], list[SequenceMetadata]] | None = None


def _open_identity(split: str, path: str) -> identity_files.IdentitySource:
    if path.lower().endswith(".bin"):
        return identity_files.VerificationBinSource(path)
    return identity_files.IdentityFolderSource(path)


def _folder_info(
    source: identity_files.IdentitySource | image_folder.ImageFolderSource, split: str
) -> DatasetInfo:
    names = getattr(source, "class_names", ())  # A `.bin` has no identities.
    return DatasetInfo(
        num_classes=len(names), class_names=names, num_examples={split: len(source)},
        image_shape=None,  # Sizes vary; images are decoded to RGB.
    )


def _open_image_folder(split: str, path: str) -> image_folder.ImageFolderSource:
    """The split's source, its classes checked against those of the "train" split.

    Labels index the sorted class names, so a split other than "train" must
    have the classes of the "train" folder beside it, when there is one: the
    check is made whenever such a split is opened (`load_source`,
    `dataset_info`), so an eval split is checked when it is first read.
    """
    source = image_folder.ImageFolderSource(path)
    folder = os.path.normpath(path)
    train = os.path.join(os.path.dirname(folder), "train")
    if folder != train and os.path.isdir(train):
        classes = tuple(image_folder.sub_folders(train))
        if classes != source.class_names:
            only_here = sorted(set(source.class_names) - set(classes))
            only_train = sorted(set(classes) - set(source.class_names))
            raise UserError(
                f"Image folder split {path!r} does not have the classes of {train!r} "
                f"(only in {split!r}: {only_here}; only in train: {only_train}), so its "
                "labels would mean other classes; give both splits the same class folders."
            )
    return source


def _open_idx(split: str, directory: str) -> idx_files.IdxSource:
    return idx_files.IdxSource(directory, os.path.basename(split))


def _idx_paths(split: str) -> tuple[str]:
    return (os.path.dirname(split),)


def _idx_info(source: idx_files.IdxSource, split: str) -> DatasetInfo:
    num_classes = int(source.labels.max()) + 1 if len(source) else 0
    return DatasetInfo(
        num_classes=num_classes, class_names=tuple(str(k) for k in range(num_classes)),
        num_examples={split: len(source)}, image_shape=(*source.images.shape[1:], 1),
    )


def _open_coco_json(split: str, annotations: str, images: str) -> coco_json.CocoJsonSource:
    return coco_json.CocoJsonSource(annotations, images)


def _coco_json_paths(split: str | None) -> tuple[str, str]:
    annotations, separator, images = (split or "").partition("::")
    if not (separator and annotations and images):
        raise UserError(
            f"The coco_json split {split!r} is not 'ANNOTATIONS_JSON::IMAGE_FOLDER'; set "
            "config.data.train_annotations and config.data.train_images (and "
            "eval_annotations / eval_images) to a COCO instances JSON and its image folder."
        )
    return annotations, images


def _coco_json_info(source: coco_json.CocoJsonSource, split: str) -> DatasetInfo:
    return DatasetInfo(
        num_classes=len(source.class_names), class_names=source.class_names,
        num_examples={split: len(source)}, image_shape=None, is_detection=True,
        category_ids=source.category_ids,
    )


def _open_mot(split: str, path: str) -> mot_files.MOTSource:
    _, frames = mot_files.parse_split(split)
    return mot_files.MOTSource(path, frames)


def _mot_paths(split: str) -> tuple[str]:
    return (mot_files.parse_split(split)[0],)


def _mot_sequences(source: mot_files.MOTSource) -> list[SequenceMetadata]:
    return [
        SequenceMetadata(
            name=sequence, num_frames=int(last - first + 1), first_frame=int(first),
            frame_rate=info.frame_rate, height=info.height, width=info.width,
        )
        for sequence, info, first, last in zip(
            source.sequences, source.infos, source.first_frames, source.last_frames,
            strict=True,
        )
    ]


def _mot_info(source: mot_files.MOTSource, split: str) -> DatasetInfo:
    sizes = {(info.height, info.width, 3) for info in source.infos}
    return DatasetInfo(
        num_classes=len(mot_files.CLASS_NAMES), class_names=mot_files.CLASS_NAMES,
        num_examples={split: len(source)},
        image_shape=sizes.pop() if len(sizes) == 1 else None,
        is_detection=True,
    )


# Datasets read from the user's files, with nothing to prepare. A split names
# paths relative to the data dir (config.data.path, the same field as data_dir), or absolute paths:
#   image_folder: a folder of one sub-folder of images per class (torchvision's
#     ImageFolder), e.g. "train" for DATA_DIR/train/<class>/<image>; a split other
#     than "train" must have the classes of its sibling "train" if there is one;
#   idx: "train" or "test", the MNIST-style IDX files in the data dir (or
#     "FOLDER/train" for those in FOLDER);
#   coco_json: "ANNOTATIONS_JSON::IMAGE_FOLDER", a COCO instances JSON and the
#     folder its file names are relative to (detectron2's register_coco_instances);
#   identity_folder: a folder with one sub-folder of images per identity (the
#     CASIA-WebFace / insightface layout), or an insightface verification `.bin`;
#   mot: a MOTChallenge split folder (MOT17/train: SEQ/seqinfo.ini, SEQ/img1/,
#     SEQ/gt/gt.txt), optionally with a per-sequence frame range, "train[:50%]"
#     / "train[50%:]" (ByteTrack's half split; see `mot_files.frame_range`).
_FILE_DATASETS = {
    "image_folder": _FileDataset(_open_image_folder, _folder_info),
    "idx": _FileDataset(_open_idx, _idx_info, paths=_idx_paths),
    "coco_json": _FileDataset(_open_coco_json, _coco_json_info, paths=_coco_json_paths),
    "identity_folder": _FileDataset(_open_identity, _folder_info),
    "mot": _FileDataset(_open_mot, _mot_info, paths=_mot_paths, sequences=_mot_sequences),
}
FILE_DATASETS = tuple(_FILE_DATASETS)


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
        return _file_source(name, split, data_dir)
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
        split: File datasets only: the split described (see `_FILE_DATASETS`);
            for identity_folder its identities are the classes (a `.bin`
            verification set has none), for mot it may carry a frame range;
            for idx the classes are 0..(its largest label).
    """
    if name in FILE_DATASETS:
        return _FILE_DATASETS[name].info(_file_source(name, split, data_dir), split)
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
    if name == "identity_folder":
        source = _file_source(name, split, data_dir)
        if isinstance(source, identity_files.VerificationBinSource):
            return source.pairs()
        return identity_files.folder_pairs(source.labels, name=source.path)
    if name in FILE_DATASETS:
        raise UserError(
            f"Dataset {name!r} has no verification pairs; evaluate verification on an "
            "identity dataset (identity_folder, digit_instances)."
        )
    metadata = _builder(name, data_dir).info.metadata or {}
    pairs = metadata.get("pairs", {})
    if split not in pairs:
        raise UserError(
            f"Dataset {name!r} has no verification pairs for split {split!r} (it has them "
            f"for {sorted(pairs) or 'no split'}); set config.data.eval_split to one of those."
        )
    return np.asarray(pairs[split], np.int32).reshape(-1, 4)


def sequence_metadata(
    name: str, split: str, data_dir: str | None = None
) -> list[SequenceMetadata]:
    """The video sequences of a tracking split, by sequence index (records' "sequence").

    For evaluation and for writing results per sequence: MOTChallenge results
    files are named after the sequence and trackers scale their motion model
    with the frame rate.

    Args:
        name: "mot" or a builder whose `info.metadata` describes its
            sequences ("moving_digits": sequence k is named "SPLIT-k", k 3 digits).
        split: A split of it; for "mot" with its frame range ("train[50%:]"). A
            tfds slice of a builder's split ("test[:80]") describes the whole split.
        data_dir: The data dir (for "mot", the folder the split is relative to).

    Raises:
        UserError: The dataset has no sequences.
    """
    file_dataset = _FILE_DATASETS.get(name)
    if file_dataset is not None and file_dataset.sequences is not None:
        return file_dataset.sequences(_file_source(name, split, data_dir))
    metadata = {} if file_dataset else (_builder(name, data_dir).info.metadata or {})
    splits = sorted(metadata.get("num_sequences", {}))
    split = split.split("[")[0].strip()  # A slice ("test[:80]") keeps the split's sequence indices.
    if split not in splits:
        raise UserError(
            f"Dataset {name!r} has no video sequences in split {split!r}; use "
            + (f"one of its splits {splits}." if splits else "a tracking dataset "
               "(moving_digits, or mot with config.data.data_dir).")
        )
    size = metadata["frame_size"]
    return [
        SequenceMetadata(
            name=f"{split}-{k:03d}", num_frames=metadata["frames_per_sequence"],
            first_frame=1, frame_rate=float(metadata["frame_rate"]), height=size, width=size,
        )
        for k in range(metadata["num_sequences"][split])
    ]


@functools.lru_cache(maxsize=16)
def _file_source(name: str, split: str, data_dir: str | None) -> Any:
    """The source of a `FILE_DATASETS` split, read from `data_dir/<the split's paths>`."""
    paths = [os.path.expanduser(path) for path in _FILE_DATASETS[name].paths(split)]
    if data_dir is None and not all(os.path.isabs(path) for path in paths):
        raise UserError(
            f"Dataset {name!r} reads your files: set config.data.path (or data_dir, the "
            f"same field) to the folder holding split {split!r}, or give the split as an "
            "absolute path."
        )
    root = os.path.expanduser(data_dir or "")
    return _FILE_DATASETS[name].open(split, *(os.path.join(root, path) for path in paths))


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
