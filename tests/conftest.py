"""Test setup: 8 virtual CPU devices, so sharding tests run on any machine.

The flag must be set before `jax` is first imported, which is why it lives
here (and why jaxvision is imported inside the fixtures).
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def digit_detection_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digit_detection" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_detection"))
    data.load_source("digit_detection", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def digit_instances_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digit_instances" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_instances"))
    data.load_source("digit_instances", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def moving_digits_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "moving_digits" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_moving_digits"))
    data.load_source("moving_digits", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def coco_dir(tmp_path_factory) -> str:
    """A tfds data dir holding a tiny prepared `coco/2017` of random images.

    Written by a builder with tfds coco's exact features (JPEG images of
    varying size, normalized yxyx boxes, 80 classes, crowd flags, unique
    annotation ids), so reading it goes through the same path as the real,
    prepared COCO. Like real COCO, the masks are not in the tfds records but
    in COCO instances JSON files, `annotations/instances_{train,val}2017.json`
    in the same dir (see `coco_annotations`): object j of an image has a
    polygon (j = 0), an uncompressed RLE (j = 1) or a compressed RLE (j = 2)
    inside its box.
    """
    import io
    import json
    import os

    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    annotations = {"train": [], "validation": []}  # COCO "annotations" per split.

    class FakeCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "coco"
        VERSION = tfds.core.Version("1.1.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2017")]  # noqa: RUF012

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "area": np.int64, "bbox": tfds.features.BBoxFeature(), "id": np.int64,
                    "is_crowd": np.bool_, "label": tfds.features.ClassLabel(num_classes=80),
                }),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(16, 0, annotations["train"]),
                    "validation": self._generate_examples(8, 1000, annotations["validation"])}

        def _generate_examples(self, num, first_id, split_annotations):
            rng = np.random.default_rng(first_id)
            for image_id in range(first_id, first_id + num):
                height, width = rng.integers(40, 100, 2)
                jpeg = io.BytesIO()
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(image).save(jpeg, "JPEG")
                k = int(rng.integers(0, 4))  # Some images have no objects.
                y0, x0 = rng.uniform(0, 0.5, (2, k))
                ids = [10 * image_id + j for j in range(k)]
                for j in range(k):
                    box = np.array([x0[j], y0[j], x0[j] + 0.3, y0[j] + 0.4]) * [
                        width, height, width, height]  # xyxy pixels
                    split_annotations.append({
                        "id": ids[j], "image_id": image_id, "iscrowd": int(j == 2),
                        "segmentation": _fake_segmentation(j, box, int(height), int(width)),
                    })
                yield image_id, {
                    "image": jpeg.getvalue(),
                    "image/filename": f"{image_id:012d}.jpg",
                    "image/id": image_id,
                    "objects": {
                        "area": [100] * k,
                        "bbox": [tfds.features.BBox(y0[j], x0[j], y0[j] + 0.4, x0[j] + 0.3)
                                 for j in range(k)],
                        "id": ids,
                        "is_crowd": [j == 2 for j in range(k)],
                        "label": list(rng.integers(0, 80, k)),
                    },
                }

    data_dir = str(tmp_path_factory.mktemp("tfds_coco"))
    FakeCoco(data_dir=data_dir).download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    os.makedirs(os.path.join(data_dir, "annotations"))
    for split, path in _coco_annotation_paths(data_dir).items():
        with open(path, "w") as f:
            json.dump({"annotations": annotations[split]}, f)
    return data_dir


@pytest.fixture(scope="session")
def coco_annotations(coco_dir) -> dict[str, str]:
    """{"train": path, "validation": path} of `coco_dir`'s COCO instances JSON files."""
    return _coco_annotation_paths(coco_dir)


def _coco_annotation_paths(data_dir: str) -> dict[str, str]:
    import os

    folder = os.path.join(data_dir, "annotations")
    return {"train": os.path.join(folder, "instances_train2017.json"),
            "validation": os.path.join(folder, "instances_val2017.json")}


def _fake_segmentation(kind: int, box, height: int, width: int):
    """A COCO segmentation inside `box` (xyxy pixels) of a height x width image.

    kind 0: a polygon, the diamond through the box's edge midpoints; 1: an
    uncompressed RLE of the box's middle half; 2: a compressed RLE of its left
    two thirds.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    x0, y0, x1, y1 = box
    if kind == 0:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return [[cx, y0, x1, cy, cx, y1, x0, cy]]
    mask = np.zeros((height, width), np.uint8)
    if kind == 1:
        w, h = x1 - x0, y1 - y0
        mask[round(y0 + h / 4) : round(y1 - h / 4), round(x0 + w / 4) : round(x1 - w / 4)] = 1
        flat = mask.ravel(order="F")  # COCO runs go down the columns.
        changes = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
        counts = ([0] if flat[0] else []) + runs.tolist()
        return {"size": [height, width], "counts": counts}
    mask[round(y0) : round(y1), round(x0) : round(x0 + (x1 - x0) * 2 / 3)] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": rle["counts"].decode()}


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digits" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data.load_source("digits", "train", data_dir)
    return data_dir


def _digits_split(data_dir: str, split: str):
    """The images (uint8 [N, 8, 8, 1]) and labels ([N]) of a split of "digits"."""
    import numpy as np

    from jaxvision import data

    source = data.load_source("digits", split, data_dir)
    records = [source[i] for i in range(len(source))]
    return np.stack([r["image"] for r in records]), np.array([r["label"] for r in records])


@pytest.fixture(scope="session")
def digits_image_folder(digits_dir, tmp_path_factory) -> str:
    """ROOT of "digits" written by `write_image_folder`: ROOT/train (1,437), ROOT/test (360).

    Class folders "0".."9" of grey 8x8 PNGs; for the "image_folder" dataset
    (data_dir ROOT, splits "train" and "test").
    """
    from jaxvision import data
    from jaxvision.data import image_folder

    root = tmp_path_factory.mktemp("digits_image_folder")
    class_names = data.dataset_info("digits", digits_dir).class_names
    for split in ("train", "test"):
        images, labels = _digits_split(digits_dir, split)
        image_folder.write_image_folder(str(root / split), images, labels, class_names)
    return str(root)


@pytest.fixture(scope="session")
def digits_idx_dir(digits_dir, tmp_path_factory) -> str:
    """A folder of "digits" written by `write_idx` (MNIST's names, not gzipped).

    train-{images-idx3,labels-idx1}-ubyte (1,437) and t10k-* (360); for the
    "idx" dataset (data_dir this folder, splits "train" and "test").
    """
    from jaxvision.data import idx_files

    directory = str(tmp_path_factory.mktemp("digits_idx"))
    for split in ("train", "test"):
        idx_files.write_idx(directory, split, *_digits_split(digits_dir, split))
    return directory


@pytest.fixture(scope="session")
def digit_detection_coco_json(digit_detection_dir, tmp_path_factory) -> dict[str, str]:
    """The first 64 train and 32 test records of "digit_detection" as COCO JSON + PNGs.

    Written by `write_coco_json` with sparse category ids 2 * label + 3 (3, 5,
    ..., 21). Returns the paths {"train_annotations", "train_images",
    "eval_annotations", "eval_images"} (eval: the test records), as the
    config.data fields of a coco_json config take them.
    """
    import os

    from jaxvision import data
    from jaxvision.data import coco_json

    root = str(tmp_path_factory.mktemp("digit_detection_coco_json"))
    class_names = data.dataset_info("digit_detection", digit_detection_dir).class_names
    category_ids = [2 * label + 3 for label in range(len(class_names))]
    paths = {}
    for key, split, count in (("train", "train", 64), ("eval", "test", 32)):
        source = data.load_source("digit_detection", split, digit_detection_dir)
        paths[f"{key}_annotations"] = os.path.join(root, "annotations", f"{split}.json")
        paths[f"{key}_images"] = os.path.join(root, split)
        coco_json.write_coco_json(
            paths[f"{key}_annotations"], paths[f"{key}_images"],
            (source[i] for i in range(count)), class_names, category_ids,
        )
    return paths
